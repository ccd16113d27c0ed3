"""Conversation history: the ``messages`` variable type, its check, and where it goes.

A chat feature keeps its whole prompt in the registry and sends only the conversation so far: a
variable of type ``messages`` holds a list of chat messages, ``{"role": …, "content": …}``, that
the render inserts, as they are, between the prompt's own messages (never through a template: a
history is data, not Jinja). The server's ``registry/variables.py`` and ``registry/rendering.py``
use these very functions, so a local render refuses and places a history exactly as
``POST …/render`` does.

The rules of a value (``history_problems``), every problem listed with a JSON Pointer:

1. at most ``max_messages`` entries (``too_many_messages``, one problem, the entries not read);
2. each entry an object with ``role`` and ``content`` and only the fields its role takes
   (``invalid_message``, ``unknown_message_field``): a ``tool`` message also its
   ``tool_call_id``, an ``assistant`` message the ``tool_calls`` it made, as OpenAI's chat API
   takes them, so a conversation that used tools can be sent back as it happened;
3. ``role`` one of ``user``, ``assistant``, ``tool`` (``invalid_message_role``): a ``system``
   message is refused, since the system message is the prompt's own, versioned and reviewed;
4. ``content`` a string (``invalid_message_content``), or null for an assistant message that
   only called tools;
5. a tool message's ``tool_call_id`` a non-empty string of at most ``MAX_ID_CHARS``
   (``invalid_tool_call_id``); an assistant's ``tool_calls`` a non-empty list of at most
   ``MAX_TOOL_CALLS`` calls ``{id, type: "function", function: {name, arguments}}``, each a string
   (``invalid_tool_calls``, pointing at the call);
6. at most ``max_chars`` characters of content, call ids and arguments in all
   (``history_too_large``).

Past ``MAX_ENTRY_PROBLEMS`` wrong entries the rest are counted in one ``more_message_problems``
problem, so a bad history of thousands of entries answers a short problem document.

Where it goes (``history_blocks``, then ``place_history``): after a section, ``after`` being
``system``, ``context`` (the default: after the context, before the instruction), ``instruction``
or ``format``. The user message that context, instruction and format make is split at that
place; with no history (none sent, or an empty list) the messages are exactly those of a prompt
without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ROLES = ("user", "assistant", "tool")
# The places a history may go: after one of the sections, in their order.
PLACES = ("system", "context", "instruction", "format")
DEFAULT_PLACE = "context"
# The fields a message may have, by role (OpenAI's chat message shapes, name aside).
MESSAGE_FIELDS = {
    "user": ("role", "content"),
    "assistant": ("role", "content", "tool_calls"),
    "tool": ("role", "content", "tool_call_id"),
}
ALL_FIELDS = ("role", "content", "tool_call_id", "tool_calls")
MAX_ID_CHARS = 256  # a tool call's id; providers make ids of a few dozen characters
MAX_TOOL_CALLS = 128  # in one assistant message, as a model's answer is bounded (runs.tool_calls)

# The server's defaults (settings PROMPT_HISTORY_MAX_MESSAGES and PROMPT_HISTORY_MAX_CHARS).
MAX_HISTORY_MESSAGES = 500
MAX_HISTORY_CHARS = 200_000
MAX_ENTRY_PROBLEMS = 20

# One message, checked: (role, content or None, tool_call_id or None, ((id, name, arguments), ...)).
HistoryMessage = tuple[str, str | None, str | None, tuple[tuple[str, str, str], ...]]
# (place, messages): one messages variable's history, ready to insert; tuples all through, so a
# rendered result that carries it stays immutable (and hashable).
HistoryBlock = tuple[str, tuple[HistoryMessage, ...]]


def _problem(code: str, detail: str, pointer: str) -> dict[str, object]:
    return {"code": code, "detail": detail, "pointer": pointer}


def _escaped(key: object) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _tool_calls_problems(label: str, index: int, calls: object, at: str) -> list[dict[str, object]]:
    """What is wrong with an assistant message's ``tool_calls`` (empty: nothing)."""
    where = f"The tool_calls of message {index} of '{label}'"
    if not isinstance(calls, list) or not calls:
        detail = f"{where} must be a non-empty list of calls."
        return [_problem("invalid_tool_calls", detail, at)]
    if len(calls) > MAX_TOOL_CALLS:
        detail = f"{where} hold {len(calls)} calls; at most {MAX_TOOL_CALLS} are accepted."
        return [_problem("invalid_tool_calls", detail, at)]
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        valid = (
            isinstance(call, dict)
            and set(call) == {"id", "type", "function"}
            and _is_id(call["id"])
            and call["type"] == "function"
            and isinstance(function, dict)
            and set(function) == {"name", "arguments"}
            and isinstance(function["name"], str)
            and 0 < len(function["name"]) <= 64
            and isinstance(function["arguments"], str)
        )
        if not valid:
            detail = (
                f"Call {number} of message {index} of '{label}' must be {{id, type: \"function\", "
                "function: {name, arguments}}, the id, name and arguments strings."
            )
            return [_problem("invalid_tool_calls", detail, f"{at}/{number}")]
    return []


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _entry_problems(label: str, index: int, entry: object, at: str) -> list[dict[str, object]]:
    """What is wrong with one entry of a history (empty: nothing)."""
    if not isinstance(entry, dict):
        return [
            _problem(
                "invalid_message",
                f"Message {index} of '{label}' must be an object with a role and a content.",
                at,
            )
        ]
    role = entry.get("role")
    allowed = MESSAGE_FIELDS.get(role, ALL_FIELDS) if isinstance(role, str) else ALL_FIELDS
    problems = [
        _problem(
            "unknown_message_field",
            f"Message {index} of '{label}' has an unknown field {str(key)[:80]!r}; "
            + (
                f"a {role} message has only {', '.join(allowed)}."
                if key in ALL_FIELDS
                else "a message has only a role and a content (a tool message also its "
                "tool_call_id, an assistant message its tool_calls)."
            ),
            f"{at}/{_escaped(key)}",
        )
        for key in entry
        if key not in allowed
    ]
    if role not in ROLES:
        if role == "system":
            detail = (
                f"Message {index} of '{label}' has the role 'system', which a history cannot "
                "carry: the system message is the prompt's own. Use user, assistant or tool."
            )
        elif role is None:
            detail = f"Message {index} of '{label}' needs a role: user, assistant or tool."
        else:
            shown = repr(role)[:80] if isinstance(role, str) else "a non-string value"
            detail = (
                f"Message {index} of '{label}' has the role {shown}; "
                "the roles are user, assistant and tool."
            )
        problems.append(_problem("invalid_message_role", detail, f"{at}/role"))
    calls = entry.get("tool_calls") if role == "assistant" else None
    content = entry.get("content")
    if not (isinstance(content, str) or (content is None and calls is not None)):
        detail = (
            f"Message {index} of '{label}' needs a content."
            if content is None
            else f"The content of message {index} of '{label}' must be a string."
        )
        problems.append(_problem("invalid_message_content", detail, f"{at}/content"))
    if role == "tool" and not _is_id(entry.get("tool_call_id")):
        detail = (
            f"Tool message {index} of '{label}' needs the tool_call_id of the call it answers "
            f"(a string of 1 to {MAX_ID_CHARS} characters)."
        )
        problems.append(_problem("invalid_tool_call_id", detail, f"{at}/tool_call_id"))
    if calls is not None:
        problems.extend(_tool_calls_problems(label, index, calls, f"{at}/tool_calls"))
    return problems


