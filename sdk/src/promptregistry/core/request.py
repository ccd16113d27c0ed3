"""The request a caller sends a chat model for a rendered prompt: one implementation, shared.

``chat_request`` builds the keyword arguments of ``chat.completions.create(**…)`` from a served
binding (the bundle's ``model``: provider, model, parameters, response_schema, tools, tool_choice,
parallel_tool_calls) and the rendered messages. The registry's ``render`` answers it as
``request`` (the server imports this module, as it does ``variables`` and ``locales``), and
``Prompt.request`` builds it locally, so both send the same thing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

# The name a response schema is sent under in ``response_format`` (OpenAI requires one).
RESPONSE_FORMAT_NAME = "response"


def response_format(schema: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """The ``response_format`` a response schema is sent as (OpenAI's structured outputs)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": RESPONSE_FORMAT_NAME,
            "schema": copy.deepcopy(dict(schema)),
            "strict": strict,
        },
    }


def chat_request(
    model: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    *,
    strict_output: bool = True,
) -> dict[str, Any]:
    """What to pass to ``chat.completions.create(**…)``; the caller's to change (copies).

    1. ``model`` and ``messages``, then the binding's parameters (temperature, max_tokens…).
    2. ``tools``, ``tool_choice`` and ``parallel_tool_calls`` when the binding declares tools.
    3. ``response_format`` when it has a response schema: a JSON Schema, ``strict`` when the
       binding's provider accepts strict structured output (``strict_output``; the registry's
       per-provider flag, which the bundle carries).
    """
    request: dict[str, Any] = {
        "model": model.get("model") or "",
        "messages": [dict(m) for m in messages],
        **copy.deepcopy(dict(model.get("parameters") or {})),
    }
    tools = model.get("tools") or []
    if tools:
        request["tools"] = copy.deepcopy([dict(t) for t in tools])
        if model.get("tool_choice") is not None:
            request["tool_choice"] = copy.deepcopy(model["tool_choice"])
        if model.get("parallel_tool_calls") is not None:
            request["parallel_tool_calls"] = model["parallel_tool_calls"]
    schema = model.get("response_schema")
    if schema:
        request["response_format"] = response_format(schema, strict=strict_output)
    return request
