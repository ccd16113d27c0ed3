"""The two request shapes, read into the run they ask for (``CompatRun``).

Chat completions: ``model: "prompt:<key>"``; the variables, the environment and the locale in
extra members (``extra_body`` in the openai client); ``messages`` appended after the prompt's own.
Responses: OpenAI's reusable prompt, ``prompt: {id, version, variables}``; ``input`` appended
after the prompt's messages. Both: ``user`` or ``safety_identifier`` as the subject a canary or an
experiment draws with, and ``stream``.

What the version's binding holds (the model's parameters, tools, response format) is the prompt's
to set: a request setting it is refused, never silently overridden nor silently ignored (decision
0042). A few members that change nothing the model does (``store``, ``metadata``...) are ignored;
any other member is refused, so a typo is heard about. Null is the same as leaving a member out.
Every problem of shape is listed in one 400; the conversation is checked by the registry's own
rule for histories (``registry.variables.conversation_block``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from promptregistry.core.history import HistoryBlock

from registry.content import MODEL_PARAMETERS, pointer_token
from registry.errors import ConversationInvalid, Problem
from registry.variables import conversation_block

from .. import problems
from ..fastpath import subject_of
from ..problems import ProblemException
from ..serializers import KEY_MAX_CHARS, KEY_PATTERN

MODEL_PREFIX = "prompt:"

# Members that change nothing the model does: bookkeeping of OpenAI's own service.
IGNORED = frozenset(
    {"store", "metadata", "service_tier", "prompt_cache_key", "prompt_cache_retention", "include"}
)
# What the version's binding sets, in each API's spelling.
CHAT_OWNED = frozenset(MODEL_PARAMETERS) | {
    "max_completion_tokens",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "verbosity",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
}
RESPONSES_OWNED = frozenset(
    {
        "temperature",
        "top_p",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_tool_calls",
        "top_logprobs",
        "truncation",
    }
)
COMMON = frozenset({"model", "environment", "locale", "user", "safety_identifier", "stream"})
CHAT_MEMBERS = COMMON | {"messages", "variables", "stream_options", "n"}
RESPONSES_MEMBERS = COMMON | {"prompt", "input", "stream_options", "background"}
# What the Responses API keeps on OpenAI's side, which the registry does not keep.
STATEFUL = {
    "instructions": "The system message is the prompt's own; put instructions in a new version.",
    "previous_response_id": "The registry keeps no responses: send the conversation in input.",
    "conversation": "The registry keeps no conversations: send the conversation in input.",
}
# What the openai client sends back, empty, when a caller appends an answer it received as a
# message (an assistant's refusal, audio, annotations, no tool calls): the same as absent.
ECHOED = frozenset({"refusal", "audio", "function_call", "annotations", "tool_calls"})
# A Responses message item's members that are about the item, not the message.
ITEM_ONLY = frozenset({"type", "id", "status", "phase"})
VERSION = re.compile(r"[1-9][0-9]{0,8}")
OWNED_DETAIL = (
    "{name} is the prompt's to set: the version's model binding holds the model, its "
    "parameters, tools and response format, released with the version. Leave it out, or change "
    "it in a new version."
)
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
KEY = re.compile(KEY_PATTERN)


@dataclass(frozen=True, slots=True)
class CompatRun:
    """The run a request asks for: which prompt, where, for whom, with what."""

    key: str
    environment: str
    subject: str | None
    locale: str | None
    variables: Mapping[str, Any]
    conversation: HistoryBlock | None
    stream: bool
    version: int | None = None  # pinned by the caller (Responses' prompt.version)
    include_usage: bool = False  # chat's stream_options.include_usage


class _Problems:
    """Problems of shape, gathered so that one 400 lists them all."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, code: str, detail: str, pointer: str) -> None:
        self.errors.append({"code": code, "detail": detail, "pointer": pointer})

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise ProblemException(
                problems.VALIDATION, self.errors[0]["detail"], errors=self.errors
            )
        if self.errors:
            raise ProblemException(
                problems.VALIDATION, "The request has problems; see errors.", errors=self.errors
            )


