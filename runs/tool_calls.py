"""A model's tool calls, read as the untrusted input they are (DESIGN "Failure rules").

``tool_calls_checked`` takes the ``tool_calls`` of a chat completion's message (or the calls a
stream assembled, in the same shape) and answers them as ``{id, name, arguments}`` with the
arguments parsed, or refuses the whole list: a call to a tool the binding does not declare, or
arguments that are not a JSON object, is never half acted on. ``runs.providers`` turns a refusal
into a ``malformed`` attempt. Pure: no models, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from registry.strictjson import strict_json_loads

MAX_TOOL_CALLS = 128  # in one answer; more is a model gone wrong, not a plan


class ToolCallsInvalid(ValueError):
    """The answer's tool calls cannot be acted on; the message says which and why."""


def tool_calls_checked(raw: Any, names: frozenset[str]) -> tuple[dict[str, Any], ...]:
    """The tool calls as ``{id, name, arguments}``, checked in order:

    1. a list (None or empty: no calls) of at most ``MAX_TOOL_CALLS``;
    2. each with an id and a function name that is one of ``names`` (the declared tools);
    3. its arguments text that parses (strictly: no NaN, no NUL) to a JSON object; empty text
       counts as ``{}``, as OpenAI sends a call without parameters.
    """
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOL_CALLS:
        raise ToolCallsInvalid("The answer's tool calls are not a list of calls.")
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        call_id = call.get("id") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
            raise ToolCallsInvalid(f"Tool call {i} has no id or no function name.")
        if name not in names:
            raise ToolCallsInvalid(f"Tool call {i} names {name[:100]!r}, which is not a tool.")
        if not isinstance(arguments, str):
            raise ToolCallsInvalid(f"Tool call {i}'s arguments are not text.")
        try:
            parsed = strict_json_loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise ToolCallsInvalid(f"Tool call {i}'s arguments are not JSON ({exc}).") from exc
        if not isinstance(parsed, dict):
            raise ToolCallsInvalid(f"Tool call {i}'s arguments are not a JSON object.")
        calls.append({"id": call_id, "name": name, "arguments": parsed})
    return tuple(calls)


def answer_with_tool_calls(text: str, tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """An answer as one text for what scores and compares answers (evaluations, shadow reports).

    An answer without tool calls is its text. One that calls tools is the JSON document
    ``{"tool_calls": [{"name", "arguments"}, ...]}``, with ``"content"`` when the model also wrote
    text: a scorer (``json_field`` at ``/tool_calls/0/name``, ``json_schema``, ``contains``) and a
    structural comparison can then read which tools it called and how. The calls' ids are left
    out: a provider makes up new ones on every call, so they would differ between equal answers.
    """
    if not tool_calls:
        return text
    document: dict[str, Any] = {
        "tool_calls": [{"name": c["name"], "arguments": c["arguments"]} for c in tool_calls]
    }
    if text:
        document["content"] = text
    return json.dumps(document, ensure_ascii=False, sort_keys=True)
