"""/readyz on a real server while its database and Redis fail (issue 16, item 2): the database
down is not ready (503), Redis down is ready and degraded (the registry serves from the database),
and every answer comes within the probe's time, a database that never answers included.

PostgreSQL and Redis sit behind proxies a test takes down (tests/faults/conftest.py); the probes
come as a load balancer's would: no key, the node addressed by its IP."""

from __future__ import annotations

import pytest

from config.health import HEARTBEAT_KEY, heartbeat_record, probe_client
from tests.celery_worker import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROBE = {"Host": "10.0.0.7:8000"}  # not in ALLOWED_HOSTS: a probe needs no name


@pytest.fixture
def heartbeat(settings):
    """A worker ran the heartbeat task just now."""
    heartbeat_record()
    yield
    probe_client().delete(HEARTBEAT_KEY)


def readyz(web) -> tuple[int, dict]:
    response = web.http.get("/readyz", headers=PROBE)
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, response.json()


def cache_mode(web) -> str:
    return readyz(web)[1]["checks"]["release_cache"]["mode"]


def test_readiness_follows_the_database_and_redis(web, postgres, redis_proxy, heartbeat) -> None:
    status, body = readyz(web)
    assert (status, body["status"]) == (200, "ready"), body
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "migrations": "ok",
        "redis": "ok",
        "release_cache": "ok",
        "worker": "ok",
    }

    # Redis down: still ready, since resolves read the database meanwhile; said degraded.
    redis_proxy.down()
    wait_for(lambda: cache_mode(web) == "database", "the release listener to lose Redis")
    status, body = readyz(web)
    assert (status, body["status"]) == (200, "ready"), body
    checks = body["checks"]
    assert checks["redis"] == {"status": "degraded", "mode": "redis"}
    assert checks["release_cache"] == {"status": "degraded", "mode": "database"}
    assert checks["worker"] == {
        "status": "degraded",
        "mode": "worker",
        "heartbeat_age_seconds": None,
    }
    assert checks["database"] == {"status": "ok"}

    redis_proxy.up()
    wait_for(lambda: cache_mode(web) == "memory", "the release listener to subscribe again")

    # The database down: not ready, at once.
    postgres.down()
    status, body = readyz(web)
    assert (status, body["status"]) == (503, "not ready"), body
    assert body["checks"]["database"] == {"status": "failing"}
    assert body["checks"]["redis"] == {"status": "ok", "mode": "redis"}

    postgres.up()
    wait_for(lambda: readyz(web)[0] == 200, "ready again")

    # A database that accepts connections and never answers: not ready within READYZ_TIMEOUT,
    # well inside the client's own timeout, however often it is asked.
    postgres.hold()
    for _ in range(3):
        status, body = readyz(web)
        assert (status, body["checks"]["database"]) == (503, {"status": "failing"})

    postgres.up()
    wait_for(lambda: readyz(web)[0] == 200, "ready again")
    # Liveness never asked anything of either.
    assert web.http.get("/healthz", headers=PROBE).json() == {"status": "ok"}