def chat_request(data: Mapping[str, Any]) -> CompatRun:
    """A chat completions body: ``POST …/chat/completions``."""
    found = _Problems()
    _members(data, CHAT_MEMBERS, CHAT_OWNED, {}, found)
    n = data.get("n")
    if n is not None and not (type(n) is int and n == 1):
        found.add("owned_by_the_prompt", "One choice is answered: n must be 1.", "/n")
    variables = _object(data, "variables", found)
    options = _object(data, "stream_options", found)
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        found.add(
            "invalid", "include_usage must be true or false.", "/stream_options/include_usage"
        )
    messages = data.get("messages")
    if messages is not None and not isinstance(messages, list):
        found.add("invalid", "messages must be a list of messages.", "/messages")
        messages = None
    common = _common(data, found)
    model = data.get("model")
    if not isinstance(model, str):
        found.add("required", 'Name the prompt to run: model "prompt:<key>".', "/model")
    found.raise_any()
    conversation = _conversation([_echo_dropped(m) for m in messages or ()], "/messages")
    return CompatRun(
        key=_prompt_key(model),
        variables=variables,
        conversation=conversation,
        include_usage=bool(include_usage),
        **common,
    )


def responses_request(data: Mapping[str, Any]) -> CompatRun:
    """A responses body: ``POST …/responses`` with OpenAI's reusable prompt."""
    found = _Problems()
    _members(data, RESPONSES_MEMBERS, RESPONSES_OWNED, STATEFUL, found)
    if data.get("background") is not None and data["background"] is not False:
        found.add(
            "unsupported",
            "Responses are answered while you wait (or streamed), never in the background.",
            "/background",
        )
    prompt = _object(data, "prompt", found)
    if "prompt" not in data or data["prompt"] is None:
        found.add("required", "Name the prompt: prompt {id, version, variables}.", "/prompt")
    for name in prompt.keys() - {"id", "version", "variables"}:
        detail = f"Unknown member {name[:80]!r} of prompt."
        found.add("unknown_field", detail, f"/prompt/{pointer_token(name)}")
    key = prompt.get("id")
    if isinstance(data.get("prompt"), dict) and not isinstance(key, str):
        found.add("required", "prompt.id names the prompt: its key.", "/prompt/id")
    version = _version(prompt.get("version"), found)
    variables = _object(prompt, "variables", found, at="/prompt")
    variables = {name: _variable(value) for name, value in variables.items()}
    model = data.get("model")
    if model is not None and isinstance(key, str) and model != f"{MODEL_PREFIX}{key}":
        found.add(
            "model_mismatch",
            f"The prompt's binding names the model: leave model out (or send "
            f'"{MODEL_PREFIX}{key}").',
            "/model",
        )
    common = _common(data, found)
    messages, origins = _input_messages(data.get("input"), found)
    found.raise_any()
    try:
        conversation = _conversation(messages, "/input")
    except ConversationInvalid as exc:
        raise ConversationInvalid(_moved(p, origins) for p in exc.problems) from None
    return CompatRun(
        key=_prompt_key(f"{MODEL_PREFIX}{key}"),
        variables=variables,
        conversation=conversation,
        version=version,
        **common,
    )


def _members(
    data: Mapping[str, Any],
    known: frozenset[str],
    owned: frozenset[str],
    stateful: Mapping[str, str],
    found: _Problems,
) -> None:
    """Every member that is not ``known`` (nor ignored) refused: the binding's (``owned``), what
    OpenAI keeps on its side (``stateful``), and any other."""
    for name in data:
        if name in known or name in IGNORED:
            continue
        pointer = f"/{pointer_token(name)}"
        if name in owned:
            found.add("owned_by_the_prompt", OWNED_DETAIL.format(name=name), pointer)
        elif name in stateful:
            found.add("unsupported", f"{name}: {stateful[name]}", pointer)
        else:
            found.add("unknown_field", f"Unknown member {name[:80]!r}.", pointer)


def _common(data: Mapping[str, Any], found: _Problems) -> dict[str, Any]:
    """environment, locale, the subject and stream: what both shapes share."""
    for name in ("environment", "locale", "user", "safety_identifier"):
        if data.get(name) is not None and not isinstance(data[name], str):
            found.add("invalid", f"{name} must be a string.", f"/{name}")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        found.add("invalid", "stream must be true or false.", "/stream")
    subject = None
    for name in ("safety_identifier", "user"):  # the newer name first, as OpenAI reads them
        value = data.get(name)
        if isinstance(value, str) and value:
            try:
                subject = subject_of(value, f"/{name}")
            except ProblemException as exc:
                found.errors.extend(exc.extra["errors"])
            break
    environment = data.get("environment")
    return {
        "environment": environment
        if isinstance(environment, str)
        else settings.OPENAI_COMPAT_ENVIRONMENT,
        "locale": data.get("locale") if isinstance(data.get("locale"), str) else None,
        "subject": subject,
        "stream": stream is True,
    }


