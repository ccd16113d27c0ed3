"""POST /api/v1/prompts/{key}/run: resolve, render, call the model, record the call (issue #4).

Every model call goes to the local fake server (the ``model_server`` fixture) on loopback.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from api import run as run_module
from registry.models import Prompt
from releases.cache import release_cache
from releases.resolution import resolve
from releases.services import release_deploy, release_shadow_start
from runs import outbox
from runs.calls import call_insert, subject_hash
from runs.execution import run_prepare
from runs.models import Call, ModelPrice, Provider
from runs.payloads import payload_open
from tests.api.helpers import sse_events
from tests.factories import PromptFactory, make_version
from tests.metrics import counting

URL = "/api/v1/prompts/support.refund-reply/run"
CHAT = "/v1/chat/completions"
SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string"}, "tone": {"type": "string"}},
    "required": ["reply", "tone"],
}


@pytest.fixture
def runner(make_client):
    """A service that runs prompts through the registry (runs:execute only)."""
    return make_client("runs:execute", name="runner")


def run(client, body: dict[str, Any], url: str = URL, **headers: str):
    return client.post(url, data=json.dumps(body), content_type="application/json", **headers)


def priced(model: str) -> None:
    """``model`` of the ``local`` provider costs 1 per million tokens, in and out."""
    ModelPrice.objects.create(
        provider=Provider.objects.get(name="local"),
        model=model,
        input_per_million=Decimal(1),
        output_per_million=Decimal(1),
    )


def released_prompt(
    environments, manager, key: str, *, model: dict[str, Any], **extra: Any
) -> Prompt:
    """A prompt whose only version (bound to ``model``) is stable in staging."""
    prompt = PromptFactory(key=key)
    make_version(prompt, model=model, **extra)
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )
    return prompt


def run_released(
    environments, manager, runner, key: str, *, model: dict[str, Any], variables: dict, **extra
):
    """Release a one-version prompt bound to ``model`` in staging, then run it there."""
    released_prompt(environments, manager, key, model=model, **extra)
    return run(
        runner,
        {"environment": "staging", "variables": variables},
        url=f"/api/v1/prompts/{key}/run",
    )


def test_a_run_answers_the_model_output_with_usage_cost_and_timing(
    released, model_server, runner
) -> None:
    local = Provider.objects.get(name="local")
    ModelPrice.objects.create(
        provider=local, model="echo-1", input_per_million=Decimal(2), output_per_million=Decimal(8)
    )
    response = run(
        runner,
        {"environment": "staging", "subject": "user-7", "variables": {"customer_name": "Zoé"}},
        HTTP_X_REQUEST_ID="req-123",
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert response["X-Request-Id"] == answer["request_id"] == "req-123"
    assert answer["version"] == 2
    assert answer["variant"] == "stable"
    assert answer["sticky"] is True
    assert "Greet Zoé" in answer["output"]
    assert answer["answered_by"] == {"provider": "local", "model": "echo-1", "fallback": False}
    usage = answer["usage"]
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    expected_cost = (usage["input_tokens"] * 2 + usage["output_tokens"] * 8) / 1_000_000
    assert answer["cost"] == pytest.approx(expected_cost)
    assert answer["latency_ms"] >= 0
    assert answer["time_to_first_token_ms"] is None
    assert [a["outcome"] for a in answer["attempts"]] == ["ok"]
    assert answer["recorded"] is True

    call = Call.objects.get(request_id="req-123")
    assert call.source == Call.Source.RUN
    assert call.status == Call.Status.OK
    assert (call.prompt.key, call.version.number, call.environment.name) == (
        "support.refund-reply",
        2,
        "staging",
    )
    assert call.variant == "stable"
    assert call.sticky
    assert call.locale == "en"
    assert call.subject_hash == subject_hash("user-7")
    assert "user-7" not in call.subject_hash
    assert (call.input_tokens, call.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert call.cost == pytest.approx(Decimal(str(expected_cost)))
    assert call.model == "echo-1"
    assert call.output == answer["output"]


def test_inputs_and_outputs_are_stored_redacted(released, model_server, runner) -> None:
    response = run(
        runner,
        {"environment": "staging", "variables": {"customer_name": "jane.doe@example.com"}},
    )
    assert response.status_code == 200
    # The caller gets the model's real answer; only the record is redacted.
    assert "jane.doe@example.com" in response.json()["output"]
    call = Call.objects.get()
    assert call.inputs == {"customer_name": "[email]"}
    assert "jane.doe@example.com" not in call.output
    assert "[email]" in call.output
    assert call.sticky is False
    assert call.subject_hash == ""


def test_bad_variables_are_refused_before_any_model_call(released, model_server, runner) -> None:
    response = run(runner, {"environment": "staging", "variables": {"order_total": "lots"}})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert {"/variables/customer_name", "/variables/order_total"} <= pointers
    assert model_server.requests.for_path(CHAT) == []
    assert not Call.objects.exists()


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"environment": "staging", "stream": "yes"}, "/stream"),
        ({"environment": "staging", "variables": []}, "/variables"),
        ({"environment": 3}, "/environment"),
        ({}, "/environment"),
    ],
)
def test_malformed_bodies_are_400_problems(released, model_server, runner, body, pointer) -> None:
    response = run(runner, body)
    assert response.status_code == 400
    assert pointer in {e["pointer"] for e in response.json()["errors"]}
    assert not Call.objects.exists()


def test_keys_need_the_runs_execute_scope_and_the_environment(
    released, model_server, runner, reader_client, anonymous_client, make_client
) -> None:
    body = {"environment": "staging", "variables": {"customer_name": "A"}}
    assert run(anonymous_client, body).status_code == 401
    refused = run(reader_client, body)
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "runs:execute"
    production_only = make_client("runs:execute", environments=("production",))
    assert run(production_only, body).status_code == 403
    assert run(runner, {**body, "environment": "development"}).status_code == 404
    assert run(runner, body, url="/api/v1/prompts/no.such/run").status_code == 404
    assert runner.get(URL).status_code == 405
    assert model_server.requests.for_path(CHAT) == []
    assert not Call.objects.exists()


def test_a_failing_primary_falls_back_and_says_so(
    environments, manager, model_server, runner
) -> None:
    response = run_released(
        environments,
        manager,
        runner,
        "support.fallback",
        model={
            "provider": "local",
            "model": "fault-500",
            "fallbacks": [{"provider": "local", "model": "echo-small"}],
        },
        variables={"customer_name": "B"},
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["answered_by"] == {"provider": "local", "model": "echo-small", "fallback": True}
    # The primary's retries (max_retries=2), then the fallback.
    assert [(a["model"], a["outcome"]) for a in answer["attempts"]] == [
        ("fault-500", "server_error"),
        ("fault-500", "server_error"),
        ("fault-500", "server_error"),
        ("echo-small", "ok"),
    ]
    assert len(model_server.waits) == 2
    call = Call.objects.get()
    assert call.status == Call.Status.OK
    assert call.model == "echo-small"
    assert len(call.attempts) == 4


def test_every_target_failing_is_a_502_problem_listing_the_attempts(
    environments, manager, model_server, runner
) -> None:
    response = run_released(
        environments,
        manager,
        runner,
        "support.down",
        model={
            "provider": "local",
            "model": "fault-429",
            "fallbacks": [{"provider": "local", "model": "fault-malformed"}],
        },
        variables={"customer_name": "C"},
    )
    assert response.status_code == 502
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/provider-unavailable")
    assert problem["request_id"] == response["X-Request-Id"]
    outcomes = [(a["model"], a["outcome"]) for a in problem["attempts"]]
    assert outcomes[0] == ("fault-429", "rate_limited")
    assert outcomes[-1][0] == "fault-malformed"
    assert "Traceback" not in response.content.decode()
    call = Call.objects.get()
    assert call.status == Call.Status.ERROR
    assert call.error_class == outcomes[-1][1]
    assert call.output == ""
    assert call.cost is None


def test_a_response_schema_gives_a_parsed_answer(environments, manager, model_server, runner):
    response = run_released(
        environments,
        manager,
        runner,
        "support.structured",
        model={"provider": "local", "model": "echo-1", "response_schema": SCHEMA},
        variables={"customer_name": "D"},
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert set(answer["parsed"]) >= {"reply", "tone"}
    assert json.loads(answer["output"]) == answer["parsed"]
    call = Call.objects.get()
    assert call.schema_valid is True
    assert json.loads(call.output) == answer["parsed"]  # stored as JSON, redacted as a value


def test_answers_the_schema_refused_are_billed_with_the_fallbacks(
    environments, manager, model_server, runner
):
    """The primary answers twice (a repair) with JSON the schema refuses, then the fallback
    answers: the call's tokens and cost are all three answers, each at its own model's price."""
    local = Provider.objects.get(name="local")
    for model, given, taken in [("fault-badjson", 1, 2), ("echo-1", 3, 5)]:
        ModelPrice.objects.create(
            provider=local,
            model=model,
            input_per_million=Decimal(given),
            output_per_million=Decimal(taken),
        )
    response = run_released(
        environments,
        manager,
        runner,
        "support.billed",
        model={
            "provider": "local",
            "model": "fault-badjson",
            "response_schema": SCHEMA,
            "fallbacks": [{"provider": "local", "model": "echo-1"}],
        },
        variables={"customer_name": "E"},
    )

    assert response.status_code == 200, response.content
    attempts = response.json()["attempts"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        ("fault-badjson", "schema_invalid"),
        ("fault-badjson", "schema_invalid"),
        ("echo-1", "ok"),
    ]
    assert all(a["input_tokens"] > 0 and a["output_tokens"] > 0 for a in attempts)
    prices = {"fault-badjson": (1, 2), "echo-1": (3, 5)}
    expected = sum(
        Decimal(
            a["input_tokens"] * prices[a["model"]][0] + a["output_tokens"] * prices[a["model"]][1]
        )
        / 1_000_000
        for a in attempts
    )
    call = Call.objects.get()
    assert call.input_tokens == sum(a["input_tokens"] for a in attempts)
    assert call.output_tokens == sum(a["output_tokens"] for a in attempts)
    assert call.cost == pytest.approx(expected)
    assert response.json()["usage"]["input_tokens"] == call.input_tokens


def test_a_call_whose_answers_were_all_refused_still_records_what_they_cost(
    environments, manager, model_server, runner
):
    priced("fault-badjson")
    response = run_released(
        environments,
        manager,
        runner,
        "support.refused",
        model={"provider": "local", "model": "fault-badjson", "response_schema": SCHEMA},
        variables={"customer_name": "F"},
    )

    assert response.status_code == 502
    call = Call.objects.get()
    assert (call.status, call.schema_valid) == (Call.Status.ERROR, False)
    assert call.input_tokens > 0
    assert call.cost == pytest.approx(Decimal(call.input_tokens + call.output_tokens) / 1_000_000)


def test_stream_sends_tokens_as_they_come_then_the_whole_answer(
    released, model_server, runner
) -> None:
    response = run(
        runner,
        {"environment": "staging", "variables": {"customer_name": "Eve"}, "stream": True},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert "Content-Length" not in response  # a stream's length is not known up front
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start"
    assert kinds[-1] == "done"
    assert kinds.count("token") >= 2
    tokens = "".join(data["text"] for kind, data in events if kind == "token")
    done = events[-1][1]
    assert tokens == done["output"]
    assert "Greet Eve" in tokens
    assert done["time_to_first_token_ms"] is not None
    assert events[0][1]["request_id"] == done["request_id"] == response["X-Request-Id"]
    call = Call.objects.get()
    assert call.time_to_first_token_ms is not None
    assert call.output == tokens


def test_a_stream_whose_models_all_fail_ends_with_an_error_event(
    environments, manager, model_server, runner
) -> None:
    released_prompt(
        environments, manager, "support.hang", model={"provider": "local", "model": "fault-500"}
    )
    response = run(
        runner,
        {"environment": "staging", "variables": {"customer_name": "F"}, "stream": True},
        url="/api/v1/prompts/support.hang/run",
    )
    events = sse_events(response)
    assert events[-1][0] == "error"
    assert events[-1][1]["status"] == 502
    assert len(events[-1][1]["attempts"]) == 3
    assert Call.objects.get().status == Call.Status.ERROR


def test_a_client_leaving_mid_stream_cancels_the_model_and_records_the_call(
    released, model_server
) -> None:
    # The stream's generator, as the WSGI server drives it: two events read, then closed because
    # the client went away (Django's test client cannot close a stream without also closing the
    # test's database connection; tests/faults/ does it over a real connection).
    priced("echo-1")
    model_server.faults.push("echo-1", "trickle-20")  # 200 tokens, 20 ms apart
    served = release_cache().lookup("staging", "support.refund-reply").release
    prepared = run_prepare(
        resolution=resolve(served, subject=None, locale=None), variables={"customer_name": "Gil"}
    )
    events = run_module._run_events(prepared, subject=None, request_id="left-early", path=URL)
    assert next(events).startswith(b"event: start")
    assert next(events).startswith(b"event: token")
    events.close()

    call = Call.objects.get(request_id="left-early")
    assert (call.status, call.error_class) == (Call.Status.ERROR, "cancelled")
    (attempt,) = call.attempts
    assert attempt["detail"] == "The client left before the end of the stream."
    # What was answered before the cut was billed: estimated, as no usage chunk came.
    assert call.output_tokens > 0
    assert call.cost == Decimal(call.input_tokens + call.output_tokens) / 1_000_000
    [stream] = model_server.wait_for_streams(1)
    assert stream.end == "client_closed"  # cut, not sent to its end
    assert stream.sent < stream.total


def test_a_schema_that_fails_to_apply_is_a_502_with_the_answer_billed(
    environments, manager, model_server, runner, monkeypatch
):
    """Any exception while validating an answer (a dangling ``$ref``, say) ends the attempt:
    a 502 problem with the attempts, and the call recorded with what the answers cost."""
    from runs import providers

    def unresolvable(text, schema):
        raise LookupError("PointerToNowhere: '/$defs/missing' does not exist")

    monkeypatch.setattr(providers, "_validate", unresolvable)
    priced("echo-1")
    response = run_released(
        environments,
        manager,
        runner,
        "support.dangling",
        model={"provider": "local", "model": "echo-1", "response_schema": SCHEMA},
        variables={"customer_name": "K"},
    )

    assert response.status_code == 502
    problem = response.json()
    assert problem["type"].endswith("/provider-unavailable")
    [attempt] = problem["attempts"]
    assert attempt["outcome"] == "unexpected_error"
    assert attempt["detail"] == "The response schema could not be applied (LookupError)."
    assert "PointerToNowhere" not in response.content.decode()  # the type only, never the text
    call = Call.objects.get()
    assert (call.status, call.error_class) == (Call.Status.ERROR, "unexpected_error")
    assert call.input_tokens > 0
    assert call.output_tokens > 0
    assert call.cost == Decimal(call.input_tokens + call.output_tokens) / 1_000_000


def test_a_sampled_call_queues_its_shadows_after_commit(
    released,
    model_server,
    runner,
    manager,
    monkeypatch,
    settings,
    django_capture_on_commit_callbacks,
) -> None:
    release_shadow_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        versions=[1],
        sample_percent=Decimal(100),
        actor=manager,
        reason="try v1 again",
    )
    settings.SHADOW_NOISE_FLOOR_PERCENT = 100
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(outbox.outbox, "put", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = run(
            runner,
            {"environment": "staging", "subject": "s-1", "variables": {"customer_name": "H"}},
        )
    assert response.status_code == 200
    assert response.json()["shadow"] == [1]
    call = Call.objects.get()
    assert sorted((job["version"], job["kind"]) for job in queued) == [
        (1, "candidate"),
        (2, "noise"),
    ]
    assert all(job["call_id"] == call.pk for job in queued)
    # The real inputs, not the redacted, and sealed: no variable in the job in clear text.
    assert "variables" not in queued[0]
    assert payload_open(queued[0]["payload"]).variables == {"customer_name": "H"}


def test_a_failed_live_call_queues_no_shadow(
    environments, manager, model_server, runner, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    prompt = released_prompt(
        environments, manager, "support.broken", model={"provider": "local", "model": "fault-500"}
    )
    make_version(prompt)
    release_shadow_start(
        prompt=prompt,
        environment=environments["staging"],
        versions=[2],
        sample_percent=Decimal(100),
        actor=manager,
        reason="t",
    )
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(outbox.outbox, "put", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = run(
            runner,
            {"environment": "staging", "variables": {"customer_name": "I"}},
            url="/api/v1/prompts/support.broken/run",
        )
    assert response.status_code == 502
    assert queued == []


def test_with_the_database_down_a_run_is_kept_then_refused_before_any_model_is_called(
    released, model_server, runner, database_down, spool
) -> None:
    """Decision 0046: a run asks the database before its model call only while a record could
    not be kept otherwise. The outage's first run in a process has its record kept in Redis;
    from then on a run is a 503 and calls no model, until the database answers again."""
    body = {"environment": "staging", "variables": {"customer_name": "Jo"}}
    assert run(runner, body).status_code == 200  # the release and the key are cached now

    database_down()
    first = run(runner, body)
    assert first.status_code == 200
    assert first.json()["recorded"] is True
    assert spool.length() == 1
    calls_before = len(model_server.requests.for_path(CHAT))

    # The release and the providers are served from memory, but the call could not be recorded.
    response = run(runner, body)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/database-unavailable")
    assert "no model was called" in response.json()["detail"]
    assert response["Retry-After"] == "5"
    assert len(model_server.requests.for_path(CHAT)) == calls_before


def test_without_redis_to_keep_a_record_the_database_is_asked_before_every_call(
    released, model_server, runner, database_down, settings
) -> None:
    """The embedded default has no Redis: nothing could keep the record, so the first run of
    the outage is refused already."""
    body = {"environment": "staging", "variables": {"customer_name": "Jo"}}
    assert run(runner, body).status_code == 200
    calls_before = len(model_server.requests.for_path(CHAT))
    settings.REDIS_URL = ""

    database_down()
    response = run(runner, body)

    assert response.status_code == 503
    assert response.json()["type"].endswith("/database-unavailable")
    assert len(model_server.requests.for_path(CHAT)) == calls_before


def test_a_run_asks_the_database_again_once_it_answers(
    released, model_server, runner, monkeypatch, spool
) -> None:
    """After a record failed to reach it, the database is asked before each call; once it
    answers, the runs go straight to the model again (no round trip before the call)."""
    from runs import execution

    asked: list[bool] = []
    real = execution._database_reachable
    monkeypatch.setattr(execution, "_database_reachable", lambda: asked.append(True) or real())
    monkeypatch.setattr(execution.records, "failing", True)
    body = {"environment": "staging", "variables": {"customer_name": "Jo"}}

    assert run(runner, body).status_code == 200
    assert run(runner, body).status_code == 200

    assert asked == [True]
    assert execution.records.failing is False


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_an_oversized_run_body_is_a_413_and_calls_no_model(released, model_server, runner):
    response = run(runner, {"environment": "staging", "variables": {"customer_name": "A" * 4096}})
    assert response.status_code == 413
    assert response.json()["type"].endswith("/request-too-large")
    assert model_server.requests.for_path(CHAT) == []
    assert not Call.objects.exists()


def test_a_run_body_that_is_not_json_is_refused(released, model_server, runner):
    form = runner.post(URL, {"environment": "staging"})
    broken = runner.post(URL, "{not json", content_type="application/json")
    assert form.status_code == 415
    assert broken.status_code == 400
    assert broken.json()["type"].endswith("/malformed-request")
    assert model_server.requests.for_path(CHAT) == []


def test_an_answer_holding_a_nul_is_answered_and_recorded(
    environments, manager, model_server, runner
):
    """The echo model answers the NUL a template printed: PostgreSQL's text cannot keep it, and the
    call record must not be lost for it (it was, with only a log line)."""
    response = run_released(
        environments,
        manager,
        runner,
        "support.nul",
        model={"provider": "local", "model": "echo-1"},
        templates={"en": {"instruction": 'Greet {{ customer_name }}{{ "\\x00" }}.'}},
        variables={"customer_name": "Nul"},
    )

    assert response.status_code == 200, response.content
    answer = response.json()
    assert "\x00" in answer["output"]  # the caller gets the answer as the model gave it
    assert answer["recorded"] is True
    call = Call.objects.get(request_id=answer["request_id"])
    assert "\x00" not in call.output
    assert "Greet Nul\ufffd." in call.output


def _refusing_writes(monkeypatch, error: Exception) -> None:
    """The database takes no call record from now on: ``error`` is what writing one raises."""

    def refuse(call, **kwargs):
        raise error

    monkeypatch.setattr("runs.execution.call_insert", refuse)


@pytest.mark.parametrize("stream", [False, True])
def test_a_record_the_database_cannot_take_is_kept_and_written_later(
    released, model_server, runner, monkeypatch, needs_redis, spool, stream
):
    """The database goes away after the model answered (a failover mid-run): the caller gets the
    answer it paid for, and the record is kept in Redis until the worker's drain writes it, the
    same row as it would have been. No 5xx: the model was paid, and a retry would pay again."""
    from django.db import OperationalError

    _refusing_writes(monkeypatch, OperationalError("server closed the connection unexpectedly"))
    body = {"environment": "staging", "variables": {"customer_name": "Ana"}, "stream": stream}
    response = run(runner, body, HTTP_X_REQUEST_ID="kept-1")

    assert response.status_code == 200
    answer = sse_events(response)[-1][1] if stream else response.json()
    assert answer["recorded"] is True
    assert answer["request_id"] == "kept-1"
    assert not Call.objects.exists()
    assert spool.length() == 1

    monkeypatch.setattr("runs.execution.call_insert", call_insert)  # the database is back
    assert spool.drain() == 1
    call = Call.objects.get(request_id="kept-1")
    assert (call.output, call.status, call.source) == (answer["output"], "ok", "run")
    assert call.input_tokens == answer["usage"]["input_tokens"] > 0
    assert spool.length() == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_record_neither_the_database_nor_redis_can_keep_is_lost_loudly(
    released, model_server, runner, monkeypatch, caplog, stream
):
    """Without Redis to keep it (the embedded default, or Redis down too), a record the database
    cannot take is lost: an ERROR naming the request id, counted. A stream, which records before
    its end, says so in its ``done`` event; a plain answer, sent before its record, could not."""
    from django.db import OperationalError

    _refusing_writes(monkeypatch, OperationalError("server closed the connection unexpectedly"))
    monkeypatch.setattr("runs.spool._redis", lambda: None)
    body = {"environment": "staging", "variables": {"customer_name": "Ana"}, "stream": stream}
    lost = counting("promptregistry_call_records_total", outcome="lost")

    response = run(runner, body, HTTP_X_REQUEST_ID="lost-1")

    assert response.status_code == 200
    answer = sse_events(response)[-1][1] if stream else response.json()
    assert answer["recorded"] is (not stream)
    assert answer["output"]
    assert not Call.objects.exists()
    (record,) = [r for r in caplog.records if "is lost" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "lost-1" in record.getMessage()
    assert lost() == 1


def test_a_row_the_database_refuses_is_not_kept_to_be_refused_again(
    released, model_server, runner, monkeypatch, spool, caplog
):
    """A ``DataError`` is the row, not the database: kept, it would be refused at every drain."""
    from django.db import DataError

    _refusing_writes(monkeypatch, DataError("value out of range"))
    response = run(runner, {"environment": "staging", "variables": {"customer_name": "Ana"}})

    assert response.status_code == 200
    assert spool.length() == 0
    assert not Call.objects.exists()
    assert any("is lost" in r.getMessage() for r in caplog.records)


def test_the_record_is_written_once_the_answer_is_sent(released, model_server):
    """The answer's bytes are complete before the record's round trip: the WSGI server writes
    them, then closes the response, and the record is written then (decision 0041)."""
    from django.test import RequestFactory

    from api.services import apikey_create

    _, raw = apikey_create(name="direct", scopes=["runs:execute"])
    request = RequestFactory().post(
        URL,
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Ada"}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    response = run_module.run_view(request, key="support.refund-reply")

    assert response.status_code == 200
    answer = json.loads(response.content)
    assert answer["recorded"] is True
    assert not Call.objects.filter(request_id=answer["request_id"]).exists()
    # As the test client does: closing ends the request, which must not close the test's database
    # connection (its transaction holds the test's data).
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
        call = Call.objects.get(request_id=answer["request_id"])
        assert float(call.cost or 0) == (answer["cost"] or 0)
        response.close()  # a second close writes nothing more
    finally:
        request_finished.connect(close_old_connections)
    assert Call.objects.filter(request_id=answer["request_id"]).count() == 1


# As deployed (PostgreSQL and Redis): without Redis's listener the keys and the providers are read
# from the database on each run, and the embedded SQLite configuration adds reads of its own.
@pytest.mark.postgres
def test_a_warm_run_asks_the_database_once_and_writes_once(
    released, model_server, runner, needs_redis
) -> None:
    """The run path's round trips (issue 14, item 7): the connection's health check (Django's
    ``SELECT 1``, once a request), so that a model is never paid for a call whose record cannot
    be written, and the record's single INSERT, after the answer. The providers and prices are held in memory (runs.provider_cache), the rows the
    record points at come with the served release. Not a transaction around the INSERT: a BEGIN
    and a COMMIT would be two more round trips on every run."""
    priced("echo-1")
    body = {"environment": "staging", "variables": {"customer_name": "Ada"}}
    assert run(runner, body).status_code == 200  # warms the key's last use and the caches

    checks = []
    usable = connection.is_usable
    connection.health_check_done = False  # as at the start of every request a server handles
    with (
        CaptureQueriesContext(connection) as queries,
        patch.object(connection, "is_usable", lambda: checks.append(1) or usable()),
    ):
        response = run(runner, body)

    assert response.status_code == 200, response.content
    assert response.json()["recorded"] is True
    assert checks == [1]  # the connection's health check, before the model call
    statements = [q["sql"] for q in queries.captured_queries]
    assert [s.split()[0] for s in statements] == ["INSERT"], statements
    assert 'INTO "runs_call"' in statements[0]
    assert Call.objects.count() == 2
    assert (
        response.json()["cost"] == float(Call.objects.latest("pk").cost) > 0
    )  # priced from the prices held in memory
