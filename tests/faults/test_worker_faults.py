"""The worker killed, the broker lost under it: every shadow job accepted is run once it is back.

A real ``celery worker`` (tests/celery_worker.py) on a queue of its own; live calls go through the
API as a service makes them, and their shadow jobs through the outbox to Redis. The worker killed
mid-job is tests/runs/test_worker.py's own case; here jobs also arrive while no worker is alive,
and the worker's Redis connection is cut and refused (a Redis restart) while it waits for work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from runs.models import Call, ShadowRun
from runs.outbox import outbox
from tests.celery_worker import VISIBILITY_TIMEOUT_SECONDS, wait_for
from tests.factories import make_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def live(released, shadow_all, model_server, make_client) -> Callable[[], dict]:
    """Staging shadows v4 (a slow model: a worker is surely mid-job when killed) on every call."""
    make_version(released.prompt, model={"provider": "local", "model": "slow-500"})
    shadow_all(4)
    runner = make_client("runs:execute", name="runner")

    def call() -> dict:
        response = runner.post(
            "/api/v1/prompts/support.refund-reply/run",
            data=json.dumps({"environment": "staging", "variables": {"customer_name": "Al"}}),
            content_type="application/json",
        )
        assert response.status_code == 200, response.content
        return response.json()

    return call


def done(count: int) -> Callable[[], bool]:
    return lambda: ShadowRun.objects.filter(status=ShadowRun.Status.OK).count() >= count


def test_every_shadow_job_accepted_is_run_once_through_a_redis_restart_and_a_killed_worker(
    live, worker, redis_proxy, settings
):
    address = urlsplit(settings.REDIS_URL)
    worker.env["REDIS_URL"] = f"redis://127.0.0.1:{redis_proxy.port}{address.path or '/0'}"
    try:
        worker.start()
        # 1. The worker's Redis restarts while it waits for work: its connections are cut and
        # refused, jobs are queued meanwhile (this process still reaches Redis), and it takes
        # them once it has connected again.
        redis_proxy.down()
        live()
        live()
        assert outbox.flush(10)
        redis_proxy.up()
        wait_for(done(2), "the worker to reconnect and run the queued jobs")
        assert redis_proxy.connections > 1  # it did connect again

        # 2. The worker is killed mid-job, and jobs arrive while no worker is alive: the one it
        # held comes back after the visibility timeout, and every one is run, once.
        live()
        assert outbox.flush(10)
        wait_for(lambda: ShadowRun.objects.count() == 3, "the worker to claim the third job")
        worker.kill()
        answers = [live(), live()]  # the live path never waits for a worker
        assert outbox.flush(10)
        recorded = set(Call.objects.values_list("request_id", flat=True))
        assert {a["request_id"] for a in answers} <= recorded
        time.sleep(VISIBILITY_TIMEOUT_SECONDS + 0.5)
        worker.start()
        wait_for(done(5), "the held job and the ones sent while the worker was dead")
        runs = ShadowRun.objects.all()
        assert runs.count() == 5  # one per live call: the redelivered job did not run twice
        calls = set(Call.objects.values_list("pk", flat=True))
        assert set(runs.values_list("call_id", flat=True)) == calls
    finally:
        worker.stop()  # before its Redis goes for good: a warm shutdown needs it
