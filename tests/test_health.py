"""The health probes (issue 16, item 2): /healthz says the process answers, /readyz whether it can
serve now. Both public, cheap, saying statuses and nothing else. The outages (the database or
Redis down behind a real server) are in tests/faults/test_readiness.py."""

from __future__ import annotations

import httpx
import pytest
from django.db import connection
from django.test import Client

from config.celery import worker_heartbeat
from config.health import HEARTBEAT_KEY, database_probe, probe_client

STATUSES = {"ok", "degraded", "failing"}
# Every key the answer may hold: a check's status, how it is served, the heartbeat's age.
CHECKS = {
    "database": {"status"},
    "migrations": {"status"},
    "redis": {"status", "mode"},
    "release_cache": {"status", "mode"},
    "worker": {"status", "mode", "heartbeat_age_seconds"},
}
MODES = {
    "redis": {"redis", "embedded"},
    "release_cache": {"memory", "database"},
    "worker": {"worker", "embedded"},
}


@pytest.fixture(autouse=True)
def _migrations_unknown():
    """Each test finds out afresh whether the migrations were applied."""
    database_probe.reset()
    yield
    database_probe.reset()


@pytest.fixture
def heartbeat(needs_redis, settings):
    """The worker heartbeat's key, removed after the test (the slot's Redis is shared by its
    tests)."""
    client = probe_client()
    client.delete(HEARTBEAT_KEY)
    yield client
    client.delete(HEARTBEAT_KEY)


def assert_documented(body: dict) -> None:
    """The answer holds only the documented keys and words: nothing that helps an attacker."""
    assert set(body) == {"status", "checks"}
    assert body["status"] in {"ready", "not ready"}
    assert set(body["checks"]) == set(CHECKS)
    for name, found in body["checks"].items():
        assert set(found) <= CHECKS[name], name
        assert found["status"] in STATUSES, name
        if "mode" in found:
            assert found["mode"] in MODES[name], name
        age = found.get("heartbeat_age_seconds")
        assert age is None or (isinstance(age, int) and age >= 0)


def test_ready_on_a_healthy_stack_with_a_worker_heartbeat(client: Client, db, heartbeat) -> None:
    worker_heartbeat.apply()  # as a worker runs it when beat queues it

    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert_documented(body)
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == checks["migrations"] == {"status": "ok"}
    assert checks["redis"] == {"status": "ok", "mode": "redis"}
    assert checks["release_cache"] == {"status": "ok", "mode": "memory"}
    assert checks["worker"]["status"] == "ok"
    assert checks["worker"]["mode"] == "worker"


def test_a_stale_or_missing_heartbeat_is_degraded_not_failing(
    client: Client, db, heartbeat, settings
) -> None:
    body = client.get("/readyz").json()
    assert (body["status"], body["checks"]["worker"]) == (
        "ready",
        {"status": "degraded", "mode": "worker", "heartbeat_age_seconds": None},
    )

    # The last heartbeat is older than the threshold, on Redis's own clock.
    now, _ = heartbeat.time()
    heartbeat.set(HEARTBEAT_KEY, now - settings.WORKER_HEARTBEAT_STALE_SECONDS - 5)
    response = client.get("/readyz")

    assert response.status_code == 200
    worker = response.json()["checks"]["worker"]
    assert worker["status"] == "degraded"
    assert worker["heartbeat_age_seconds"] >= settings.WORKER_HEARTBEAT_STALE_SECONDS + 5


def test_without_redis_the_embedded_mode_is_named(client: Client, db, settings) -> None:
    settings.REDIS_URL = ""

    response = client.get("/readyz")

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["redis"] == {"status": "ok", "mode": "embedded"}
    assert checks["worker"] == {"status": "ok", "mode": "embedded"}
    assert checks["release_cache"]["status"] == "ok"


@pytest.fixture
def unapplied(transactional_db):
    """``unapplied()``: the api app's last migration is recorded as not applied, as for a deploy
    whose ``migrate`` has not run yet; recorded again when the test ends (the database's flush
    between tests leaves django_migrations alone)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, app, name, applied FROM django_migrations WHERE app = 'api' "
            "ORDER BY id DESC LIMIT 1"
        )
        row = cursor.fetchone()

    def forget() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_migrations WHERE id = %s", [row[0]])

    def restore() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_migrations WHERE id = %s", [row[0]])
            cursor.execute(
                "INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)",
                row,
            )

    forget.restore = restore
    yield forget
    restore()


@pytest.mark.postgres
def test_an_unapplied_migration_is_not_ready(client: Client, unapplied) -> None:
    unapplied()

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert_documented(body)
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["migrations"] == {"status": "failing"}

    unapplied.restore()  # migrate ran
    assert client.get("/readyz").status_code == 200


@pytest.mark.postgres
def test_once_migrated_the_process_does_not_ask_again(client: Client, unapplied) -> None:
    """Migrations are applied at deploy, never undone under a running process: once seen applied,
    the answer is kept (the check reads every migration file) until the process restarts."""
    assert client.get("/readyz").status_code == 200
    unapplied()

    assert client.get("/readyz").status_code == 200
    database_probe.reset()  # as a new process would
    assert client.get("/readyz").status_code == 503


def test_the_probes_need_no_key_and_answer_any_host_over_plain_http(
    client: Client, db, settings
) -> None:
    """A load balancer or the kubelet asks a node by its IP over plain http: neither the Host
    check (400) nor the https redirect (a 301 a Kubernetes probe counts as success) applies."""
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["registry.example.com"]

    for path in ("/healthz", "/readyz"):
        response = client.get(path, HTTP_HOST="10.1.2.3:8000")
        assert response.status_code == 200, (path, response.content)
        assert response["Cache-Control"] == "no-store"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert int(response["Content-Length"]) == len(response.content)
        assert "Set-Cookie" not in response
        assert client.post(path, HTTP_HOST="10.1.2.3:8000").status_code == 405
    # Everything else keeps both rules.
    assert client.get("/", HTTP_HOST="10.1.2.3:8000").status_code == 400
    assert client.get("/", HTTP_HOST="registry.example.com").status_code == 301


def test_the_stream_process_answers_the_probes_too(asgi_server) -> None:
    """Under ASGI (the release streams' process, config.asgi) the probes are answered on the
    event loop's side of the stack, the readiness check off it."""
    with httpx.Client(base_url=asgi_server.url, timeout=10) as http:
        assert http.get("/healthz", headers={"Host": "10.1.2.3"}).json() == {"status": "ok"}
        response = http.get("/readyz", headers={"Host": "10.1.2.3"})

    assert response.status_code == 200, response.text
    assert_documented(response.json())
    assert response.headers["Cache-Control"] == "no-store"
