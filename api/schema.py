"""OpenAPI pieces drf-spectacular cannot infer: how API keys are sent, and what every operation
answers when it refuses (a problem document, ``api.problems``). The runtime path's views are
described in ``api.runtime_schema``."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from .problems import PROBLEM_TYPES, ProblemType
from .serializers import ENVIRONMENT_SCHEMA, KEY_SCHEMA


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
        "line": {
            "type": "integer",
            "description": "The template line, for template problems; the file's line, for a "
            "prompt file's.",
        },
        "file": {"type": "string", "description": "The prompt file, for an import's problems."},
        "severity": {
            "type": "string",
            "enum": ["error", "warning"],
            "description": "In a version's `warnings`, always `warning`.",
        },
    },
}
_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details, as every problem type has them. Each type is a "
    "component of its own (`Problem<Type>`), with its `type` URI and its extra members.",
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
_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}

# The members a problem type adds to RFC 9457's (api.problems: DOMAIN_EXTRAS and the views that
# pass extra members), each with whether every document of the type has it.
_MEMBERS: dict[str, dict[str, tuple[dict, bool]]] = {
    "draft-exists": {"draft_number": ({**_INTEGER, "description": "The open draft."}, True)},
    "draft-changed": {"current_tag": ({**_STRING, "description": "The draft's ETag now."}, True)},
    "stale-revision": {
        "current_revision": ({**_INTEGER, "description": "Send it as If-Match."}, True)
    },
    "promotion-blocked": {
        "gate": ({**_STRING, "description": "The first refusal: a gate, or the order."}, True),
        "failed_gates": (
            {
                "type": "array",
                "description": "Every refusal, the first one included.",
                "items": {
                    "type": "object",
                    "required": ["gate", "detail"],
                    "properties": {"gate": _STRING, "detail": _STRING},
                },
            },
            True,
        ),
    },
    "review-required": {
        "environment": ({**_STRING, "description": "The environment that requires review."}, True)
    },
    "change-request-outdated": {
        "proposed_revision": ({**_INTEGER, "description": "What it was proposed against."}, True),
        "current_revision": ({**_INTEGER, "description": "The release's revision now."}, True),
    },
    "too-many-events": {"max_events": (_INTEGER, True)},
    "invalid-prompt-files": {
        "errors": (
            {
                "type": "array",
                "description": "Every problem of every file that cannot be imported, each with "
                "its `file`.",
                "items": {"$ref": "#/components/schemas/ProblemError"},
            },
            True,
        )
    },
    "insufficient-scope": {
        "required_scope": ({**_STRING, "description": "e.g. `runs:execute`"}, True)
    },
    "environment-forbidden": {"environment": (_STRING, True)},
    "release-change-forbidden": {
        "environment": ({**_STRING, "description": "The environment refused."}, True)
    },
    "budget-exceeded": {
        "budget": (
            {
                "type": "object",
                "description": "The budget that refused the run, and the limit it reached.",
                "properties": {
                    "scope": {"type": "string", "enum": ["key", "prompt", "environment"]},
                    "name": {**_STRING, "description": "e.g. `prompt support.refund-reply`"},
                    "limit": {
                        "type": "string",
                        "enum": [
                            "requests_per_minute",
                            "tokens_per_day",
                            "cost_per_day",
                            "tokens_per_month",
                            "cost_per_month",
                        ],
                    },
                    "value": {**_STRING, "description": "The limit's value, e.g. `5.0000`."},
                },
                "required": ["scope", "name", "limit", "value"],
            },
            True,
        )
    },
    "guardrail-refused": {
        "request_id": ({**_STRING, "description": "The call, as recorded (status refused)."}, True),
        "check": (
            {
                "type": "string",
                "enum": ["max_tokens", "deny_patterns", "pii", "injection", "moderation"],
                "description": "The check that refused the run.",
            },
            True,
        ),
        "stage": (
            {
                "type": "string",
                "enum": ["input", "output"],
                "description": "input: no model was called; output: the model's answer was "
                "refused (and paid for).",
            },
            True,
        ),
        "guardrails": (
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/GuardrailTriggered"},
                "description": "Every check that fired, the refusing one among them.",
            },
            True,
        ),
    },
    "provider-unavailable": {
        "request_id": ({**_STRING, "description": "The call, as recorded."}, True),
        "attempts": (
            {"type": "array", "items": {"$ref": "#/components/schemas/RunAttempt"}},
            True,
        ),
    },
}


def problem_component_name(problem: ProblemType) -> str:
    """``/problems/stale-revision`` -> ``ProblemStaleRevision``."""
    return "Problem" + "".join(part.capitalize() for part in problem.slug.split("-"))


def problem_ref(problem: ProblemType) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{problem_component_name(problem)}"}


def _problem_component(problem: ProblemType) -> dict:
    members = _MEMBERS.get(problem.slug, {})
    properties = {
        **_PROBLEM["properties"],
        "type": {"type": "string", "enum": [problem.uri]},
        "title": {**_STRING, "description": f"“{problem.title}”"},
        "status": {"type": "integer", "enum": [problem.status]},
        **{name: schema for name, (schema, _) in members.items()},
    }
    required = [*_PROBLEM["required"], *(n for n, (_, always) in members.items() if always)]
    return {
        "type": "object",
        "description": f"`{problem.uri}` ({problem.status}): {problem.title}",
        "required": required,
        "properties": properties,
    }


def problem_components() -> dict[str, dict]:
    """One component per problem type of ``api.problems.PROBLEM_TYPES``, plus the shared base."""
    components = {"Problem": _PROBLEM, "ProblemError": _PROBLEM_ERROR}
    for problem in PROBLEM_TYPES.values():
        components[problem_component_name(problem)] = _problem_component(problem)
    return components


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
# What each refusal means on any operation; the types an operation answers are listed with it.
_PROBLEM_DESCRIPTIONS = {
    400: "The request is not valid: `errors` lists each problem with a JSON Pointer.",
    401: "No API key, or an unknown or revoked one.",
    403: "The key lacks the scope this needs, or is limited to other environments, or a write "
    "came over plain http.",
    404: "Nothing at this address (the `type` says what is missing).",
    409: "The change conflicts with the current state; the document says what to send again.",
    413: "The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
    415: "The body is not application/json.",
    429: "Too many requests for this API key: wait Retry-After seconds.",
    502: "No model answered: every provider the binding names failed (the attempts are listed).",
    503: "The database is unavailable and this server holds no copy of what was asked for.",
}


def problem_schema(types: list[ProblemType]) -> dict:
    """The body of a refusal that may be any of ``types``: a reference to the one component, or
    ``oneOf`` them with the ``type`` member as discriminator (each type's URI names its
    component), so a client generator can tell them apart."""
    if len(types) == 1:
        return problem_ref(types[0])
    return {
        "oneOf": [problem_ref(p) for p in types],
        "discriminator": {
            "propertyName": "type",
            "mapping": {p.uri: problem_ref(p)["$ref"] for p in types},
        },
    }


def problem_responses(*types: ProblemType) -> dict[str, dict]:
    """The responses of an operation that may refuse with ``types``, one per status."""
    by_status: dict[int, list[ProblemType]] = {}
    for problem in types:
        listed = by_status.setdefault(problem.status, [])
        if problem not in listed:
            listed.append(problem)
    responses = {}
    for status in sorted(by_status):
        listed = by_status[status]
        names = ", ".join(f"`{p.slug}`" for p in listed)
        response = {
            "description": f"{_PROBLEM_DESCRIPTIONS.get(status, listed[0].title)} ({names})",
            "content": {"application/problem+json": {"schema": problem_schema(listed)}},
        }
        if status in {429, 503}:
            response["headers"] = _RETRY_AFTER
        responses[str(status)] = response
    return responses


def _types(*slugs: str) -> list[ProblemType]:
    return [PROBLEM_TYPES[slug] for slug in slugs]


# The domain refusals each operation can answer beyond what its shape implies (``_shape_problems``):
# what the services it calls raise (api.problems.DOMAIN_PROBLEMS maps them to types).
_RELEASE_CHANGE = ("release-change-forbidden", "release-state", "stale-revision")
# A change review holds, made directly in an environment that requires review (decision 0048).
_HELD = (*_RELEASE_CHANGE, "review-required")
_PROMOTION = ("version-not-found", "version-not-releasable", "promotion-blocked")
_CHANGE_REQUEST = ("change-request-state", "review-forbidden", "environment-forbidden")
OPERATION_PROBLEMS: dict[str, tuple[str, ...]] = {
    "prompts_list": (),
    "prompts_create": ("prompt-exists",),
    "prompts_retrieve": (),
    "prompts_update": (),
    "versions_list": (),
    "versions_create": ("invalid-content", "draft-exists"),
    "versions_retrieve": (),
    "versions_update": ("invalid-content", "version-immutable", "draft-changed"),
    "versions_discard": ("version-immutable", "draft-changed"),
    "versions_commit": ("invalid-content", "version-immutable", "draft-changed"),
    "versions_diff": (),
    "versions_render": (
        "invalid-variables",
        "invalid-template",
        "render-failed",
        "invalid-locale",
        "locale-unavailable",
    ),
    "calls_feedback": ("call-not-found",),
    "environments_list": (),
    "events_create": ("too-many-events",),
    "releases_retrieve": ("release-not-found",),
    "releases_history": ("release-not-found",),
    "releases_deploy": (*_HELD, *_PROMOTION),
    # With an analysis, refused on a release that follows a schedule (decision 0049).
    "releases_canary_start": (*_HELD, *_PROMOTION, "canary-scheduled"),
    "releases_canary_percent": _HELD,
    "releases_canary_promote": (*_HELD, "promotion-blocked"),
    "releases_canary_abort": _RELEASE_CHANGE,
    "releases_experiment_start": (*_HELD, *_PROMOTION),
    "releases_experiment_stop": (*_HELD, "promotion-blocked"),
    "releases_shadow_start": (*_HELD, "version-not-found", "version-not-releasable"),
    "releases_shadow_stop": _RELEASE_CHANGE,
    "releases_rollback": (*_RELEASE_CHANGE, "nothing-to-roll-back"),
    "releases_canary_analysis": ("release-not-found", "canary-analysis-not-found"),
    "releases_canary_analysis_attach": (
        "release-change-forbidden",
        "release-not-found",
        "no-canary",
        "canary-analysis-exists",
        "canary-scheduled",
        "review-required",
    ),
    "releases_canary_analysis_resume": (
        "release-change-forbidden",
        "release-not-found",
        "canary-analysis-not-found",
        "canary-analysis-state",
        "no-canary",
    ),
    "releases_canary_analysis_stop": (
        "release-change-forbidden",
        "release-not-found",
        "canary-analysis-not-found",
        "canary-analysis-state",
    ),
    "releases_schedule": ("schedule-not-found",),
    "releases_schedule_create": (
        "release-change-forbidden",  # the author must be one who may make every step
        "stale-revision",
        "release-state",
        "version-not-releasable",
        "schedule-exists",
        "schedule-refused",
        "review-required",
    ),
    "releases_schedule_cancel": (
        "release-change-forbidden",  # those who may roll back may cancel
        "schedule-not-found",
        "schedule-ended",
    ),
    "releases_experiments": ("release-not-found",),
    "releases_experiment_results": ("release-not-found", "no-experiment", "experiment-not-found"),
    "change_requests_list": (),
    "change_requests_propose": (
        *_RELEASE_CHANGE,
        "version-not-found",
        "version-not-releasable",
        "review-not-required",
        "prompt-not-found",
        "environment-not-found",
        "environment-forbidden",
        # A proposed schedule (decision 0049).
        "schedule-exists",
        "schedule-refused",
    ),
    "change_requests_retrieve": ("environment-forbidden",),
    "change_requests_approve": (*_CHANGE_REQUEST, "own-change-request"),
    "change_requests_reject": (*_CHANGE_REQUEST, "own-change-request"),
    "change_requests_apply": (
        *_CHANGE_REQUEST,
        "release-change-forbidden",  # the one who applies must be one who may make the change
        "change-request-outdated",
        "release-state",
        *_PROMOTION,
        "schedule-exists",
        "schedule-refused",
    ),
    "change_requests_withdraw": _CHANGE_REQUEST,
    "evaluations_start": (
        "dataset-not-found",
        "dataset-empty",
        "environment-not-found",
        "environment-forbidden",
    ),
    "evaluations_list": (),
    "evaluations_retrieve": (),
    "evaluations_cancel": ("eval-run-ended",),
    "gates_list": (),
    "gates_create": ("gate-exists", "prompt-not-found"),
    "gates_retrieve": (),
    "gates_update": ("gate-exists",),
    "gates_delete": (),
    "versions_gates": ("environment-not-found", "environment-forbidden"),
    "prompt_files_list": ("environment-not-found", "environment-forbidden"),
    "prompt_files_plan": ("invalid-prompt-files",),
    # The registry moved between the plan and its apply (one transaction, no row locks while
    # planning): a draft opened, changed or discarded, a prompt created.
    "prompt_files_import": (
        "invalid-prompt-files",
        "draft-exists",
        "draft-changed",
        "version-not-found",
        "prompt-exists",
    ),
}
# What a path parameter names, when it names nothing.
_PATH_PROBLEMS = {
    "key": "prompt-not-found",
    "number": "version-not-found",
    "environment": "environment-not-found",
    "run_id": "eval-run-not-found",
    "gate_id": "gate-not-found",
    "change_request_id": "change-request-not-found",
}


def _shape_problems(method: str, operation: dict) -> list[ProblemType]:
    """The refusals any operation of the authoring and release paths can answer, from its shape:

    - every operation needs a key with a scope (401, 403), counts against its rate (429) and
      reads the database, which may be unreachable (503, ``api.problems``); a write over plain
      http is refused (403, ``api.middleware``);
    - a body or a query or header parameter can be invalid (400), a body be no JSON (400), too
      large (413) or of another media type (415);
    - an address whose parameters match no route, or a page past the last, is a 404, and a path
      parameter names something that may not exist (404); one naming an environment may be one
      the key is limited away from (403).
    """
    parameters = operation.get("parameters", [])
    names = {p["name"] for p in parameters if p["in"] == "path"}
    has_body = "requestBody" in operation
    slugs = []
    if operation.get("security"):
        slugs += ["unauthenticated", "insufficient-scope", "throttled", "database-unavailable"]
    if method not in {"get", "head"}:
        slugs.append("https-required")
    if "environment" in names:
        slugs.append("environment-forbidden")
    if has_body or any(p["in"] != "path" for p in parameters):
        slugs.append("validation-error")
    if has_body:
        slugs += ["malformed-request", "request-too-large", "unsupported-media-type"]
    if names or any(p["name"] == "page" for p in parameters):
        slugs.append("not-found")
    slugs += [_PATH_PROBLEMS[name] for name in sorted(names) if name in _PATH_PROBLEMS]
    return _types(*slugs)


def documented_problems(result, generator, request, public):
    """drf-spectacular postprocessing hook: every refusal an operation can answer is documented,
    as the problem types it can be (``api.problems``), each a component of its own. drf-spectacular
    documents the successes of the DRF views; this adds their refusals. The runtime path's
    hand-written operations list theirs (``api.runtime_schema``)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in problem_components().items():
        # A serializer named like a problem component would be replaced unseen (VersionDetail's
        # warnings were documented as problem documents that way): its own ref_name, please.
        if name in schemas and schemas[name] != schema:
            raise ImproperlyConfigured(f"The component {name} is a problem type's already.")
        schemas[name] = schema
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            domain = OPERATION_PROBLEMS[operation["operationId"]]
            types = _shape_problems(method, operation) + _types(*domain)
            responses = operation.setdefault("responses", {})
            for status, response in problem_responses(*types).items():
                responses[status] = response
    return result


