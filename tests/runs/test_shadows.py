"""Shadow runs in-process: claiming, comparison, budget, redelivery, failures; the outbox; retention.

The end-to-end path through Redis and a real Celery worker is in test_worker.py; here the job a
live call queued is run by calling the service the task calls.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from releases.services import release_deploy, release_shadow_start, release_shadow_stop
from runs import outbox as outbox_module
from runs.models import Call, ShadowRun
from runs.outbox import Outbox
from runs.services import calls_delete_expired
from runs.shadows import shadow_run_execute
from tests.factories import ORDER_LOOKUP, PromptFactory, make_version
from tests.metrics import counting

CHAT = "/v1/chat/completions"


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


@pytest.fixture
def jobs(monkeypatch) -> list[dict[str, Any]]:
    """The shadow jobs live calls queue, captured instead of handed to Celery."""
    captured: list[dict[str, Any]] = []
    monkeypatch.setattr(outbox_module.outbox, "put", captured.append)
    return captured


def shadow(prompt, environment, manager, *versions: int, budget: int | None = None) -> None:
    release_shadow_start(
        prompt=prompt,
        environment=environment,
        versions=list(versions),
        sample_percent=Decimal(100),
        budget_per_hour=budget,
        actor=manager,
        reason="compare",
    )


def live_call(client, key: str, django_capture_on_commit_callbacks, **variables: Any):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/prompts/{key}/run",
            data=json.dumps(
                {
                    "environment": "staging",
                    "subject": "s",
                    "variables": variables or {"customer_name": "Ann"},
                }
            ),
            content_type="application/json",
        )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def live(
    released, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    """support.refund-reply shadowing v1 behind the stable v2 in staging, no noise floor runs."""
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    shadow(released.prompt, released.environments["staging"], manager, 1)

    def call(**variables: Any) -> dict[str, Any]:
        return live_call(
            runner, "support.refund-reply", django_capture_on_commit_callbacks, **variables
        )

    return call


def test_a_shadow_runs_the_candidate_on_the_live_inputs_and_compares(live, jobs, model_server):
    answer = live()
    [job] = jobs
    requests_before = len(model_server.requests.for_path(CHAT))
    run = shadow_run_execute(**job)
    assert run is not None
    assert run.status == ShadowRun.Status.OK
    assert (run.kind, run.version.number, run.call.request_id) == (
        "candidate",
        1,
        answer["request_id"],
    )
    assert run.release.environment.name == "staging"
    # v1 differs from v2 only in its system message; the echo model repeats the user message.
    assert run.exact_match is True
    assert run.similarity == 1.0
    assert run.structure_diff is None
    assert run.input_tokens > 0
    assert run.output_tokens > 0
    assert run.latency_ms is not None
    assert run.finished_at is not None
    assert len(model_server.requests.for_path(CHAT)) == requests_before + 1
    sent = model_server.requests.for_path(CHAT)[-1].body["messages"]
    assert "(v1)" in sent[0]["content"]  # the shadow version's own system message


def test_a_shadow_s_model_call_is_counted_as_the_shadow_s_beside_the_live_one(
    live, jobs, model_server
):
    labels = {"prompt": "support.refund-reply", "provider": "local", "model": "echo-1"}
    shadowed = counting(
        "promptregistry_model_calls_total",
        **labels,
        source="shadow",
        version="1",
        variant="candidate",
        outcome="ok",
    )
    served = counting(
        "promptregistry_model_calls_total",
        **labels,
        source="run",
        version="2",
        variant="stable",
        outcome="ok",
    )

    live()
    shadow_run_execute(**jobs[0])

    assert (shadowed(), served()) == (1, 1)


def test_a_second_delivery_of_a_finished_job_calls_no_model(live, jobs, model_server):
    live()
    first = shadow_run_execute(**jobs[0])
    requests = len(model_server.requests.for_path(CHAT))
    again = shadow_run_execute(**jobs[0])
    assert again.pk == first.pk
    assert len(model_server.requests.for_path(CHAT)) == requests
    assert ShadowRun.objects.count() == 1


def test_a_pending_run_left_by_a_dead_worker_is_run_by_the_next_delivery(live, jobs):
    live()
    call = Call.objects.get()
    ShadowRun.objects.create(
        call=call,
        release=call.prompt.releases.get(environment=call.environment),
        version=call.prompt.versions.get(number=1),
        kind="candidate",
        created_at=timezone.now(),
    )
    run = shadow_run_execute(**jobs[0])
    assert run.status == ShadowRun.Status.OK
    assert ShadowRun.objects.count() == 1


def test_the_hourly_budget_skips_runs_past_it(
    released, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    shadow(released.prompt, released.environments["staging"], manager, 1, budget=2)
    for _ in range(3):
        live_call(runner, "support.refund-reply", django_capture_on_commit_callbacks)
    requests = len(model_server.requests.for_path(CHAT))
    statuses = [shadow_run_execute(**job).status for job in jobs]
    assert statuses == ["ok", "ok", "over_budget"]
    assert len(model_server.requests.for_path(CHAT)) == requests + 2
    # An hour later the budget is free again.
    ShadowRun.objects.update(created_at=timezone.now() - timedelta(hours=2))
    live_call(runner, "support.refund-reply", django_capture_on_commit_callbacks)
    assert shadow_run_execute(**jobs[-1]).status == "ok"


def test_the_server_default_budget_applies_when_the_release_sets_none(live, jobs, settings):
    settings.SHADOW_BUDGET_PER_HOUR = 0
    live()
    assert shadow_run_execute(**jobs[0]).status == ShadowRun.Status.OVER_BUDGET


def test_a_noise_floor_run_reruns_the_live_version(
    released, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    settings.SHADOW_NOISE_FLOOR_PERCENT = 100
    shadow(released.prompt, released.environments["staging"], manager, 1)
    live_call(runner, "support.refund-reply", django_capture_on_commit_callbacks)
    runs = {job["kind"]: shadow_run_execute(**job) for job in jobs}
    assert set(runs) == {"candidate", "noise"}
    assert runs["noise"].version.number == 2
    assert runs["noise"].exact_match is True


def test_a_candidate_that_needs_other_variables_records_the_error(
    released, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    make_version(
        released.prompt,
        variables=[{"name": "ticket", "type": "string", "required": True}],
        templates={"en": {"instruction": "Answer ticket {{ ticket }}."}},
    )
    shadow(released.prompt, released.environments["staging"], manager, 4)
    live_call(runner, "support.refund-reply", django_capture_on_commit_callbacks)
    run = shadow_run_execute(**jobs[0])
    assert run.status == ShadowRun.Status.ERROR
    assert run.error_class == "render_invalid"
    assert run.output == ""


def test_a_candidate_whose_model_fails_records_the_failure(
    environments, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    prompt = PromptFactory(key="support.flaky")
    make_version(prompt)
    make_version(prompt, model={"provider": "local", "model": "fault-500"})
    release_deploy(prompt=prompt, environment=environments["staging"], version=1, actor=manager)
    shadow(prompt, environments["staging"], manager, 2)
    live_call(runner, "support.flaky", django_capture_on_commit_callbacks, customer_name="Bo")
    failed = counting(
        "promptregistry_model_calls_total",
        source="shadow",
        prompt="support.flaky",
        version="2",
        variant="candidate",
        provider="local",
        model="fault-500",
        outcome="server_error",
    )
    run = shadow_run_execute(**jobs[0])
    assert run.status == ShadowRun.Status.ERROR
    assert run.error_class == "server_error"
    assert len(run.attempts) == 3
    assert failed() == 1


def test_a_shadow_job_that_fails_unexpectedly_ends_in_error_and_is_not_run_again(
    live, jobs, model_server, monkeypatch
):
    """Any exception once the run is claimed (here the comparison) ends the row in ``error``:
    a row left ``pending`` is what a redelivery runs again, so the job would come back for ever."""
    from runs import shadows
    from runs.tasks import shadow_run_task

    live()

    def broken_compare(*args, **kwargs):
        raise RuntimeError("comparison bug")

    monkeypatch.setattr(shadows, "compare", broken_compare)
    shadow_run_task(**jobs[0])  # the task itself returns: nothing to retry
    run = ShadowRun.objects.get()
    assert run.status == ShadowRun.Status.ERROR
    assert run.error_class == "unexpected_error"
    assert run.finished_at is not None

    requests = len(model_server.requests.for_path(CHAT))
    again = shadow_run_execute(**jobs[0])  # delivered again: finished, so no model is called
    assert again.pk == run.pk
    assert again.status == ShadowRun.Status.ERROR
    assert len(model_server.requests.for_path(CHAT)) == requests


def test_schema_outputs_are_compared_as_json(
    environments, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    prompt = PromptFactory(key="support.json")
    make_version(prompt, model={"provider": "local", "model": "echo-1", "response_schema": schema})
    make_version(
        prompt, model={"provider": "local", "model": "echo-small", "response_schema": schema}
    )
    release_deploy(prompt=prompt, environment=environments["staging"], version=1, actor=manager)
    shadow(prompt, environments["staging"], manager, 2)
    live_call(runner, "support.json", django_capture_on_commit_callbacks, customer_name="Cy")
    run = shadow_run_execute(**jobs[0])
    assert run.status == ShadowRun.Status.OK
    assert isinstance(run.structure_diff, list)
    assert 0.0 <= run.similarity <= 1.0


def test_answers_that_call_tools_are_compared_by_their_calls(
    environments, manager, model_server, runner, jobs, settings, django_capture_on_commit_callbacks
):
    # The fake answers a tool-enabled request with a call to the first tool (or the one
    # tool_choice names): the live version calls order_lookup, the shadow version refund_request.
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    refund = {"type": "function", "function": {**ORDER_LOOKUP["function"], "name": "refund"}}
    prompt = PromptFactory(key="support.agent")
    make_version(prompt, model={"provider": "local", "model": "echo-1", "tools": [ORDER_LOOKUP]})
    make_version(
        prompt, model={"provider": "local", "model": "echo-1", "tools": [refund, ORDER_LOOKUP]}
    )
    make_version(prompt, model={"provider": "local", "model": "echo-1", "tools": [ORDER_LOOKUP]})
    release_deploy(prompt=prompt, environment=environments["staging"], version=1, actor=manager)
    shadow(prompt, environments["staging"], manager, 2, 3)
    answer = live_call(runner, "support.agent", django_capture_on_commit_callbacks)
    assert [c["name"] for c in answer["tool_calls"]] == ["order_lookup"]

    runs = {job["version"]: shadow_run_execute(**job) for job in jobs}

    other, same = runs[2], runs[3]
    assert json.loads(other.output)["tool_calls"][0]["name"] == "refund"
    assert other.exact_match is False
    assert {"path": "/tool_calls/0/name", "change": "changed"}.items() <= other.structure_diff[
        0
    ].items()
    # Equal calls match although each answer has an id of its own.
    assert (same.exact_match, same.similarity, same.structure_diff) == (True, 1.0, [])


def test_a_job_for_an_expired_call_does_nothing(live, jobs):
    live()
    Call.objects.all().delete()
    assert shadow_run_execute(**jobs[0]) is None
    assert not ShadowRun.objects.exists()


def test_retention_deletes_old_calls_with_their_shadow_runs(live, jobs, settings):
    settings.CALL_RETENTION_DAYS = 7
    live()
    live()
    for job in jobs:
        shadow_run_execute(**job)
    old, recent = Call.objects.order_by("pk")
    Call.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    assert calls_delete_expired(batch=1) == 1
    assert list(Call.objects.values_list("pk", flat=True)) == [recent.pk]
    assert list(ShadowRun.objects.values_list("call_id", flat=True)) == [recent.pk]


# --- the outbox: the live path only enqueues ---------------------------------------------------


def test_a_full_outbox_drops_and_counts_without_blocking(monkeypatch):
    box = Outbox(capacity=2)
    release = threading.Event()
    monkeypatch.setattr(box, "_publish", lambda job: release.wait(5))  # a broker that hangs
    results = [box.put({"n": n}) for n in range(5)]
    # The thread holds one job; two wait in the queue; the rest are dropped.
    assert results.count(False) >= 2
    assert box.dropped == results.count(False)
    release.set()
    assert box.flush(5)


def test_a_broker_that_refuses_drops_the_job_and_counts_it(monkeypatch):
    box = Outbox(capacity=10)

    class Refusing:
        @staticmethod
        def apply_async(**kwargs: Any) -> None:
            raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("runs.tasks.shadow_run_task", Refusing)
    assert box.put({"call_id": 1}) is True
    assert box.flush(5)
    assert (box.published, box.dropped) == (0, 1)


def test_a_hanging_broker_never_slows_the_live_call(
    released,
    manager,
    model_server,
    runner,
    monkeypatch,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    shadow(released.prompt, released.environments["staging"], manager, 1)
    box = Outbox(capacity=10)
    hang = threading.Event()
    monkeypatch.setattr(box, "_publish", lambda job: hang.wait(30))
    monkeypatch.setattr(outbox_module, "outbox", box)
    answers = [
        live_call(runner, "support.refund-reply", django_capture_on_commit_callbacks)
        for _ in range(3)
    ]
    assert [a["shadow"] for a in answers] == [[1], [1], [1]]
    assert Call.objects.count() == 3
    hang.set()
    assert box.flush(5)


def test_a_job_whose_shadow_was_stopped_meanwhile_calls_no_model(
    live, jobs, model_server, released, manager
):
    live()
    release_shadow_stop(
        prompt=released.prompt, environment=released.environments["staging"], actor=manager
    )
    requests = len(model_server.requests.for_path(CHAT))
    assert shadow_run_execute(**jobs[0]) is None
    assert len(model_server.requests.for_path(CHAT)) == requests
    assert not ShadowRun.objects.exists()


def test_the_beat_schedule_runs_retention_hourly():
    from config.celery import app

    app.loader.import_default_modules()  # what a worker does at start: autodiscovers tasks
    entry = app.conf.beat_schedule["delete-expired-calls"]
    assert entry["task"] in app.tasks
    assert entry["schedule"] == 3600.0
