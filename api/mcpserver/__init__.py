"""The MCP server at ``POST /mcp`` (docs/mcp.md, decision 0043): the API's operations as tools
for an AI assistant, another door of the HTTP adapter.

It imports what the API's views import (the apps' services and selectors) and the views' own
serializers and checks; nothing but ``config.urls`` and the schema hooks import it.

Modules:

- ``view``: the Django view; hands each request to a stateless transport of the ``mcp`` package.
- ``server``: the ``mcp`` low-level server: ``tools/list`` and ``tools/call`` for the request's key.
- ``catalog``: every tool, and which a key sees.
- ``tools``: what a tool is; a call's scope, rate, arguments, answer and refusal.
- ``arguments``: a tool's arguments, from the published OpenAPI schema.
- ``prompts``, ``releases``, ``evaluations``: the tools, by what they act on.
- ``schema``: ``POST /mcp`` in the OpenAPI schema.
"""
