"""The worker killed, the broker lost under it: every shadow job accepted is run once it is back.

A real ``celery worker`` (tests/celery_worker.py) on a queue of its own; live calls go through the
API as a service makes them, and their shadow jobs through the outbox to Redis. The worker killed
mid-job is tests/runs/test_worker.py's own case; here jobs also arrive while no worker is alive,
and the worker's Redis connection is cut and refused (a Redis restart) while it waits for work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from releases.services import release_shadow_start
from runs.models import Call, ShadowRun
from runs.outbox import outbox
from tests.celery_worker import VISIBILITY_TIMEOUT_SECONDS, Worker, wait_for, worker_on_own_queue
from tests.factories import make_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(settings, needs_redis, tmp_path) -> Iterator[Worker]:
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="faults") as worker:
        yield worker


@pytest.fixture
def live(released, manager, model_server, make_client, settings) -> Callable[[], dict]:
    """Staging shadows v4 (a slow model: a worker is surely mid-job when killed) on every call."""
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    make_version(released.prompt, model={"provider": "local", "model": "slow-500"})
    release_shadow_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        versions=[4],
        sample_percent=Decimal(100),
        actor=manager,
        reason="compare",
    )
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


def test_jobs_sent_while_the_worker_is_dead_and_the_one_it_held_are_all_run_once(live, worker):
    worker.start()
    live()
    assert outbox.flush(10)
    wait_for(lambda: ShadowRun.objects.exists(), "the worker to claim the first job")
    worker.kill()
    answers = [live(), live()]  # the live path never waits for a worker
    assert outbox.flush(10)
    assert {a["request_id"] for a in answers} <= set(
        Call.objects.values_list("request_id", flat=True)
    )

    time.sleep(VISIBILITY_TIMEOUT_SECONDS + 0.5)  # the killed worker's job comes back
    worker.start()
    wait_for(done(3), "the three shadow jobs")
    runs = ShadowRun.objects.all()
    assert runs.count() == 3  # one per live call: the redelivered job did not run twice
    assert set(runs.values_list("call_id", flat=True)) == set(
        Call.objects.values_list("pk", flat=True)
    )


def test_a_worker_whose_redis_restarts_takes_the_jobs_sent_meanwhile(
    live, worker, settings, tmp_path
):
    from tests.tcp_proxy import TcpProxy

    address = urlsplit(settings.REDIS_URL)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 6379))
    try:
        worker.env["REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}{address.path or '/0'}"
        worker.start()
        proxy.down()  # the worker's connections cut, new ones refused
        live()
        live()
        assert outbox.flush(10)  # this process still reaches Redis: the jobs are queued
        proxy.up()
        wait_for(done(2), "the worker to reconnect and run the queued jobs")
        assert proxy.connections > 1  # it did connect again
    finally:
        worker.stop()  # before its Redis goes for good: a warm shutdown needs it
        proxy.down()