def _entry_chars(entry: object) -> int:
    """The characters an entry adds to a history's size: content, call ids and arguments."""
    if not isinstance(entry, dict):
        return 0
    chars = 0
    for field in ("content", "tool_call_id"):
        if isinstance(entry.get(field), str):
            chars += len(entry[field])
    calls = entry.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            chars += len(function["arguments"])
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            chars += len(call["id"])
    return chars


def history_problems(
    label: str,
    value: Sequence[Any],
    *,
    pointer: str,
    max_messages: int = MAX_HISTORY_MESSAGES,
    max_chars: int = MAX_HISTORY_CHARS,
) -> list[dict[str, object]]:
    """Every problem with a history (a list already): the module's rules 1–5, pointers under
    ``pointer`` (``/variables/history/3/role``). ``label`` names the variable in details."""
    if len(value) > max_messages:
        return [
            _problem(
                "too_many_messages",
                f"'{label}' holds {len(value)} messages; at most {max_messages} are accepted.",
                pointer,
            )
        ]
    problems: list[dict[str, object]] = []
    wrong = 0
    chars = 0
    for index, entry in enumerate(value):
        found = _entry_problems(label, index, entry, f"{pointer}/{index}")
        if found:
            wrong += 1
            if wrong <= MAX_ENTRY_PROBLEMS:
                problems.extend(found)
        chars += _entry_chars(entry)
    if wrong > MAX_ENTRY_PROBLEMS:
        more = wrong - MAX_ENTRY_PROBLEMS
        problems.append(
            _problem(
                "more_message_problems",
                f"And {more} more wrong message{'s' if more > 1 else ''} in '{label}', not listed.",
                pointer,
            )
        )
    if chars > max_chars:
        problems.append(
            _problem(
                "history_too_large",
                f"'{label}' holds {chars} characters of content, call ids and arguments; at most "
                f"{max_chars} are accepted.",
                pointer,
            )
        )
    return problems


