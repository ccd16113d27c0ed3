"""The OpenAPI description of the runtime path's plain Django views (resolve, render, run, bundle,
stream), which drf-spectacular cannot see: added by a postprocessing hook.

Written by hand, so tests/api/test_runtime_schema.py calls each view for real and validates its
answers (bodies, problem documents, headers, event-stream payloads) against these components:
this description cannot drift from what the views send.
"""

from __future__ import annotations

from typing import Any

from runs.calls import SUBJECT_MAX_CHARS

from .problems import PROBLEM_TYPES
from .schema import problem_ref, problem_responses
from .serializers import (
    ENVIRONMENT_SCHEMA,
    KEY_SCHEMA,
    LOCALE_MAX_CHARS,
    LOCALE_PATTERN,
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:  # OpenAPI 3.0 refuses an empty list
        schema["required"] = required
    return schema


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NULLABLE_INTEGER = {"type": "integer", "nullable": True}
SECTIONS = _object([], **{name: STRING for name in ("system", "context", "instruction", "format")})
TRACE = _object(
    ["bucket", "salt", "hash_version"],
    bucket={**NULLABLE_INTEGER, "description": "0-9999; null when no split drew"},
    salt={**STRING, "description": "the salt of the decision that picked the version"},
    hash_version=INTEGER,
)
RESOLUTION = _object(
    [
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
        "snippets",
        "trace",
    ],
    prompt=STRING,
    environment=STRING,
    version=INTEGER,
    variant={**STRING, "description": "stable, canary or the experiment variant"},
    reason={"type": "string", "enum": ["stable", "canary", "experiment"]},
    sticky={"type": "boolean", "description": "false when no subject was sent"},
    locale={**STRING, "description": "the locale served, after fallback"},
    requested_locale=STRING,
    sections={**SECTIONS, "description": "the raw templates"},
    variables={"type": "array", "items": {"type": "object"}},
    model={"type": "object", "description": "the model binding"},
    revision=INTEGER,
    content_hash=STRING,
    shadow={"type": "array", "items": INTEGER, "description": "shadow versions, when sampled"},
    snippets={
        "type": "array",
        "description": "the snippets the version includes, every level, and the version each "
        "serves in this environment now (null: none to serve)",
        "items": _object(
            ["key", "pinned", "version"],
            key=STRING,
            pinned={**NULLABLE_INTEGER, "description": "null: follows the stable release"},
            version=NULLABLE_INTEGER,
        ),
    },
    trace=ref("ResolutionTrace"),
)
# A chat message as render answers it: the prompt's own, and a history's as sent (a tool
# message with the id of the call it answers, an assistant message with the calls it made).
CHAT_MESSAGE = _object(
    ["role", "content"],
    role={"type": "string", "enum": ["system", "user", "assistant", "tool"]},
    content={**STRING, "nullable": True, "description": "null: an assistant turn of tool calls"},
    tool_call_id={**STRING, "description": "a tool message's: the call it answers"},
    tool_calls={
        "type": "array",
        "description": "an assistant message's: the tools it called",
        "items": _object(
            ["id", "type", "function"],
            id=STRING,
            type={"type": "string", "enum": ["function"]},
            function=_object(["name", "arguments"], name=STRING, arguments=STRING),
        ),
    },
)
CHAT_REQUEST = {
    "type": "object",
    "description": "The keyword arguments of `chat.completions.create(**request)`: `model`, "
    "`messages`, the binding's parameters (temperature, max_tokens…), `tools`, `tool_choice` and "
    "`parallel_tool_calls` when it declares tools, and `response_format` (`json_schema`, `strict` "
    "when its provider accepts strict structured output) when it has a response schema.",
    "required": ["model", "messages"],
    "properties": {
        "model": STRING,
        "messages": {"type": "array", "items": {"type": "object"}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"description": "none, auto, required or {type: function, function}"},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": _object(
            ["type", "json_schema"],
            type={"type": "string", "enum": ["json_schema"]},
            json_schema=_object(
                ["name", "schema", "strict"],
                name=STRING,
                schema={"type": "object"},
                strict={"type": "boolean"},
            ),
        ),
    },
    "additionalProperties": True,
}
TOOL_CALL = _object(
    ["id", "name", "arguments"],
    id=STRING,
    name={**STRING, "description": "one of the binding's tools"},
    arguments={"type": "object", "description": "checked to be a JSON object"},
)
RENDERING = {
    "allOf": [
        ref("Resolution"),
        _object(
            ["rendered", "messages", "request"],
            rendered=SECTIONS,
            messages={"type": "array", "items": CHAT_MESSAGE},
            request=ref("ChatRequest"),
        ),
    ]
}
GUARDRAIL_TRIGGERED = _object(
    ["stage", "check", "action", "source", "detail"],
    stage={"type": "string", "enum": ["input", "output"]},
    check={
        "type": "string",
        "enum": ["max_tokens", "deny_patterns", "pii", "injection", "moderation"],
    },
    action={"type": "string", "enum": ["refuse", "fallback", "redact", "flag"]},
    source={
        "type": "string",
        "enum": ["version", "environment"],
        "description": "Whose policy: the version's binding, or its environment's floor",
    },
    detail={
        **STRING,
        "description": "What it found (e.g. `email ×1`, `pattern #0`), never the text itself",
    },
)
ATTEMPT = _object(
    ["provider", "model", "outcome", "detail", "latency_ms", "input_tokens", "output_tokens"],
    provider=STRING,
    model=STRING,
    outcome={**STRING, "description": "ok, timeout, rate_limited, server_error, …"},
    detail=STRING,
    latency_ms={"type": "number"},
    input_tokens=NULLABLE_INTEGER,
    output_tokens=NULLABLE_INTEGER,
)
_RUN_START_FIELDS = ["request_id", "prompt", "environment", "version", "variant", "locale"]
RUN_START = _object(
    [*_RUN_START_FIELDS, "revision"],
    request_id=STRING,
    prompt=STRING,
    environment=STRING,
    version=INTEGER,
    variant=STRING,
    locale=STRING,
    revision=INTEGER,
)
RUN_ANSWER = _object(
    [
        *_RUN_START_FIELDS,
        "reason",
        "sticky",
        "requested_locale",
        "revision",
        "content_hash",
        "trace",
        "output",
        "parsed",
        "tool_calls",
        "answered_by",
        "usage",
        "cost",
        "latency_ms",
        "time_to_first_token_ms",
        "attempts",
        "shadow",
        "recorded",
        "cache",
        "guardrails",
    ],
    request_id=STRING,
    prompt=STRING,
    environment=STRING,
    version=INTEGER,
    variant=STRING,
    reason={"type": "string", "enum": ["stable", "canary", "experiment"]},
    sticky={"type": "boolean"},
    locale=STRING,
    requested_locale=STRING,
    revision=INTEGER,
    content_hash=STRING,
    trace=ref("ResolutionTrace"),
    output={**STRING, "description": "The model's text (empty when it only called tools)."},
    tool_calls={
        "type": "array",
        "items": ref("ToolCall"),
        "description": "The tools the model called (empty when it answered in text).",
    },
    parsed={
        "nullable": True,
        "description": "The JSON value, when the version has a response schema.",
    },
    answered_by=_object(
        ["provider", "model", "fallback"],
        provider=STRING,
        model=STRING,
        fallback={"type": "boolean"},
    ),
    usage=_object(
        ["input_tokens", "output_tokens"],
        input_tokens=NULLABLE_INTEGER,
        output_tokens=NULLABLE_INTEGER,
    ),
    cost={"type": "number", "nullable": True, "description": "null: no price configured"},
    latency_ms={"type": "number"},
    time_to_first_token_ms={"type": "number", "nullable": True},
    attempts={"type": "array", "items": ref("RunAttempt")},
    shadow={"type": "array", "items": INTEGER},
    cache={
        **_object(
            ["kind", "similarity"],
            kind={"type": "string", "enum": ["exact", "semantic"]},
            similarity={
                "type": "number",
                "description": "1 for an exact hit; a semantic hit's cosine similarity, at least "
                "the version's threshold",
            },
        ),
        "nullable": True,
        "description": "Answered from the version's response cache, without a model call "
        "(`usage` and `cost` are then 0, `attempts` empty); null: the model answered.",
    },
    guardrails={
        "type": "array",
        "items": ref("GuardrailTriggered"),
        "description": "The guardrail checks of the version and its environment that fired and "
        "let the run answer: a redaction, a flag, or the fallback text given as the output.",
    },
    recorded={
        "type": "boolean",
        "description": "true: the call's record is written, or will be (a plain answer is "
        "sent before its record is written; a record the database cannot take is kept in Redis "
        "and written later). false (a stream's done event): the database failed after the model "
        "answered and Redis could not keep the record either; it is logged at ERROR with the "
        "request id, no shadow was queued, and feedback for it will find no call. Not retried "
        "with a 5xx: the model was paid already, and a retry would pay again.",
    },
)
# The 502 of a run: the provider-unavailable problem, with what was tried (api.schema).
RUN_FAILURE = problem_ref(PROBLEM_TYPES["provider-unavailable"])
# A stream's error event: the 502 above, or the 422 of a guardrail that refused the run.
RUN_STREAM_ERROR = {
    "oneOf": [RUN_FAILURE, problem_ref(PROBLEM_TYPES["guardrail-refused"])],
}
BUNDLE_VERSION = _object(
    ["number", "content_hash", "variables", "model", "templates"],
    number=INTEGER,
    content_hash=STRING,
    variables={"type": "array", "items": {"type": "object"}},
    model={"type": "object"},
    templates={
        "type": "object",
        "description": "locale -> the four sections",
        "additionalProperties": SECTIONS,
    },
)
BUNDLE_RELEASE = _object(
    ["prompt", "default_locale", "revision", "state", "versions"],
    prompt=STRING,
    default_locale=STRING,
    revision=INTEGER,
    state={
        "type": "object",
        "description": "stable, canary, experiment and shadow, with their salts",
        "required": ["schema_version", "stable", "canary", "experiment", "shadow"],
        "properties": {
            "schema_version": INTEGER,
            "stable": NULLABLE_INTEGER,
            "canary": {"type": "object", "nullable": True},
            "experiment": {"type": "object", "nullable": True},
            "shadow": {"type": "object", "nullable": True},
        },
    },
    versions={
        "type": "object",
        "description": "version number -> version",
        "additionalProperties": ref("BundleVersion"),
    },
)
BUNDLE = _object(
    ["environment", "hash_version", "providers", "snippets", "releases"],
    environment=STRING,
    hash_version=INTEGER,
    providers={
        "type": "object",
        "description": "provider name -> what rendering needs of it: `strict_output` (a provider "
        "left out accepts strict structured output)",
        "additionalProperties": _object(["strict_output"], strict_output={"type": "boolean"}),
    },
    snippets={
        "type": "object",
        "description": "the pinned snippet versions the releases include: snippet key -> "
        "version number -> {number, templates}; an include that follows serves the stable "
        "version of the snippet's own release in this bundle",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": _object(
                ["number", "templates"],
                number=INTEGER,
                templates={"type": "object", "additionalProperties": SECTIONS},
            ),
        },
    },
    releases={
        "type": "object",
        "description": "prompt key -> release",
        "additionalProperties": ref("BundleRelease"),
    },
)


