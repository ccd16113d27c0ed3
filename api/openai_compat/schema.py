"""The OpenAPI description of the OpenAI-compatible endpoints (a drf-spectacular postprocessing
hook, as ``api.runtime_schema`` describes the runtime path).

The request schemas state what ``requests`` accepts, member by member (no other member is taken:
``additionalProperties: false``), so that a request the schema allows is run or refused for data
only (decision 0024). The answers are OpenAI's objects, as far as the registry fills them; the
refusals OpenAI's error object with the registry's problem document beside it (``errors``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from promptregistry.core.history import MAX_ID_CHARS, MAX_TOOL_CALLS

from ..runtime_schema import LOCALE_SCHEMA, SUBJECT_SCHEMA, ref
from ..schema import PROBLEM_REF
from ..serializers import ENVIRONMENT_SCHEMA, KEY_MAX_CHARS, KEY_PATTERN, KEY_SCHEMA
from .requests import ECHOED, IGNORED, MODEL_PREFIX, TEXT_PARTS

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NULL_ONLY = {"nullable": True, "enum": [None], "description": "null (as an answer echoed back)"}


def _object(required: list[str], *, closed: bool = True, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _nullable(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    extra = {"description": description} if description else {}
    return {**schema, "nullable": True, **extra}


TEXT = {
    "description": "Text, or text parts (joined by newlines)",
    "anyOf": [
        STRING,
        {
            "type": "array",
            "minItems": 1,
            "items": _object(
                ["type", "text"],
                closed=False,
                type={"type": "string", "enum": sorted(TEXT_PARTS)},
                text=STRING,
            ),
        },
    ],
}
CALL_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
TOOL_NAME = {"type": "string", "minLength": 1, "maxLength": 64}
TOOL_CALLS = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_TOOL_CALLS,
    "items": _object(
        ["id", "type", "function"],
        id=CALL_ID,
        type={"type": "string", "enum": ["function"]},
        function=_object(["name", "arguments"], name=TOOL_NAME, arguments=STRING),
    ),
}
# What an answer echoed back as a message carries empty: left out, as if absent.
ECHOED_SCHEMAS = {
    name: {"type": "array", "maxItems": 0, "nullable": True} if name == "annotations" else NULL_ONLY
    for name in sorted(ECHOED)
}
IGNORED_MEMBER = {"description": "Accepted and ignored: it changes nothing the model does."}


def _message(role: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return _object(
        ["role", *required],
        role={"type": "string", "enum": [role]},
        **properties,
        **{name: schema for name, schema in ECHOED_SCHEMAS.items() if name not in properties},
    )


def _messages(*roles: str, **item_members: Any) -> dict[str, Any]:
    """A conversation's message, of one of ``roles``: a history's rules (decision 0034), plus
    ``item_members`` (what a Responses item carries about itself)."""
    variants = {
        "user": [_message("user", ["content"], content=TEXT, **item_members)],
        "assistant": [
            _message(
                "assistant",
                ["content"],
                content=TEXT,
                tool_calls=_nullable(TOOL_CALLS),
                **item_members,
            ),
            _message(
                "assistant",
                ["tool_calls"],
                content=_nullable({**TEXT}, "null: a turn of tool calls only"),
                tool_calls=TOOL_CALLS,
                **item_members,
            ),
        ],
        "tool": [
            _message(
                "tool",
                ["content", "tool_call_id"],
                content=TEXT,
                tool_call_id=CALL_ID,
                **item_members,
            )
        ],
    }
    return {"anyOf": [variant for role in roles for variant in variants[role]]}


# The conversation appended after the prompt's messages.
CHAT_MESSAGE = _messages("user", "assistant", "tool")
COMMON = {
    "environment": _nullable(
        ENVIRONMENT_SCHEMA,
        "Extra member: where the prompt is released (default: OPENAI_COMPAT_ENVIRONMENT).",
    ),
    "locale": _nullable(LOCALE_SCHEMA, "Extra member: BCP 47; falls back as resolve does."),
    "user": _nullable(SUBJECT_SCHEMA, "The subject a canary or an experiment draws with."),
    "safety_identifier": _nullable(SUBJECT_SCHEMA, "The subject, when sent (before user)."),
    "stream": {"type": "boolean", "nullable": True, "default": False},
    **{name: IGNORED_MEMBER for name in sorted(IGNORED)},
}
PROMPT_MODEL = {
    "type": "string",
    "pattern": "^" + MODEL_PREFIX + KEY_PATTERN.removeprefix("^"),
    "maxLength": len(MODEL_PREFIX) + KEY_MAX_CHARS,
    "description": "`prompt:<key>`: the registry prompt to run.",
}
CHAT_REQUEST = _object(
    ["model"],
    model=PROMPT_MODEL,
    messages={
        "type": "array",
        "maxItems": settings.PROMPT_HISTORY_MAX_MESSAGES,
        "items": CHAT_MESSAGE,
        "description": "Appended after the prompt's own messages.",
    },
    variables=_nullable({"type": "object"}, "Extra member: the prompt's variables."),
    n={"type": "integer", "enum": [1], "nullable": True},
    stream_options=_nullable(
        _object([], closed=False, include_usage={"type": "boolean", "nullable": True}),
    ),
    **COMMON,
)
INPUT_ITEM = {
    "anyOf": [
        *_messages(
            "user",
            "assistant",
            type={"type": "string", "enum": ["message"]},
            **{name: IGNORED_MEMBER for name in ("id", "status", "phase")},
        )["anyOf"],
        _object(
            ["type", "call_id", "name", "arguments"],
            closed=False,
            type={"type": "string", "enum": ["function_call"]},
            call_id=CALL_ID,
            name=TOOL_NAME,
            arguments=STRING,
        ),
        _object(
            ["type", "call_id", "output"],
            closed=False,
            type={"type": "string", "enum": ["function_call_output"]},
            call_id=CALL_ID,
            output=TEXT,
        ),
    ]
}
RESPONSES_REQUEST = _object(
    ["prompt"],
    prompt=_object(
        ["id"],
        id=KEY_SCHEMA,
        version=_nullable(
            {"type": "string", "pattern": r"^[1-9][0-9]{0,8}(?!\n)$"},
            "A committed version to run instead of what the release serves the subject.",
        ),
        variables=_nullable({"type": "object"}, "The prompt's variables."),
    ),
    model=_nullable(PROMPT_MODEL, "Optional: `prompt:<prompt.id>`."),
    input={
        "description": "Appended after the prompt's messages: a user message, or items.",
        "nullable": True,
        "anyOf": [
            STRING,
            {
                "type": "array",
                "maxItems": settings.PROMPT_HISTORY_MAX_MESSAGES,
                "items": INPUT_ITEM,
            },
        ],
    },
    background={"type": "boolean", "enum": [False], "nullable": True},
    stream_options=IGNORED_MEMBER,
    **COMMON,
)
USAGE = _object(
    ["prompt_tokens", "completion_tokens", "total_tokens"],
    prompt_tokens=INTEGER,
    completion_tokens=INTEGER,
    total_tokens=INTEGER,
)
ANSWER_TOOL_CALL = TOOL_CALLS["items"]
CHAT_COMPLETION = _object(
    ["id", "object", "created", "model", "choices", "usage"],
    id=STRING,
    object={"type": "string", "enum": ["chat.completion"]},
    created=INTEGER,
    model={**STRING, "description": "The model that answered (a fallback's, when it did)."},
    choices={
        "type": "array",
        "items": _object(
            ["index", "message", "finish_reason", "logprobs"],
            index=INTEGER,
            message=_object(
                ["role", "content", "refusal"],
                role={"type": "string", "enum": ["assistant"]},
                content=_nullable(STRING),
                refusal=NULL_ONLY,
                tool_calls={"type": "array", "items": ANSWER_TOOL_CALL},
            ),
            finish_reason={"type": "string", "enum": ["stop", "tool_calls"]},
            logprobs=NULL_ONLY,
        ),
    },
    usage=USAGE,
)
OUTPUT_TEXT = _object(
    ["type", "text", "annotations"],
    type={"type": "string", "enum": ["output_text"]},
    text=STRING,
    annotations={"type": "array", "maxItems": 0},
    logprobs={"type": "array", "maxItems": 0},
)
OUTPUT_ITEM = {
    "anyOf": [
        _object(
            ["id", "type", "role", "status", "content"],
            id=STRING,
            type={"type": "string", "enum": ["message"]},
            role={"type": "string", "enum": ["assistant"]},
            status={"type": "string", "enum": ["in_progress", "completed", "incomplete"]},
            content={"type": "array", "items": OUTPUT_TEXT},
        ),
        _object(
            ["id", "type", "call_id", "name", "arguments", "status"],
            id=STRING,
            type={"type": "string", "enum": ["function_call"]},
            call_id=STRING,
            name=STRING,
            arguments={**STRING, "description": "JSON text"},
            status={"type": "string", "enum": ["in_progress", "completed", "incomplete"]},
        ),
    ]
}
RESPONSE = _object(
    ["id", "object", "created_at", "status", "model", "output", "tools", "tool_choice"],
    id=STRING,
    object={"type": "string", "enum": ["response"]},
    created_at={"type": "number"},
    completed_at={"type": "number"},
    status={"type": "string", "enum": ["in_progress", "completed", "failed"]},
    model={**STRING, "description": "The model that answered (a fallback's, when it did)."},
    output={"type": "array", "items": OUTPUT_ITEM},
    error=_nullable(_object(["code", "message"], code=STRING, message=STRING)),
    incomplete_details=NULL_ONLY,
    instructions=NULL_ONLY,
    metadata={
        "type": "object",
        "description": "registry_prompt, registry_environment, registry_version, "
        "registry_variant, registry_request_id",
        "additionalProperties": STRING,
    },
    parallel_tool_calls={"type": "boolean"},
    tool_choice={"description": "The binding's: none, auto, required or a function"},
    tools={"type": "array", "items": {"type": "object"}, "description": "The binding's tools"},
    temperature={"type": "number", "nullable": True},
    top_p={"type": "number", "nullable": True},
    max_output_tokens={"type": "integer", "nullable": True},
    prompt=_object(
        ["id", "version"],
        id=STRING,
        version={**STRING, "description": "The version that answered."},
        variables=NULL_ONLY,
    ),
    usage=_nullable(
        _object(
            [
                "input_tokens",
                "input_tokens_details",
                "output_tokens",
                "output_tokens_details",
                "total_tokens",
            ],
            input_tokens=INTEGER,
            input_tokens_details=_object(
                ["cached_tokens", "cache_write_tokens"],
                cached_tokens=INTEGER,
                cache_write_tokens=INTEGER,
            ),
            output_tokens=INTEGER,
            output_tokens_details=_object(["reasoning_tokens"], reasoning_tokens=INTEGER),
            total_tokens=INTEGER,
        )
    ),
)
ERROR = _object(
    ["error", "problem"],
    error=_object(
        ["message", "type", "param", "code"],
        message=STRING,
        type={
            "type": "string",
            "enum": [
                "invalid_request_error",
                "authentication_error",
                "permission_error",
                "rate_limit_error",
                "server_error",
            ],
        },
        param=_nullable(STRING, "Where the first problem is, e.g. `variables.customer_name`."),
        code={**STRING, "description": "The problem type, in snake case: `not_released`."},
    ),
    problem={
        "allOf": [PROBLEM_REF],
        # Each problem type adds its own members (a 502's attempts, a 422's check): the
        # document is the type's component (api.schema), whichever it is.
        "additionalProperties": True,
        "description": "The registry's problem document (RFC 9457), with its type's members.",
    },
)
COMPONENTS = {
    "OpenAIChatCompletionRequest": CHAT_REQUEST,
    "OpenAIResponseRequest": RESPONSES_REQUEST,
    "OpenAIChatCompletion": CHAT_COMPLETION,
    "OpenAIResponse": RESPONSE,
    "OpenAIError": ERROR,
    "OpenAIStreamEvent": _object(
        ["data"],
        closed=False,
        event=STRING,
        data={
            **STRING,
            "description": "JSON: OpenAIChatCompletionChunk objects then `[DONE]` (chat), "
            "named Responses stream events (responses).",
        },
    ),
}
REFUSALS = {
    "400": "The request is not valid (`param` names where), or the variables, the conversation "
    "or the locale do not fit the prompt.",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The key lacks runs:execute, or may not run in that environment.",
    "404": "No such prompt released in that environment (or a model that is no prompt), or no "
    "such committed version.",
    "413": "The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
    "415": "The body is not application/json.",
    "422": "A guardrail of the version or of its environment refused the run (`code` "
    "`guardrail_refused`): before the model call, or its answer; the call is recorded.",
    "429": "Too many runs for this key, or a budget of the key, the prompt or the environment "
    "is spent (`code` `budget_exceeded`): wait Retry-After seconds.",
    "502": "No model answered: every provider the binding names failed (the call is recorded).",
    "503": "The database is unavailable: no model was called.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": INTEGER}}
_HEADERS = {
    name: {"description": description, "schema": STRING}
    for name, description in (
        ("X-Request-Id", "The call's request id (the client's request_id)."),
        ("X-Registry-Prompt", "The prompt that answered."),
        ("X-Registry-Environment", "The environment it was run in."),
        ("X-Registry-Version", "The version that answered."),
        ("X-Registry-Variant", "stable, canary, an experiment variant, or pinned."),
    )
}


def _operation(operation_id: str, summary: str, description: str, request: str, answer: str):
    refusals = {
        status: {
            "description": description,
            **({"headers": _RETRY_AFTER} if status in {"429", "503"} else {}),
            "content": {"application/json": {"schema": ref("OpenAIError")}},
        }
        for status, description in REFUSALS.items()
    }
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "tags": ["openai-compatible"],
            "security": [{"apiKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref(request)}},
            },
            "responses": {
                "200": {
                    "description": "The answer, or (stream) its server-sent events.",
                    "headers": _HEADERS,
                    "content": {
                        "application/json": {"schema": ref(answer)},
                        "text/event-stream": {"schema": ref("OpenAIStreamEvent")},
                    },
                },
                **refusals,
            },
        }
    }


def openai_paths(result, generator, request, public):
    """drf-spectacular postprocessing hook: the two OpenAI-compatible operations."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
    prefix = f"/{settings.OPENAI_COMPAT_PREFIX}"
    paths = result.setdefault("paths", {})
    paths[f"{prefix}/chat/completions"] = _operation(
        "openai_chat_completions",
        "Run a registry prompt as OpenAI's chat completions.",
        "Needs the runs:execute scope. `model` is `prompt:<key>`; the variables, the environment "
        "and the locale are extra members (the openai client's `extra_body`); `messages` are "
        "appended after the prompt's own; `user` (or `safety_identifier`) is the subject. The "
        "version's binding sets the model, its parameters, tools and response format: a request "
        "setting any is refused. With `stream: true`, `chat.completion.chunk` events, then "
        "`[DONE]`. docs/openai-compatible.md.",
        "OpenAIChatCompletionRequest",
        "OpenAIChatCompletion",
    )
    paths[f"{prefix}/responses"] = _operation(
        "openai_responses",
        "Run a registry prompt as OpenAI's Responses, with a reusable prompt.",
        "Needs the runs:execute scope. `prompt.id` is the prompt's key, `prompt.version` pins a "
        "committed version (else the release serves the subject), `prompt.variables` its "
        "variables; `input` is appended after the prompt's messages. With `stream: true`, the "
        "Responses stream events. docs/openai-compatible.md.",
        "OpenAIResponseRequest",
        "OpenAIResponse",
    )
    return result