# Path parameters whose URL converter (api.urls) is looser than the name's rule: the converter
# only routes (an impossible key there is a 404, prompt-not-found), the schema states the rule, as
# it does for the runtime path's routes (api.runtime_schema).
PATH_PARAMETER_SCHEMAS = {"key": KEY_SCHEMA, "environment": ENVIRONMENT_SCHEMA}


def path_parameters(result, generator, request, public):
    """drf-spectacular postprocessing hook: every ``{key}`` and ``{environment}`` path parameter
    of the DRF routes published with the rule of a prompt key and of an environment name."""
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETER_SCHEMAS:
                    parameter["schema"] = dict(PATH_PARAMETER_SCHEMAS[parameter["name"]])
    return result


# Operations whose body drf-spectacular cannot tell is required: one of several shapes
# (``PolymorphicProxySerializer``), each with required members but none shared in its eyes.
REQUIRED_BODIES = frozenset({"change_requests_propose"})


def required_bodies(result, generator, request, public):
    """drf-spectacular postprocessing hook: the bodies of ``REQUIRED_BODIES`` are required, as
    the server requires them (a missing body is a 400, which the schema must not allow)."""
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method != "parameters" and operation.get("operationId") in REQUIRED_BODIES:
                operation["requestBody"]["required"] = True
    return result
