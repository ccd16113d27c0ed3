"""Conversation history: the ``messages`` variable type, its check, and where it goes.

A chat feature keeps its whole prompt in the registry and sends only the conversation so far: a
variable of type ``messages`` holds a list of chat messages, ``{"role": …, "content": …}``, that
the render inserts, as they are, between the prompt's own messages (never through a template: a
history is data, not Jinja). The server's ``registry/variables.py`` and ``registry/rendering.py``
use these very functions, so a local render refuses and places a history exactly as
``POST …/render`` does.

The rules of a value (``history_problems``), every problem listed with a JSON Pointer:

1. at most ``max_messages`` entries (``too_many_messages``, one problem, the entries not read);
2. each entry an object with exactly ``role`` and ``content`` (``invalid_message``,
   ``unknown_message_field``);
3. ``role`` one of ``user``, ``assistant``, ``tool`` (``invalid_message_role``): a ``system``
   message is refused, since the system message is the prompt's own, versioned and reviewed;
4. ``content`` a string (``invalid_message_content``);
5. at most ``max_chars`` characters of content in all (``history_too_large``).

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
MESSAGE_FIELDS = ("role", "content")

# The server's defaults (settings PROMPT_HISTORY_MAX_MESSAGES and PROMPT_HISTORY_MAX_CHARS).
MAX_HISTORY_MESSAGES = 500
MAX_HISTORY_CHARS = 200_000
MAX_ENTRY_PROBLEMS = 20

# (place, ((role, content), ...)): one messages variable's history, ready to insert; tuples all
# through, so a rendered result that carries it stays immutable (and hashable).
HistoryBlock = tuple[str, tuple[tuple[str, str], ...]]


def _problem(code: str, detail: str, pointer: str) -> dict[str, object]:
    return {"code": code, "detail": detail, "pointer": pointer}


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
    problems = [
        _problem(
            "unknown_message_field",
            f"Message {index} of '{label}' has an unknown field {str(key)[:80]!r}; "
            "a message has only a role and a content.",
            f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}",
        )
        for key in entry
        if key not in MESSAGE_FIELDS
    ]
    role = entry.get("role")
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
    if not isinstance(entry.get("content"), str):
        detail = (
            f"Message {index} of '{label}' needs a content."
            if entry.get("content") is None
            else f"The content of message {index} of '{label}' must be a string."
        )
        problems.append(_problem("invalid_message_content", detail, f"{at}/content"))
    return problems


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
        content = entry.get("content") if isinstance(entry, dict) else None
        if isinstance(content, str):
            chars += len(content)
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
                f"'{label}' holds {chars} characters of content; at most {max_chars} are accepted.",
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


def history_block(after: str | None, value: Sequence[Mapping[str, str]]) -> HistoryBlock:
    """A checked history, copied into the messages a render inserts (a caller editing its list
    afterwards changes nothing), with its place (``None``: the default)."""
    return (after or DEFAULT_PLACE, tuple((m["role"], m["content"]) for m in value))


def place_history(
    sections: Mapping[str, str], history: Sequence[HistoryBlock] = ()
) -> list[dict[str, str]]:
    """OpenAI chat messages from rendered sections and histories to insert.

    1. The system section, when not empty, is a ``system`` message.
    2. Context, instruction and format, the empty ones left out, are joined by blank lines into
       ``user`` messages: one, unless a history goes between them.
    3. After each section, the histories placed there (in the order given) are inserted, after
       the user text gathered so far; an empty history inserts nothing and splits nothing.
    """
    by_place: dict[str, list[tuple[str, str]]] = {}
    for after, messages in history:
        by_place.setdefault(after, []).extend(messages)
    result: list[dict[str, str]] = []
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
            result.extend({"role": role, "content": content} for role, content in inserted)
    flush()
    return result
