"""``POST /mcp`` in the OpenAPI schema: one operation whose body is a JSON-RPC message, as a
drf-spectacular postprocessing hook (the view is a plain Django view, as the runtime path's are).

The refusals before the message reaches the MCP server are the API's problem documents; past
that, MCP answers in JSON-RPC: a result or an error object in a 200, or a 400 with a JSON-RPC
error when the message is no JSON-RPC message at all (a batch, a response, a bad ``jsonrpc``).
"""

from __future__ import annotations

from typing import Any

from ..problems import PROBLEM_TYPES
from ..schema import problem_responses, problem_schema

MESSAGE = {
    "type": "object",
    "description": "One JSON-RPC 2.0 message: a request (with an `id`, a string or an "
    "integer) or a notification (without one; any other `id` reads as none). The methods: "
    "`initialize`, `ping`, `tools/list`, `tools/call` (params `{name, arguments}`), and the "
    "notifications `notifications/initialized` and `notifications/cancelled`. E.g. "
    '`{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_prompts", '
    '"arguments": {"search": "refund"}}}`.',
    "required": ["jsonrpc", "method"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"description": "The request's id, echoed in its answer."},
        "method": {"type": "string"},
        "params": {"type": "object", "nullable": True},
    },
}
ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "integer", "description": "JSON-RPC's: -32602 invalid params..."},
        "message": {"type": "string"},
        "data": {},
    },
}
ANSWER = {
    "type": "object",
    "description": "The JSON-RPC answer to the request: a `result` (for `tools/call`, a tool "
    "result whose `isError` says whether the tool refused; its `structuredContent` is the "
    "answer or the problem document), or an `error`.",
    "required": ["jsonrpc"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"description": "The request's id; null in an error about no request."},
        "result": {"type": "object", "additionalProperties": True},
        "error": {"$ref": "#/components/schemas/McpError"},
    },
}
NOT_A_MESSAGE = {
    "type": "object",
    "description": "The body is JSON but no JSON-RPC message.",
    "required": ["jsonrpc", "error"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"type": "string", "nullable": True},
        "error": {"$ref": "#/components/schemas/McpError"},
    },
}
COMPONENTS = {
    "McpMessage": MESSAGE,
    "McpAnswer": ANSWER,
    "McpError": ERROR,
    "McpRefusal": NOT_A_MESSAGE,
}
# What the view refuses before the MCP server reads the message (api.mcpserver.view).
REFUSED = (
    "unauthenticated",
    "throttled",
    "malformed-request",
    "validation-error",
    "request-too-large",
    "unsupported-media-type",
    "not-acceptable",
    "https-required",
    "database-unavailable",
    "server-error",
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def mcp_path(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: documents ``POST /mcp``."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
    responses = problem_responses(*(PROBLEM_TYPES[slug] for slug in REFUSED))
    bad_json = [PROBLEM_TYPES["malformed-request"], PROBLEM_TYPES["validation-error"]]
    responses["400"] = {
        "description": "The body is no JSON the API takes (a problem document), or no JSON-RPC "
        "message (a JSON-RPC error).",
        "content": {
            "application/problem+json": {"schema": problem_schema(bad_json)},
            "application/json": {"schema": _ref("McpRefusal")},
        },
    }
    result.setdefault("paths", {})["/mcp"] = {
        "post": {
            "operationId": "mcp",
            "summary": "The MCP server: the registry's tools for an AI client (JSON-RPC).",
            "description": "Model Context Protocol over streamable HTTP, stateless, with JSON "
            "answers (docs/mcp.md): each POST carries one JSON-RPC message and gets its answer; "
            "there is no session and no server-sent stream (GET and DELETE answer 405). "
            "`tools/list` names the tools the key's scopes allow; `tools/call` runs one, a "
            "refusal coming back as a tool error (`isError`) holding the API's problem document.",
            "tags": ["mcp"],
            "security": [{"apiKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("McpMessage")}},
            },
            "responses": {
                "200": {
                    "description": "The request's JSON-RPC answer.",
                    "content": {"application/json": {"schema": _ref("McpAnswer")}},
                },
                "202": {"description": "A notification, taken; nothing to answer."},
                **responses,
            },
        }
    }
    return result