def _events(names: list[str], description: str) -> dict[str, Any]:
    """One server-sent event as an OpenAPI 3.0 reader (Schemathesis) parses it: its name, and its
    ``data``, a JSON document of the component the description names."""
    return _object(
        ["event", "data"],
        event={"type": "string", "enum": names},
        data={**STRING, "description": description},
    )


RUN_EVENT = _events(
    ["start", "token", "tool_call", "done", "error"],
    "JSON: RunStreamStart (start), RunStreamToken (token), RunStreamToolCall (tool_call), "
    "RunAnswer (done), RunStreamError (error: RunFailure, or the guardrail-refused problem).",
)
RUN_TOKEN = _object(["text"], text=STRING)
RUN_TOOL_CALL = _object(
    ["index", "id", "name", "arguments"],
    index={**INTEGER, "description": "which call of the answer this delta belongs to"},
    id={**STRING, "nullable": True, "description": "on a call's first delta"},
    name={**STRING, "nullable": True, "description": "on a call's first delta"},
    arguments={**STRING, "description": "the next piece of the arguments' JSON text"},
)
STREAM_EVENT = _events(
    ["hello", "release"],
    "JSON: ReleaseStreamHello (hello), ReleaseStreamChange (release).",
)
STREAM_HELLO = _object(
    ["environment", "etag"],
    environment=STRING,
    etag={**STRING, "description": "the bundle's ETag now"},
    resumed={
        "type": "boolean",
        "description": "only when the request sent Last-Event-ID: true when the changes since "
        "that event follow; false when this server cannot tell them (fetch the bundle)",
    },
)
STREAM_CHANGE = _object(["prompt", "revision"], prompt=STRING, revision=INTEGER)

