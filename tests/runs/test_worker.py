"""Shadows end to end: live calls through the API, jobs through Redis, a real Celery worker.

The worker is a separate process (``celery -A config worker``) on the test database and Redis,
consuming a queue of its own, so nothing else on the machine takes these jobs. Waiting for it
polls the database with a generous deadline; nothing here measures time.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis

from releases.services import release_shadow_start
from runs.models import Call, ShadowRun
from runs.outbox import outbox
from tests.celery_worker import VISIBILITY_TIMEOUT_SECONDS, Worker, wait_for, worker_on_own_queue
from tests.factories import make_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(settings, needs_redis, tmp_path) -> Iterator[Worker]:
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="shadows") as worker:
        yield worker


@pytest.fixture
def shadowing(released, manager, model_server, make_client, settings):
    """support.refund-reply in staging shadowing ``versions`` on every call; returns a live-call
    function that goes through the API as a service would."""
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    runner = make_client("runs:execute", name="runner")

    def start(*versions: int) -> Callable[[], dict]:
        release_shadow_start(
            prompt=released.prompt,
            environment=released.environments["staging"],
            versions=list(versions),
            sample_percent=Decimal(100),
            actor=manager,
            reason="compare",
        )

        def live(**variables: str) -> dict:
            response = runner.post(
                "/api/v1/prompts/support.refund-reply/run",
                data=json.dumps(
                    {"environment": "staging", "variables": variables or {"customer_name": "Al"}}
                ),
                content_type="application/json",
            )
            assert response.status_code == 200, response.content
            return response.json()

        return live

    return start


def finished(count: int) -> Callable[[], bool]:
    return lambda: ShadowRun.objects.filter(status=ShadowRun.Status.OK).count() >= count


def test_a_live_call_is_shadowed_by_the_worker(shadowing, worker) -> None:
    worker.start()
    live = shadowing(1)
    answers = [live() for _ in range(3)]
    assert outbox.flush(10)
    wait_for(finished(3), "three shadow runs")
    runs = ShadowRun.objects.select_related("call", "version")
    assert {run.call.request_id for run in runs} == {a["request_id"] for a in answers}
    assert all(run.version.number == 1 and run.exact_match for run in runs)


def test_queued_shadow_work_waits_for_a_worker_and_is_not_lost(shadowing, worker) -> None:
    live = shadowing(1)
    worker.start()
    worker.stop()  # the worker goes away; live calls go on
    for _ in range(4):
        live()
    assert outbox.flush(10)
    time.sleep(0.5)
    assert not ShadowRun.objects.exists()  # queued in Redis, nobody to run them
    worker.start()
    wait_for(finished(4), "the queued shadow runs")
    assert Call.objects.count() == 4


def test_a_job_taken_by_a_worker_that_dies_is_run_by_the_next(shadowing, worker, released) -> None:
    # A slow candidate, so the worker is surely mid-run when it is killed.
    make_version(released.prompt, model={"provider": "local", "model": "slow-1500"})
    live = shadowing(4)
    worker.start()
    live()
    assert outbox.flush(10)
    wait_for(
        lambda: ShadowRun.objects.filter(status=ShadowRun.Status.PENDING).exists(),
        "the worker to claim the job",
    )
    worker.kill()
    assert ShadowRun.objects.get().status == ShadowRun.Status.PENDING
    # Redis gives an unacknowledged job back once its visibility timeout has passed; a worker
    # restores such jobs when it starts.
    time.sleep(VISIBILITY_TIMEOUT_SECONDS + 0.5)
    worker.start()
    wait_for(finished(1), "the job to be redelivered and finished")
    run = ShadowRun.objects.get()
    assert run.version.number == 4
    assert run.output != ""


SECRET = "Zelda Quux-Ambersmith"


def test_what_waits_in_redis_is_sealed_and_expires(shadowing, worker, settings) -> None:
    live = shadowing(1)  # no worker: the job stays in Redis, where it is read as it lies
    answer = live(customer_name=SECRET)
    assert outbox.flush(10)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    [raw] = broker.lrange(settings.CELERY_TASK_DEFAULT_QUEUE, 0, -1)
    message = json.loads(raw)
    body = base64.b64decode(message["body"])
    _args, kwargs, _embed = json.loads(body)
    # The right message (its ids are in the clear), and the variable in neither the envelope, its
    # headers (kwargsrepr), nor the body.
    assert kwargs["call_id"] == Call.objects.get(request_id=answer["request_id"]).pk
    for text in (raw, body):
        assert SECRET.encode() not in text
        assert b"Zelda" not in text
    assert message["headers"]["expires"] is not None
    worker.start()
    wait_for(finished(1), "the sealed job to run")
    assert ShadowRun.objects.get().call.request_id == answer["request_id"]


def test_a_job_that_waited_past_its_expiry_is_dropped_unrun(
    shadowing, worker, settings, model_server
) -> None:
    settings.SHADOW_JOB_TTL_SECONDS = 1
    live = shadowing(1)
    live()
    assert outbox.flush(10)
    calls_before = len(model_server.requests.for_path("/v1/chat/completions"))
    time.sleep(1.5)  # the job's expiry passes while no worker runs
    worker.start()
    wait_for(
        lambda: ShadowRun.objects.filter(status=ShadowRun.Status.ERROR).exists(),
        "the expired job's run to be recorded",
    )
    run = ShadowRun.objects.get()
    assert run.error_class == "payload_expired"
    assert len(model_server.requests.for_path("/v1/chat/completions")) == calls_before
