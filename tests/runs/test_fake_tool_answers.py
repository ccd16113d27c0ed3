"""The fake provider's tool-call rule (runs.fake_answers): pure, so checked without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runs.fake_answers import (
    ApiError,
    complete,
    completion_body,
    parse_chat_request,
    stream_chunks,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "order_lookup",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["order_id", "count"],
        },
    },
}
OTHER = {"type": "function", "function": {"name": "refund"}}


def request(**body: Any):
    base = {"model": "echo-1", "messages": [{"role": "user", "content": "order 42 please"}]}
    return parse_chat_request({**base, **body})


def test_a_tool_enabled_request_is_answered_with_a_call_to_the_first_tool() -> None:
    chat = request(tools=[TOOL, OTHER])

    answer = completion_body(chat, complete(chat))

    message = answer["choices"][0]["message"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "order_lookup"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "order 42 please", "count": 0}
    assert call["id"] == f"call_{chat.digest}"
    assert completion_body(chat, complete(chat)) == answer  # the same request, the same bytes


def test_the_named_tool_is_called_and_none_means_text() -> None:
    named = request(
        tools=[TOOL, OTHER], tool_choice={"type": "function", "function": {"name": "refund"}}
    )
    assert complete(named).tool_calls[0].name == "refund"
    assert complete(named).tool_calls[0].arguments == "{}"

    text = complete(request(tools=[TOOL], tool_choice="none"))
    assert (text.tool_calls, text.content) == ((), "echo-1: order 42 please")


def test_after_a_tool_result_the_answer_is_text() -> None:
    messages = [
        {"role": "user", "content": "order 42 please"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
    ]
    assert complete(request(tools=[TOOL], messages=messages)).tool_calls == ()


def test_a_streamed_call_names_the_tool_then_sends_its_arguments_in_pieces() -> None:
    chat = request(tools=[TOOL], stream=True)

    chunks = stream_chunks(chat, complete(chat))

    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    first = deltas[0]["tool_calls"][0]
    assert (first["index"], first["function"]["name"], first["function"]["arguments"]) == (
        0,
        "order_lookup",
        "",
    )
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:]]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == {"order_id": "order 42 please", "count": 0}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_badtool_fault_calls_an_undeclared_tool_with_arguments_that_are_not_json() -> None:
    call = complete(request(tools=[TOOL]), break_tool=True).tool_calls[0]

    assert call.name == "order_lookup_undeclared"
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.arguments)


@pytest.mark.parametrize(
    "body",
    [{"tools": [{"type": "function"}]}, {"tools": "order_lookup"}, {"tool_choice": "auto"}],
)
def test_malformed_tools_are_refused_as_openai_refuses_them(body) -> None:
    with pytest.raises(ApiError) as raised:
        request(**body)
    assert raised.value.status == 400
