"""OpenAPI pieces drf-spectacular cannot infer: how API keys are sent."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py apikey create`, sent as "
            "`Authorization: Bearer pr_…`. Keys carry scopes and may be limited to environments.",
        }


def _problem_responses(*statuses: int) -> dict:
    return {
        str(status): {
            "description": "A problem document (RFC 9457).",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }


_SECTIONS = {
    "type": "object",
    "properties": {
        name: {"type": "string"} for name in ("system", "context", "instruction", "format")
    },
}
_RESOLUTION = {
    "type": "object",
    "required": [
        "prompt",
        "environment",
        "version",
        "variant",
        "reason",
        "sticky",
        "locale",
        "requested_locale",
        "sections",
        "variables",
        "model",
        "revision",
        "content_hash",
        "shadow",
    ],
    "properties": {
        "prompt": {"type": "string"},
        "environment": {"type": "string"},
        "version": {"type": "integer"},
        "variant": {"type": "string", "description": "stable, canary or the experiment variant"},
        "reason": {"type": "string", "enum": ["stable", "canary", "experiment"]},
        "sticky": {"type": "boolean", "description": "false when no subject was sent"},
        "locale": {"type": "string"},
        "requested_locale": {"type": "string"},
        "sections": _SECTIONS,
        "variables": {"type": "array", "items": {"type": "object"}},
        "model": {"type": "object"},
        "revision": {"type": "integer"},
        "content_hash": {"type": "string"},
        "shadow": {"type": "array", "items": {"type": "integer"}},
        "trace": {
            "type": "object",
            "properties": {
                "bucket": {"type": "integer", "nullable": True},
                "salt": {"type": "string"},
                "hash_version": {"type": "integer"},
            },
        },
    },
}
_RUN_ANSWER = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "prompt": {"type": "string"},
        "environment": {"type": "string"},
        "version": {"type": "integer"},
        "variant": {"type": "string"},
        "reason": {"type": "string"},
        "sticky": {"type": "boolean"},
        "locale": {"type": "string"},
        "requested_locale": {"type": "string"},
        "revision": {"type": "integer"},
        "content_hash": {"type": "string"},
        "trace": {"type": "object"},
        "output": {"type": "string", "description": "The model's text."},
        "parsed": {"description": "The JSON value, when the version has a response schema."},
        "answered_by": {
            "type": "object",
            "properties": {
                "provider": {"type": "string"},
                "model": {"type": "string"},
                "fallback": {"type": "boolean"},
            },
        },
        "usage": {
            "type": "object",
            "properties": {
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
            },
        },
        "cost": {"type": "number", "nullable": True, "description": "null: no price configured"},
        "latency_ms": {"type": "number"},
        "time_to_first_token_ms": {"type": "number", "nullable": True},
        "attempts": {"type": "array", "items": {"type": "object"}},
        "shadow": {"type": "array", "items": {"type": "integer"}},
        "recorded": {"type": "boolean"},
    },
}
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _query(name: str, description: str, *, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def _path(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _runtime_body(**extra: dict) -> dict:
    """The JSON body render and run take: who is served, where, in which locale, with what."""
    properties = {
        "environment": {"type": "string"},
        "locale": {"type": "string"},
        "subject": {"type": "string"},
        "variables": {"type": "object"},
        **extra,
    }
    schema = {"type": "object", "required": ["environment"], "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def runtime_paths(result, generator, request, public):
    """drf-spectacular postprocessing hook: describes the runtime path's plain Django views."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = _PROBLEM
    schemas["Resolution"] = _RESOLUTION
    schemas["Rendering"] = {
        "allOf": [
            {"$ref": "#/components/schemas/Resolution"},
            {
                "type": "object",
                "properties": {
                    "rendered": _SECTIONS,
                    "messages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "role": {"type": "string"},
                                "content": {"type": "string"},
                            },
                        },
                    },
                },
            },
        ]
    }
    security = [{"apiKey": []}]
    key = _path("key", "The prompt's key.")
    errors = _problem_responses(400, 401, 403, 404, 503)
    paths = result.setdefault("paths", {})
    paths["/api/v1/prompts/{key}/resolve"] = {
        "get": {
            "operationId": "prompts_resolve",
            "summary": "Which version serves this subject, in this locale, in this environment.",
            "tags": ["runtime"],
            "security": security,
            "parameters": [
                key,
                _query("environment", "The environment.", required=True),
                _query("locale", "BCP 47; falls back fr-CA -> fr -> the prompt's default."),
                _query("subject", "Who is served (user, account, session); sticky when given."),
            ],
            "responses": {
                "200": {
                    "description": "The resolved prompt.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Resolution"}}
                    },
                },
                "304": {"description": "Not modified (If-None-Match)."},
                **errors,
            },
        }
    }
    paths["/api/v1/prompts/{key}/render"] = {
        "post": {
            "operationId": "prompts_render",
            "summary": "Resolve, then render with the variables into chat messages.",
            "tags": ["runtime"],
            "security": security,
            "parameters": [key],
            "requestBody": _runtime_body(),
            "responses": {
                "200": {
                    "description": "The rendered prompt.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Rendering"}}
                    },
                },
                **errors,
                **_problem_responses(413, 415),
            },
        }
    }
    schemas["RunAnswer"] = _RUN_ANSWER
    paths["/api/v1/prompts/{key}/run"] = {
        "post": {
            "operationId": "prompts_run",
            "summary": "Resolve, render and call the model (retries, fallbacks, schema checks); "
            "records the call and queues its shadows.",
            "description": "Needs the runs:execute scope. With `stream: true` the answer is "
            "server-sent events: `start`, `token` (each content delta), then `done` (the same "
            "object as the non-streaming answer) or `error` (the 502 problem document). "
            "A stream always ends: past `RUN_STREAM_MAX_SECONDS` (default 300) the model call "
            "is cancelled and answered as an `error` event (attempt outcome `cancelled`). "
            "`X-Request-Id` is taken from the request when given, and always answered.",
            "tags": ["runtime"],
            "security": security,
            "parameters": [key],
            "requestBody": _runtime_body(stream={"type": "boolean", "default": False}),
            "responses": {
                "200": {
                    "description": "The model's answer, or (stream) its server-sent events.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/RunAnswer"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **errors,
                **_problem_responses(413, 415, 502),
            },
        }
    }
    paths["/api/v1/environments/{environment}/bundle"] = {
        "get": {
            "operationId": "environments_bundle",
            "summary": "Every release in the environment with its versions, for local evaluation.",
            "tags": ["runtime"],
            "security": security,
            "parameters": [_path("environment", "The environment.")],
            "responses": {
                "200": {
                    "description": "The bundle (hash_version 1).",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "304": {"description": "Not modified (If-None-Match)."},
                **_problem_responses(401, 403, 404, 503),
            },
        }
    }
    paths["/api/v1/environments/{environment}/stream"] = {
        "get": {
            "operationId": "environments_stream",
            "summary": "Release changes in the environment, as server-sent events, for SDKs.",
            "description": "Needs the prompts:read scope. First `event: hello` with "
            "`{environment, etag}` (the bundle's ETag now: fetch the bundle when it differs from "
            "yours), then `event: release` with `{prompt, revision}` for each release change in "
            "the environment, as it happens (Redis pub/sub; without Redis, a revision check every "
            "second). `: keep-alive` comments every 15 s. The stream ends after "
            "`RELEASE_STREAM_MAX_SECONDS` (default 300): reconnect.",
            "tags": ["runtime"],
            "security": security,
            "parameters": [_path("environment", "The environment.")],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_problem_responses(401, 403, 404, 503),
            },
        }
    }
    return result


def throttled_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation that takes an API key may answer 429
    (``api.ratelimit``), with ``Retry-After``."""
    throttled = _problem_responses(429)["429"]
    throttled["description"] = "The key's rate limit for this scope is spent (RFC 9457 problem)."
    throttled["headers"] = {
        "Retry-After": {
            "description": "Whole seconds until the request may be sent again.",
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and operation.get("security") != [{}]:
                operation.setdefault("responses", {}).setdefault("429", throttled)
    return result