COMPONENTS = {
    "Resolution": RESOLUTION,
    "ResolutionTrace": TRACE,
    "Rendering": RENDERING,
    "ChatRequest": CHAT_REQUEST,
    "ToolCall": TOOL_CALL,
    "RunAttempt": ATTEMPT,
    "GuardrailTriggered": GUARDRAIL_TRIGGERED,
    "RunAnswer": RUN_ANSWER,
    "RunFailure": RUN_FAILURE,
    "RunStreamError": RUN_STREAM_ERROR,
    "RunStreamEvent": RUN_EVENT,
    "RunStreamStart": RUN_START,
    "RunStreamToken": RUN_TOKEN,
    "RunStreamToolCall": RUN_TOOL_CALL,
    "Bundle": BUNDLE,
    "BundleRelease": BUNDLE_RELEASE,
    "BundleVersion": BUNDLE_VERSION,
    "ReleaseStreamEvent": STREAM_EVENT,
    "ReleaseStreamHello": STREAM_HELLO,
    "ReleaseStreamChange": STREAM_CHANGE,
}

_ETAG = {"ETag": {"description": "Send it back as If-None-Match for a 304.", "schema": STRING}}
_DEGRADED = {
    "X-Registry-Degraded": {
        "description": "Present when the answer may be stale: `database-unavailable`.",
        "schema": {"type": "string", "enum": ["database-unavailable"]},
    }
}
_REQUEST_ID = {
    "X-Request-Id": {
        "description": "The caller's X-Request-Id when it is a sane token, else a new one.",
        "schema": STRING,
    }
}
_NOT_MODIFIED = {"description": "Not modified (If-None-Match).", "headers": _ETAG}


