"""OpenAPI pieces drf-spectacular cannot infer: how API keys are sent, and what every operation
answers when it refuses (a problem document, ``api.problems``). The runtime path's views are
described in ``api.runtime_schema``."""

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


_PROBLEM_ERROR = {
    "type": "object",
    "required": ["code", "detail", "pointer"],
    "properties": {
        "code": {"type": "string", "description": "Machine-readable, e.g. `required`."},
        "detail": {"type": "string"},
        "pointer": {"type": "string", "description": "JSON Pointer (RFC 6901) into the request."},
        "line": {"type": "integer", "description": "The template line, for template problems."},
        "severity": {"type": "string", "enum": ["warning"]},
    },
}
_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; some types add members (e.g. `current_revision`).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "The problem type, e.g. `/problems/not-found`."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The path of the request."},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemError"}},
    },
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_CONTENT = {"application/problem+json": {"schema": PROBLEM_REF}}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
# What each refusal means on any operation, for the responses drf-spectacular cannot infer.
_PROBLEM_DESCRIPTIONS = {
    400: "The request is not valid (validation-error, malformed-request, …): `errors` lists "
    "each problem with a JSON Pointer.",
    401: "No API key, or an unknown or revoked one (unauthenticated).",
    403: "The key lacks the scope this needs, or is limited to other environments.",
    404: "Nothing at this address: no such prompt, version, environment, release, … "
    "(the `type` says which).",
    409: "The change conflicts with the current state (a stale revision, a committed version, "
    "an existing draft, …); the document says what to send again.",
    413: "The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
    415: "The body is not application/json.",
    429: "Too many requests for this API key: wait Retry-After seconds.",
    502: "No model answered: every provider the binding names failed (the attempts are listed).",
    503: "The database is unavailable and this server holds no copy of what was asked for.",
}


def _problem_response(status: int) -> dict:
    response = {"description": _PROBLEM_DESCRIPTIONS[status], "content": _PROBLEM_CONTENT}
    if status in {429, 503}:
        response["headers"] = _RETRY_AFTER
    return response


def problem_responses(*statuses: int) -> dict:
    return {str(status): _problem_response(status) for status in statuses}


def _expected_problems(method: str, operation: dict) -> list[int]:
    """The refusals any operation of the authoring and release paths can answer, from its shape:

    - every operation needs a key with a scope (401, 403), counts against its rate (429) and
      reads the database, which may be unreachable (503, ``api.problems``);
    - a body or a query or header parameter can be invalid (400);
    - a path parameter names something that may not exist, as does a page number (404);
    - a change can conflict with the current state (409);
    - a body can be too large or not JSON (413, 415).
    """
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses = []
    if operation.get("security"):
        statuses += [401, 403, 429, 503]
    if has_body or any(p["in"] != "path" for p in parameters):
        statuses.append(400)
    if any(p["in"] == "path" or p["name"] == "page" for p in parameters):
        statuses.append(404)
    if method in {"post", "put", "patch", "delete"}:
        statuses.append(409)
    if has_body:
        statuses += [413, 415]
    return statuses


def documented_problems(result, generator, request, public):
    """drf-spectacular postprocessing hook: every refusal an operation can answer is documented,
    as the problem document it is (``api.problems``). drf-spectacular documents the successes of
    the DRF views; this adds their refusals, and a problem body to a refusal documented without
    one. The runtime path's hand-written operations list theirs (``api.runtime_schema``)."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(
        {"Problem": _PROBLEM, "ProblemError": _PROBLEM_ERROR}
    )
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation.setdefault("responses", {})
            for status in _expected_problems(method, operation):
                responses.setdefault(str(status), _problem_response(status))
            for status, response in responses.items():
                if status[0] in "45" and "content" not in response:
                    response["content"] = _PROBLEM_CONTENT
    return result
