"""Tools through runs.providers.complete() against the local fake: sent with the request, answered
with checked tool calls (plain and streamed), strict structured output by provider, and the
unhappy paths (a malformed tool call, a stream cut in the middle of one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from registry.content import ModelBinding
from runs import providers
from runs.fake_provider import FakeProvider
from runs.models import Provider
from runs.providers import Outcome, ProviderUnavailable, complete

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "Where is order 42"}]
CHAT = "/v1/chat/completions"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "order_lookup",
        "description": "Find an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "verbose": {"type": "boolean"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
REFUND = {
    "type": "function",
    "function": {
        "name": "refund",
        "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}},
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string"}},
    "required": ["reply"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "_sleep", lambda seconds: None)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_seconds=5) as server:
        yield server


def add_local(fake: FakeProvider, **fields: Any) -> Provider:
    fields = {"timeout_seconds": 5.0, "max_retries": 1, **fields}
    return Provider.objects.create(name="local", base_url=fake.base_url, **fields)


def tooled(model: str = "echo-1", **extra: Any) -> ModelBinding:
    return ModelBinding(provider="local", model=model, tools=(LOOKUP, REFUND), **extra)


def test_tools_go_with_the_request_and_the_answer_is_a_checked_tool_call(fake):
    add_local(fake)

    result = complete(
        binding=tooled(tool_choice="auto", parallel_tool_calls=False), messages=MESSAGES
    )

    (sent,) = (r.body for r in fake.requests.for_path(CHAT))
    assert sent["tools"] == [LOOKUP, REFUND]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", False)
    # The fake's rule: the first tool, arguments sampled from its schema (the user's words).
    assert result.text == ""
    assert result.tool_calls == (
        {
            "id": result.tool_calls[0]["id"],
            "name": "order_lookup",
            "arguments": {"order_id": "Where is order 42"},
        },
    )
    assert result.tool_calls[0]["id"].startswith("call_")
    assert [a.outcome for a in result.attempts] == [Outcome.OK]
    assert result.output_tokens > 0


def test_a_named_tool_choice_is_the_tool_called_and_equal_requests_get_equal_calls(fake):
    add_local(fake)
    choice = {"type": "function", "function": {"name": "refund"}}

    first = complete(binding=tooled(tool_choice=choice), messages=MESSAGES)
    second = complete(binding=tooled(tool_choice=choice), messages=MESSAGES)

    assert first.tool_calls == second.tool_calls
    assert first.tool_calls[0]["name"] == "refund"
    assert first.tool_calls[0]["arguments"] == {"amount": 0}


def test_after_a_tool_result_the_model_answers_in_text(fake):
    add_local(fake)
    conversation = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "order_lookup", "arguments": '{"order_id":"42"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
    ]

    result = complete(binding=tooled(), messages=conversation)

    assert result.tool_calls == ()
    assert result.text == "echo-1: Where is order 42"


def test_a_streamed_tool_call_arrives_as_deltas_and_ends_checked(fake):
    add_local(fake)
    tokens: list[str] = []
    deltas: list[dict[str, Any]] = []

    result = complete(
        binding=tooled(), messages=MESSAGES, on_token=tokens.append, on_tool_call=deltas.append
    )

    assert tokens == []
    assert deltas[0]["index"] == 0
    assert deltas[0]["name"] == "order_lookup"
    assert deltas[0]["id"] == result.tool_calls[0]["id"]
    assert len(deltas) > 2  # the arguments came in pieces
    assert json.loads("".join(d["arguments"] for d in deltas)) == {"order_id": "Where is order 42"}
    assert result.tool_calls[0]["arguments"] == {"order_id": "Where is order 42"}
    assert result.time_to_first_token_ms is not None


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_tool_call_is_a_malformed_answer_and_falls_back(fake, stream):
    add_local(fake)
    binding = ModelBinding(
        provider="local",
        model="fault-badtool",
        tools=(LOOKUP,),
        fallbacks=(providers.ModelTarget("local", "echo-1"),),
    )

    result = complete(
        binding=binding,
        messages=MESSAGES,
        on_token=(lambda token: None) if stream else None,
    )

    first, second = result.attempts
    assert (first.model, first.outcome) == ("fault-badtool", Outcome.MALFORMED)
    assert "order_lookup_undeclared" in first.detail
    assert "not a tool" in first.detail
    assert (second.model, second.outcome) == ("echo-1", Outcome.OK)
    assert result.tool_calls[0]["name"] == "order_lookup"


def test_a_stream_cut_in_the_middle_of_a_tool_call_is_not_an_answer(fake):
    add_local(fake, max_retries=0)
    fake.faults.push("echo-1", "drop", count=1)
    deltas: list[dict[str, Any]] = []

    with pytest.raises(ProviderUnavailable) as raised:
        complete(
            binding=tooled(),
            messages=MESSAGES,
            on_token=lambda token: None,
            on_tool_call=deltas.append,
        )

    (attempt,) = raised.value.attempts
    assert attempt.outcome in {Outcome.CONNECTION_ERROR, Outcome.MALFORMED}
    assert deltas  # part of the call had streamed before the cut
    assert attempt.output_tokens > 0  # and was billed


def test_tool_calls_with_a_response_schema_skip_the_schema_until_the_text_answer(fake):
    add_local(fake)

    result = complete(binding=tooled(response_schema=SCHEMA), messages=MESSAGES)

    assert [a.outcome for a in result.attempts] == [Outcome.OK]
    assert result.parsed is None
    assert result.tool_calls


@pytest.mark.parametrize("strict", [True, False])
def test_a_response_schema_is_sent_strict_where_the_provider_accepts_it(fake, strict):
    add_local(fake, strict_output=strict)

    result = complete(
        binding=ModelBinding(provider="local", model="echo-1", response_schema=SCHEMA),
        messages=MESSAGES,
    )

    (sent,) = (r.body for r in fake.requests.for_path(CHAT))
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA, "strict": strict},
    }
    assert result.parsed == {"reply": "Where is order 42"}