def _json(description: str, component: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": ref(component)}},
    }


# What the views accept, as ``api.fastpath`` checks it: an environment name (a 400 otherwise), a
# locale that is empty (no preference: the prompt's default) or a BCP 47 tag (``invalid-locale``
# otherwise), a subject of up to 256 characters (empty: none). A key that cannot exist is a 404.
# The key and environment schemas are the DRF routes' too (api.serializers).
LOCALE_SCHEMA = {
    "type": "string",
    "pattern": r"^(?!\n)$|" + LOCALE_PATTERN,
    "maxLength": LOCALE_MAX_CHARS,
}
SUBJECT_SCHEMA = {"type": "string", "maxLength": SUBJECT_MAX_CHARS}


def _query(name: str, description: str, schema: dict, *, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str, schema: dict) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _runtime_body(**extra: dict) -> dict:
    """The JSON body render and run take: who is served, where, in which locale, with what."""
    properties = {
        "environment": ENVIRONMENT_SCHEMA,
        "locale": {**LOCALE_SCHEMA, "nullable": True, "description": "null or empty: default"},
        "subject": {
            **SUBJECT_SCHEMA,
            "nullable": True,
            "description": "null or empty: none (not sticky)",
        },
        "variables": {
            "type": "object",
            "description": "name -> value; checked against the version's declared variables "
            "(`invalid-variables` lists every problem). A `messages` variable takes a "
            'conversation history, `[{"role": "user" | "assistant" | "tool", "content": "…"}]`, '
            "inserted as chat messages after the section its `after` names",
        },
        **extra,
    }
    schema = {"type": "object", "required": ["environment"], "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation(operation_id: str, summary: str, **rest: Any) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["runtime"],
        "security": [{"apiKey": []}],
        **rest,
    }


