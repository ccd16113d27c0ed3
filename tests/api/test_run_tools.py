"""POST /run with tools: the binding's tools go to the provider, the answer carries the checked
tool calls (streamed: ``tool_call`` events, then ``done``), the call record keeps them redacted,
and the unhappy paths (a malformed tool call, a stream cut mid-call) end as failed attempts."""

from __future__ import annotations

import json

import pytest

from runs.models import Call
from tests.api.helpers import sse_events
from tests.api.test_run import CHAT, released_prompt, run

KEY = "support.orders"
URL = f"/api/v1/prompts/{KEY}/run"
CARD = "4111 1111 1111 1111"
PAY = {
    "type": "function",
    "function": {
        "name": "pay",
        "description": "Charge a card.",
        "parameters": {
            "type": "object",
            "properties": {"card": {"type": "string"}},
            "required": ["card"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TEMPLATES = {"en": {"instruction": "{{ customer_name }}"}}


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


@pytest.fixture
def orders(environments, manager, model_server):
    return released_prompt(
        environments,
        manager,
        KEY,
        model={"provider": "local", "model": "echo-1", "tools": [PAY], "tool_choice": "required"},
        templates=TEMPLATES,
    )


def test_a_run_passes_the_tools_and_answers_the_tool_call(orders, model_server, runner):
    response = run(runner, {"environment": "staging", "variables": {"customer_name": CARD}}, URL)

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["output"] == ""
    [call] = answer["tool_calls"]
    assert call["name"] == "pay"
    assert call["arguments"] == {"card": CARD}  # the caller's own answer: not redacted
    [sent] = [r.body for r in model_server.requests.for_path(CHAT)]
    assert sent["tools"] == [PAY]
    assert sent["tool_choice"] == "required"

    record = Call.objects.get(request_id=answer["request_id"])
    assert record.status == Call.Status.OK  # tool calls without text are an answer
    [kept] = record.tool_calls
    assert (kept["id"], kept["name"]) == (call["id"], "pay")
    assert CARD not in json.dumps(kept)  # redacted like an output
    assert kept["arguments"]["card"] != CARD


def test_a_streamed_run_sends_tool_call_deltas_then_the_whole_call(orders, runner):
    response = run(
        runner,
        {"environment": "staging", "variables": {"customer_name": CARD}, "stream": True},
        URL,
    )

    events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "start"
    assert names[-1] == "done"
    deltas = [data for name, data in events if name == "tool_call"]
    assert len(deltas) > 2
    assert (deltas[0]["index"], deltas[0]["name"]) == (0, "pay")
    assert json.loads("".join(d["arguments"] for d in deltas)) == {"card": CARD}
    done = events[-1][1]
    assert done["tool_calls"][0]["id"] == deltas[0]["id"]
    assert done["tool_calls"][0]["arguments"] == {"card": CARD}
    assert Call.objects.get(request_id=done["request_id"]).tool_calls[0]["name"] == "pay"


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_tool_call_is_no_answer(environments, manager, model_server, runner, stream):
    released_prompt(
        environments,
        manager,
        KEY,
        model={"provider": "local", "model": "fault-badtool", "tools": [PAY]},
        templates=TEMPLATES,
    )

    response = run(
        runner,
        {"environment": "staging", "variables": {"customer_name": "Ana"}, "stream": stream},
        URL,
    )

    if stream:
        name, problem = sse_events(response)[-1]
        assert name == "error"
    else:
        assert response.status_code == 502
        problem = response.json()
    [attempt] = problem["attempts"]
    assert attempt["outcome"] == "malformed"
    assert "not a tool" in attempt["detail"]
    record = Call.objects.get(request_id=problem["request_id"])
    assert (record.status, record.error_class, record.tool_calls) == (
        Call.Status.ERROR,
        "malformed",
        [],
    )


def test_a_stream_cut_in_the_middle_of_a_tool_call_ends_with_an_error(orders, model_server, runner):
    model_server.faults.push("echo-1", "drop", count=3)

    response = run(
        runner,
        {"environment": "staging", "variables": {"customer_name": CARD}, "stream": True},
        URL,
    )

    events = sse_events(response)
    assert any(name == "tool_call" for name, _ in events)  # part of the call came through
    name, problem = events[-1]
    assert name == "error"
    assert {a["outcome"] for a in problem["attempts"]} <= {"connection_error", "malformed"}
    assert Call.objects.get(request_id=problem["request_id"]).status == Call.Status.ERROR