def _object(
    data: Mapping[str, Any], name: str, found: _Problems, *, at: str = ""
) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        found.add("invalid", f"{name} must be an object.", f"{at}/{name}")
        return {}
    return value


def _version(value: Any, found: _Problems) -> int | None:
    """prompt.version: a committed version's number, as a string (OpenAI's type)."""
    if value is None:
        return None
    if isinstance(value, str) and VERSION.fullmatch(value):
        return int(value)
    found.add("invalid", 'prompt.version is a version number, such as "3".', "/prompt/version")
    return None


def _variable(value: Any) -> Any:
    """A Responses prompt variable: an ``input_text`` object is its text; any other value is the
    variable's, checked as the version declares it (an image is no text variable's)."""
    if (
        isinstance(value, dict)
        and value.get("type") == "input_text"
        and isinstance(value.get("text"), str)
    ):
        return value["text"]
    return value


def _prompt_key(model: str) -> str:
    """The prompt key ``model`` names; a model that names none is a 404, as an unknown model is
    at OpenAI (and an impossible key on the runtime path)."""
    key = model.removeprefix(MODEL_PREFIX)
    if model.startswith(MODEL_PREFIX) and len(key) <= KEY_MAX_CHARS and KEY.match(key):
        return key
    raise ProblemException(
        problems.NOT_FOUND,
        f"There is no model {model[:200]!r} here: this server runs registry prompts, named "
        f'"{MODEL_PREFIX}<key>".',
    )


def _text(content: Any) -> Any:
    """A message's content as text: a list of text parts joined by newlines; anything else as it
    is (the history check refuses what is not text)."""
    if (
        isinstance(content, list)
        and content
        and all(
            isinstance(p, dict) and p.get("type") in TEXT_PARTS and isinstance(p.get("text"), str)
            for p in content
        )
    ):
        return "\n".join(p["text"] for p in content)
    return content


def _echo_dropped(message: Any) -> Any:
    """A chat message with the members an echoed answer carries empty (``refusal: null``,
    ``annotations: []``) left out, its text parts joined."""
    if not isinstance(message, dict):
        return message
    kept = {
        k: v
        for k, v in message.items()
        if not (k in ECHOED and (v is None or (k == "annotations" and v == [])))
    }
    if "content" in kept:
        kept["content"] = _text(kept["content"])
    return kept


def _input_messages(value: Any, found: _Problems) -> tuple[list[Any], list[int]]:
    """Responses ``input`` as chat messages, and for each the index of the item it came from.

    A string is one user message. A list's items: a message (``{role, content}``, its
    ``type``, ``id``, ``status`` and ``phase`` dropped); a ``function_call``, an assistant's tool
    call (consecutive calls, and calls after an assistant's text, are one assistant message, as
    chat completions take them); a ``function_call_output``, the tool message answering it."""
    if value is None:
        return [], []
    if isinstance(value, str):
        return [{"role": "user", "content": value}], [0]
    if not isinstance(value, list):
        found.add("invalid", "input must be a string or a list of items.", "/input")
        return [], []
    messages: list[Any] = []
    origins: list[int] = []
    for index, item in enumerate(value):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message" and item.get("role") == "tool":
            found.add(
                "unsupported",
                "A tool's answer is a function_call_output item, not a message.",
                f"/input/{index}/role",
            )
            continue
        if kind == "message":
            message = {k: v for k, v in item.items() if k not in ITEM_ONLY}
            messages.append(_echo_dropped(message))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if isinstance(last, dict) and last.get("role") == "assistant":
                last["tool_calls"] = [*last.get("tool_calls", ()), call]
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = _text(item.get("output"))
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        else:
            found.add(
                "unsupported",
                "An input item is a message, a function_call or a function_call_output.",
                f"/input/{index}",
            )
            continue
        origins.append(index)
    return messages, origins


def _conversation(messages: list[Any], pointer: str) -> HistoryBlock | None:
    if not messages:
        return None
    return conversation_block(
        messages,
        pointer=pointer,
        max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
        max_chars=settings.PROMPT_HISTORY_MAX_CHARS,
    )


def _moved(problem: Problem, origins: list[int]) -> Problem:
    """A problem of the converted messages, pointing at the input item the message came from."""
    match = re.match(r"/input/(\d+)(.*)", problem.pointer)
    if match is None or int(match[1]) >= len(origins):
        return problem
    pointer = f"/input/{origins[int(match[1])]}{match[2]}"
    return Problem(problem.code, problem.detail, pointer, problem.line, problem.severity)