def _types(*slugs: str) -> list:
    return [PROBLEM_TYPES[slug] for slug in slugs]


# What every runtime view may refuse (api.fastpath): the key and its scope, its rate, the Host
# header, the environment's name and whether the key may read it, the database when nothing is
# cached, and (the view's pattern not matched: a key or an environment that cannot be) no route.
_REFUSED = (
    "unauthenticated",
    "insufficient-scope",
    "environment-forbidden",
    "throttled",
    "validation-error",
    "bad-host",
    "not-found",
    "database-unavailable",
)
# Resolving: no release there (or no such prompt or environment), a locale that is not BCP 47 or
# has no template.
_RESOLVE_REFUSED = ("not-released", "invalid-locale", "locale-unavailable")
# Render and run: a JSON body (api.fastpath.read_body), over plain http (api.middleware), and the
# variables it renders with.
_BODY_REFUSED = (
    "malformed-request",
    "request-too-large",
    "unsupported-media-type",
    "https-required",
    "invalid-variables",
    "render-failed",
)


def runtime_paths(result, generator, request, public):
    """drf-spectacular postprocessing hook: describes the runtime path's plain Django views.

    Their refusals are listed here, not derived (``api.schema.documented_problems``): the runtime
    path changes nothing (no 409) and answers 503 when the database is down and it holds no copy.
    """
    result.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
    key = _path("key", "The prompt's key.", KEY_SCHEMA)
    environment = _path("environment", "The environment.", ENVIRONMENT_SCHEMA)
    resolve_errors = problem_responses(*_types(*_REFUSED, *_RESOLVE_REFUSED))
    body_errors = problem_responses(*_types(*_REFUSED, *_RESOLVE_REFUSED, *_BODY_REFUSED))
    # A run, beyond render's: a budget of its key, prompt or environment spent (runs.budgets).
    run_errors = problem_responses(
        *_types(*_REFUSED, *_RESOLVE_REFUSED, *_BODY_REFUSED, "budget-exceeded")
    )
    environment_errors = problem_responses(*_types(*_REFUSED, "environment-not-found"))
    paths = result.setdefault("paths", {})
    paths["/api/v1/prompts/{key}/resolve"] = {
        "get": _operation(
            "prompts_resolve",
            "Which version serves this subject, in this locale, in this environment.",
            parameters=[
                key,
                _query("environment", "The environment.", ENVIRONMENT_SCHEMA, required=True),
                _query(
                    "locale",
                    "BCP 47; falls back fr-CA -> fr -> the prompt's default (also when empty).",
                    LOCALE_SCHEMA,
                ),
                _query(
                    "subject",
                    "Who is served (user, account, session); sticky when given.",
                    SUBJECT_SCHEMA,
                ),
            ],
            responses={
                "200": _json("The resolved prompt.", "Resolution", {**_ETAG, **_DEGRADED}),
                "304": _NOT_MODIFIED,
                **resolve_errors,
            },
        )
    }
    paths["/api/v1/prompts/{key}/render"] = {
        "post": _operation(
            "prompts_render",
            "Resolve, then render with the variables into chat messages.",
            parameters=[key],
            requestBody=_runtime_body(),
            responses={
                "200": _json("The rendered prompt.", "Rendering", _DEGRADED),
                **body_errors,
            },
        )
    }
    run_answer = _json("The model's answer, or (stream) its server-sent events.", "RunAnswer", {})
    run_answer["headers"] = {**_REQUEST_ID, **_DEGRADED}
    run_answer["content"]["text/event-stream"] = {"schema": ref("RunStreamEvent")}
    paths["/api/v1/prompts/{key}/run"] = {
        "post": _operation(
            "prompts_run",
            "Resolve, render and call the model (retries, fallbacks, schema checks); "
            "records the call and queues its shadows.",
            description="Needs the runs:execute scope. With `stream: true` the answer is "
            "server-sent events: `start`, `token` (each content delta), `tool_call` (each "
            "tool-call delta), then `done` (the same object as the non-streaming answer) or "
            "`error` (the 502 problem document, or the 422 of a guardrail that refused the "
            "run: a stream whose output checks may change the answer sends its text once they "
            "have read it whole). "
            "A stream always ends: past `RUN_STREAM_MAX_SECONDS` (default 300) the model call "
            "is cancelled and answered as an `error` event (attempt outcome `cancelled`). "
            "`X-Request-Id` is taken from the request when given, and always answered. "
            "A run over a budget of its key, prompt or environment (requests per minute, tokens "
            "or cost per UTC day or month) is refused with 429 `budget-exceeded`, naming the "
            "budget, and `Retry-After`: no model is called and no call recorded.",
            parameters=[key],
            requestBody=_runtime_body(
                stream={"type": "boolean", "default": False},
                cache_partition={
                    "type": "string",
                    "maxLength": 128,
                    "nullable": True,
                    "description": "Scopes the version's response cache: an answer cached in "
                    "one partition (a tenant, say) is never served in another. null or "
                    "empty: the shared partition",
                },
                cache={
                    "type": "boolean",
                    "default": True,
                    "description": "false: bypass the response cache (neither read nor written)",
                },
            ),
            responses={
                "200": run_answer,
                **run_errors,
                "422": {
                    "description": "A guardrail of the version or of its environment refused "
                    "the run, before the model call (input) or its answer (output); the call is "
                    "recorded with status `refused`.",
                    "headers": _REQUEST_ID,
                    "content": {
                        "application/problem+json": {
                            "schema": problem_ref(PROBLEM_TYPES["guardrail-refused"])
                        }
                    },
                },
                "502": {
                    "description": "No model answered: every provider the binding names failed; "
                    "the call is recorded with its attempts.",
                    "headers": _REQUEST_ID,
                    "content": {"application/problem+json": {"schema": ref("RunFailure")}},
                },
            },
        )
    }
    paths["/api/v1/environments/{environment}/bundle"] = {
        "get": _operation(
            "environments_bundle",
            "Every release in the environment with its versions, for local evaluation.",
            parameters=[environment],
            responses={
                "200": _json("The bundle (hash_version 1).", "Bundle", {**_ETAG, **_DEGRADED}),
                "304": _NOT_MODIFIED,
                **environment_errors,
            },
        )
    }
    stream_errors = problem_responses(
        *_types(*_REFUSED, "environment-not-found", "too-many-streams", "streams-full")
    )
    last_event_id = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The id of the last event received, to resume from it.",
    }
    paths["/api/v1/environments/{environment}/stream"] = {
        "get": _operation(
            "environments_stream",
            "Release changes in the environment, as server-sent events, for SDKs.",
            description="Needs the prompts:read scope. First `event: hello` with "
            "`{environment, etag}` (the bundle's ETag now: fetch the bundle when it differs from "
            "yours), then `event: release` with `{prompt, revision}` for each release change in "
            "the environment, as it happens (Redis pub/sub; without Redis, a revision check every "
            "second). Each event's `id` is the bundle's ETag after it: send the last one as "
            "`Last-Event-ID` when reconnecting, and the hello says `resumed: true` before the "
            "changes missed meanwhile (or `false`: fetch the bundle). `: keep-alive` comments "
            "every 15 s. The stream ends after about `RELEASE_STREAM_MAX_SECONDS` (default 300, "
            "less up to a fifth at random) with a `retry:` hint: reconnect. Beyond the streams a "
            "key (429 `too-many-streams`) or the server (503 `streams-full`) may hold, a problem "
            "with `Retry-After`.",
            parameters=[environment, last_event_id],
            responses={
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": ref("ReleaseStreamEvent")}},
                },
                **stream_errors,
            },
        )
    }
    return result