def place_problem(label: str, after: object, *, pointer: str) -> dict[str, object] | None:
    """Why ``after`` cannot be the place of a history (None: it can)."""
    if after is None or (isinstance(after, str) and after in PLACES):
        return None
    shown = repr(after)[:80] if isinstance(after, str) else "a non-string value"
    return _problem(
        "invalid_place",
        f"The history '{label}' goes after a section: one of {', '.join(PLACES)}, not {shown}.",
        pointer,
    )


def history_block(after: str | None, value: Sequence[Mapping[str, Any]]) -> HistoryBlock:
    """A checked history, copied into the messages a render inserts (a caller editing its list
    afterwards changes nothing), with its place (``None``: the default)."""
    return (
        after or DEFAULT_PLACE,
        tuple(
            (
                m["role"],
                m.get("content"),  # an assistant's tool calls may come without one (rule 3)
                m.get("tool_call_id"),
                tuple(
                    (c["id"], c["function"]["name"], c["function"]["arguments"])
                    for c in m.get("tool_calls") or ()
                ),
            )
            for m in value
        ),
    )


def _message(message: HistoryMessage) -> dict[str, Any]:
    role, content, tool_call_id, calls = message
    result: dict[str, Any] = {"role": role, "content": content}
    if tool_call_id is not None:
        result["tool_call_id"] = tool_call_id
    if calls:
        result["tool_calls"] = [
            {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}
            for id_, name, arguments in calls
        ]
    return result


def place_history(
    sections: Mapping[str, str], history: Sequence[HistoryBlock] = ()
) -> list[dict[str, Any]]:
    """OpenAI chat messages from rendered sections and histories to insert.

    1. The system section, when not empty, is a ``system`` message.
    2. Context, instruction and format, the empty ones left out, are joined by blank lines into
       ``user`` messages: one, unless a history goes between them.
    3. After each section, the histories placed there (in the order given) are inserted, after
       the user text gathered so far; an empty history inserts nothing and splits nothing. A
       history's messages keep their tool call ids and tool calls.
    """
    by_place: dict[str, list[HistoryMessage]] = {}
    for after, messages in history:
        by_place.setdefault(after, []).extend(messages)
    result: list[dict[str, Any]] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            result.append({"role": "user", "content": "\n\n".join(pending)})
            pending.clear()

    for place in PLACES:
        text = sections.get(place, "")
        if place == "system":
            if text:
                result.append({"role": "system", "content": text})
        elif text:
            pending.append(text)
        inserted = by_place.get(place)
        if inserted:
            flush()
            result.extend(_message(message) for message in inserted)
    flush()
    return result
