"""The SDK's pure core: no I/O, no threads, nothing from the server.

The same rules as the server, so that a service resolves and renders locally exactly what the
registry would answer. The server imports this package for the rules it shares (``locales``,
``variables``, ``sandbox``, ``template_rules``, ``compile_cache``: one implementation, installed
with the server); the traffic split is the one rule written twice (the server's is
``releases.bucketing``), both held to ``shared/contracts/bucketing-vectors.json``:

- ``bucketing``: the traffic-split contract (``bucket``, ``assign``, ``HASH_VERSION``);
- ``locales``: BCP 47 tags and the ``fr-CA`` → ``fr`` → default fallback;
- ``variables``: the check of a caller's variables against the declared ones;
- ``history``: the ``messages`` variable type (a conversation history), its check and where the
  render inserts it among the chat messages (the server calls it too);
- ``sandbox``, ``sandbox_checks``, ``template_rules``, ``budget``, ``compile_cache``: the Jinja
  sandbox, the template constructs it refuses, the render budget and the compiled-template cache;
- ``rendering``: the sandboxed, bounded Jinja render of the four sections, and chat messages;
- ``request``: the keyword arguments of ``chat.completions.create`` for a rendered prompt (the
  server's ``render`` answers the same, built by this module);
- ``bundle``: an environment's bundle read into immutable values, and ``resolve`` over it.

The client (``promptregistry.client``) fetches bundles and hands them to this package; nothing
here imports the client.
"""

from __future__ import annotations

from .bucketing import BUCKETS, HASH_VERSION, Reason, assign, bucket
from .bundle import (
    Bundle,
    Canary,
    Experiment,
    ReleaseData,
    ReleaseState,
    Resolution,
    Shadow,
    Variant,
    VersionData,
    bundle_from_json,
    resolve,
    version_render,
)
from .locales import (
    locale_fallback_chain,
    locale_index,
    locale_normalize,
    locale_pick,
    locale_pick_indexed,
)
from .rendering import (
    MAX_RENDER_CHARS,
    MAX_RENDER_STEPS,
    RENDER_DEADLINE_MS,
    SECTIONS,
    render_sections,
    to_messages,
)
from .request import chat_request, response_format
from .variables import VariableSpec, VariableType, variables_validate

__all__ = [
    "BUCKETS",
    "HASH_VERSION",
    "MAX_RENDER_CHARS",
    "MAX_RENDER_STEPS",
    "RENDER_DEADLINE_MS",
    "SECTIONS",
    "Bundle",
    "Canary",
    "Experiment",
    "Reason",
    "ReleaseData",
    "ReleaseState",
    "Resolution",
    "Shadow",
    "VariableSpec",
    "VariableType",
    "Variant",
    "VersionData",
    "assign",
    "bucket",
    "bundle_from_json",
    "chat_request",
    "locale_fallback_chain",
    "locale_index",
    "locale_normalize",
    "locale_pick",
    "locale_pick_indexed",
    "render_sections",
    "resolve",
    "response_format",
    "to_messages",
    "variables_validate",
    "version_render",
]
