"""A model provider failing every way a network can, met through the real HTTP path.

The registry runs under pytest-django's ``live_server`` (a real WSGI server thread on 127.0.0.1);
the fake provider (runs.fake_provider, on loopback) breaks its answers on the wire (runs.fake_faults):
a chunked stream dropped half-way, an error event mid-stream, a stream that stalls after some
tokens, garbage chunks, a connection reset, a model that trickles tokens. The caller reads
``POST /run`` with httpx and a read timeout, so a stream that never ends fails the test instead
of hanging it. For each fault: what the caller sees, streamed and not, and the call record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from api import run as run_module
from api.services import apikey_create
from releases.services import release_deploy
from runs.models import Call, ModelPrice, Provider
from tests.api.helpers import wait_for_call
from tests.factories import PromptFactory, make_version

# A live server needs transactional tests, whose flush the append-only release events refuse on
# SQLite: these run on PostgreSQL, as ``make test`` runs them.
pytestmark = pytest.mark.postgres

READ_TIMEOUT = 10.0  # shorter than the stream's keep-alive interval: a hung stream fails here
VARIABLES = {"customer_name": "Ada Lovelace, who ordered the analytical engine spare parts"}
SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string"}, "tone": {"type": "string"}},
    "required": ["reply", "tone"],
}
# fault -> the attempt's outcome when streamed, and when not.
FAULTS = {
    "drop": ("connection_error", "connection_error"),
    "error-event": ("stream_error", "malformed"),
    "stall": ("timeout", "timeout"),
    "garbage": ("malformed", "malformed"),
    "reset": ("connection_error", "connection_error"),
}


@pytest.fixture
def provider(model_server) -> Any:
    """The fake as the ``local`` provider (``model_server``: no proxy can take a call off
    loopback; the registry's client trusts none, the test's httpx neither): one try per target, a one-second read timeout (a
    stall costs a second), and a price for every model so that costs show."""
    local = Provider.objects.get(name="local")
    Provider.objects.filter(pk=local.pk).update(timeout_seconds=1.0, max_retries=0)
    for model in ("echo-1", "fault-badjson", *(f"fault-{f}" for f in FAULTS), "fault-trickle-50"):
        ModelPrice.objects.create(
            provider=local, model=model, input_per_million=Decimal(1), output_per_million=Decimal(2)
        )
    return model_server


@pytest.fixture
def http(live_server) -> Iterator[httpx.Client]:
    _, key = apikey_create(name="runner", scopes=("runs:execute",))
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
        trust_env=False,
    ) as client:
        yield client


def released(environments, manager, key: str, model: dict[str, Any]) -> str:
    """``key`` v1 bound to ``model``, stable in staging; its run URL."""
    prompt = PromptFactory(key=key)
    make_version(prompt, model=model)
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )
    return f"/api/v1/prompts/{key}/run"


def bound(model: str, *fallbacks: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "local",
        "model": model,
        "fallbacks": [{"provider": "local", "model": name} for name in fallbacks],
        **extra,
    }


def read_events(response: httpx.Response, stop_after: int | None = None) -> list[tuple[str, Any]]:
    """The server-sent events of a streamed run, up to its ``done``/``error`` (or ``stop_after``)."""
    events: list[tuple[str, Any]] = []
    kind, data = "", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and kind:
            events.append((kind, json.loads(data)))
            if kind in {"done", "error"} or len(events) == stop_after:
                break
            kind, data = "", ""
    return events


def stream(http: httpx.Client, url: str) -> list[tuple[str, Any]]:
    body = {"environment": "staging", "variables": VARIABLES, "stream": True}
    with http.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        return read_events(response)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_broken_stream_falls_back_and_ends_done(
    fault, provider, http, environments, manager
) -> None:
    url = released(environments, manager, "support.flaky", bound(f"fault-{fault}", "echo-1"))

    events = stream(http, url)

    kind, done = events[-1]
    assert kind == "done", events[-1]
    assert [(a["model"], a["outcome"]) for a in done["attempts"]] == [
        (f"fault-{fault}", FAULTS[fault][0]),
        ("echo-1", "ok"),
    ]
    assert done["answered_by"] == {"provider": "local", "model": "echo-1", "fallback": True}
    tokens = "".join(data["text"] for kind, data in events if kind == "token")
    assert tokens.endswith(done["output"])  # the broken start was streamed, then abandoned
    call = Call.objects.get(request_id=done["request_id"])
    assert (call.status, call.model) == (Call.Status.OK, "echo-1")
    assert [a["outcome"] for a in call.attempts] == [FAULTS[fault][0], "ok"]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_broken_stream_with_nothing_to_fall_back_on_ends_with_an_error_event(
    fault, provider, http, environments, manager
) -> None:
    url = released(environments, manager, "support.flaky", bound(f"fault-{fault}"))

    events = stream(http, url)

    kind, problem = events[-1]
    assert kind == "error", events[-1]
    assert problem["status"] == 502
    assert problem["type"].endswith("/provider-unavailable")
    [attempt] = problem["attempts"]
    assert attempt["outcome"] == FAULTS[fault][0]
    assert "Traceback" not in attempt["detail"]
    call = Call.objects.get(request_id=problem["request_id"])
    assert (call.status, call.error_class) == (Call.Status.ERROR, FAULTS[fault][0])
    if fault != "reset":  # a reset may discard what was in flight before it
        # Half an answer streamed before the fault: billed, and recorded with its cost.
        assert call.output_tokens > 0
        assert call.cost == Decimal(call.input_tokens + 2 * call.output_tokens) / 1_000_000


@pytest.mark.parametrize("fault", list(FAULTS))
def test_without_streaming_the_same_faults_are_a_502_with_the_call_and_its_cost_recorded(
    fault, provider, http, environments, manager
) -> None:
    """The primary answers twice with JSON its schema refuses (billed), then the fallback breaks."""
    url = released(
        environments,
        manager,
        "support.flaky",
        bound("fault-badjson", f"fault-{fault}", response_schema=SCHEMA),
    )

    response = http.post(url, json={"environment": "staging", "variables": VARIABLES})

    assert response.status_code == 502
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/provider-unavailable")
    assert [(a["model"], a["outcome"]) for a in problem["attempts"]] == [
        ("fault-badjson", "schema_invalid"),
        ("fault-badjson", "schema_invalid"),
        (f"fault-{fault}", FAULTS[fault][1]),
    ]
    call = Call.objects.get(request_id=response.headers["X-Request-Id"])
    assert (call.status, call.error_class) == (Call.Status.ERROR, FAULTS[fault][1])
    billed = problem["attempts"][:2]
    assert call.input_tokens == sum(a["input_tokens"] for a in billed) > 0
    assert call.output_tokens == sum(a["output_tokens"] for a in billed) > 0
    assert call.cost == Decimal(call.input_tokens + 2 * call.output_tokens) / 1_000_000


def test_a_client_that_leaves_cancels_the_model_call(provider, http, environments, manager) -> None:
    url = released(environments, manager, "support.slow", bound("fault-trickle-50"))
    body = {"environment": "staging", "variables": VARIABLES, "stream": True}

    with http.stream("POST", url, json=body) as response:
        start, token = read_events(response, stop_after=2)
        request_id = response.headers["X-Request-Id"]
    # Leaving the block closed the connection after one token of two hundred.

    assert (start[0], token[0]) == ("start", "token")
    [upstream] = provider.wait_for_streams(1)
    assert upstream.end == "client_closed"  # the registry closed it: the model did not finish
    assert upstream.sent < upstream.total
    call = wait_for_call(request_id)
    assert (call.status, call.error_class) == (Call.Status.ERROR, "cancelled")
    assert call.attempts[-1]["detail"] == "The client left before the end of the stream."
    assert call.output_tokens > 0  # what was answered before the cut, estimated
    assert call.cost is not None


def test_a_stream_past_its_maximum_duration_is_cancelled_and_answered_as_an_error(
    provider, http, environments, manager, settings
) -> None:
    settings.RUN_STREAM_MAX_SECONDS = 1  # the trickle would take ten
    url = released(environments, manager, "support.slow", bound("fault-trickle-50", "echo-1"))

    events = stream(http, url)

    kind, problem = events[-1]
    assert kind == "error", events[-1]
    assert problem["status"] == 502
    [attempt] = problem["attempts"]  # the fallback is not tried: the stream's time is up
    assert attempt["outcome"] == "cancelled"
    assert attempt["detail"] == "The stream reached its maximum duration (1 s)."
    assert any(kind == "token" for kind, _ in events)
    [upstream] = provider.wait_for_streams(1)
    assert upstream.end == "client_closed"
    call = Call.objects.get(request_id=problem["request_id"])
    assert (call.status, call.error_class) == (Call.Status.ERROR, "cancelled")
    assert call.output_tokens > 0


def test_a_model_call_that_crashes_still_ends_the_stream(
    provider, http, environments, manager, monkeypatch
) -> None:
    """The stream's thread puts its end marker in a ``finally``: a call that raised (a bug in
    ``run_call`` itself here) ends the stream with an error event, and the call is recorded."""

    def crashing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the call")

    monkeypatch.setattr(run_module, "run_call", crashing)
    url = released(environments, manager, "support.flaky", bound("echo-1"))

    events = stream(http, url)

    kind, problem = events[-1]
    assert kind == "error", events[-1]
    [attempt] = problem["attempts"]
    assert attempt["outcome"] == "unexpected_error"
    assert "a bug in the call" not in json.dumps(problem)
    call = Call.objects.get(request_id=problem["request_id"])
    assert (call.status, call.error_class) == (Call.Status.ERROR, "unexpected_error")
