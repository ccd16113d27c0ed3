"""PostgreSQL stopped: the web serves the last cached release and says so; what needs the database
answers a 503 problem at once (never a hang, never a 500); nothing committed is lost, and the
server recovers on its own when the database is back.

PostgreSQL sits behind a proxy taken down (tests/faults/conftest.py): connections are refused and
the server's open (persistent, CONN_MAX_AGE) connection is cut, as in a restart or a failover.
"""

from __future__ import annotations

import os
import socket

import pytest
from django.db import connection

from api.services import apikey_create
from releases.models import Environment, Release
from releases.services import release_deploy
from runs.models import Call
from tests.celery_worker import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

KEY = "support.refund-reply"
DEGRADED = "x-registry-degraded"
PROBLEM = "application/problem+json"
RENDER = {"environment": "staging", "variables": {"customer_name": "Al"}}


def runtime_calls(web, key: str) -> tuple:
    return (
        web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", key),
        web.post(f"/api/v1/prompts/{KEY}/render", key, RENDER),
        web.get("/api/v1/environments/staging/bundle", key),
    )


def listening(postgres) -> bool:
    """Whether the server's release listener is subscribed, so its copies are trusted again. Its
    channel is named after the database as the server reaches it: through the proxy."""
    import redis
    from django.conf import settings

    from releases.cache import CHANNEL_PREFIX

    channel = f"{CHANNEL_PREFIX}127.0.0.1:{postgres.port}/{connection.settings_dict['NAME']}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) > 0
    finally:
        client.close()


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["Retry-After"]


def test_with_the_database_down_cached_releases_are_served_changes_refused_nothing_lost(
    released, web, postgres, redis_proxy, service_key, manager_key, manager, model_server
):
    # Warm: its worker loaded every environment before its first request (gunicorn.conf.py's
    # post_worker_init), and has read the keys. An environment made since is not held.
    late = Environment.objects.create(name="eu-production", position=9)
    release_deploy(prompt=released.prompt, environment=late, version=1, actor=manager, reason="t")
    assert web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", service_key).is_success
    assert web.get("/api/v1/environments/staging/bundle", service_key).is_success
    assert web.get("/api/v1/environments", manager_key).is_success
    revision = Release.objects.get(prompt=released.prompt, environment__name="staging").revision

    _, new_key = apikey_create(name="new-service", scopes=("prompts:read",))  # not seen there

    postgres.down()
    # Redis still vouches for the copies (no change can commit meanwhile): current, no header.
    for response in runtime_calls(web, service_key):
        assert response.status_code == 200, response.text
        assert DEGRADED not in response.headers
    # A key the server has never seen cannot be checked: the outage is said, not a bad key.
    assert_unavailable(web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", new_key))
    # Redis lost too: nothing vouches for the copies any more; served, and said to be.
    redis_proxy.down()
    wait_for(
        lambda: DEGRADED in runtime_calls(web, service_key)[0].headers,
        "the server to stop trusting its copies",
    )
    resolved, rendered, bundled = runtime_calls(web, service_key)
    for response in (resolved, rendered, bundled):
        assert response.status_code == 200, response.text
        assert response.headers[DEGRADED] == "database-unavailable"
    assert resolved.json()["version"] == 2

    # Loaded before the outage, at the worker's start, though never asked for: served, said so.
    production = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=production", service_key)
    assert production.status_code == 200, production.text
    assert production.headers[DEGRADED] == "database-unavailable"
    # Never read while the database was up: a 503 problem, saying so.
    assert_unavailable(
        web.get(f"/api/v1/prompts/{KEY}/resolve?environment=eu-production", service_key)
    )
    # A change cannot be committed: refused at once with a 503 problem, nothing half done.
    assert_unavailable(
        web.post(
            f"/api/v1/releases/staging/{KEY}/deploy",
            manager_key,
            {"version": 1},
            headers={"If-Match": str(revision)},
        )
    )
    # An event batch is not accepted (so the service keeps it and retries), never half stored.
    event = {
        "event_id": "e-1",
        "prompt": KEY,
        "version": 2,
        "environment": "staging",
        "status": "ok",
    }
    assert_unavailable(web.post("/api/v1/events", service_key, {"events": [event]}))
    # A run cannot be recorded: no model is called.
    assert_unavailable(web.post(f"/api/v1/prompts/{KEY}/run", service_key, RENDER))
    assert not model_server.requests.for_path("/v1/chat/completions")

    # Redis back before the database: the listener subscribes again but can vouch for no copy
    # from before (messages may have been missed meanwhile); the last known copies are still
    # served, and said to be, rather than dropped for 503s.
    redis_proxy.up()
    wait_for(lambda: listening(postgres), "the server's release listener to subscribe again")
    for response in runtime_calls(web, service_key):
        assert response.status_code == 200, response.text
        assert response.headers[DEGRADED] == "database-unavailable"

    # The database back: the same server reconnects by itself; the retried change and batch go
    # through.
    postgres.up()
    resolved = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", service_key)
    assert resolved.status_code == 200
    assert DEGRADED not in resolved.headers
    deployed = web.post(
        f"/api/v1/releases/staging/{KEY}/deploy",
        manager_key,
        {"version": 1},
        headers={"If-Match": str(revision)},
    )
    assert deployed.status_code == 200, deployed.text
    assert web.post("/api/v1/events", service_key, {"events": [event]}).status_code == 202
    assert Call.objects.filter(request_id="e-1").count() == 1
    resolved = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", service_key)
    assert resolved.json()["version"] == 1

    # Then a database that accepts connections and never answers (a host gone from the network,
    # a wedged server): a 503 after DATABASE_CONNECT_TIMEOUT, never a request held for ever.
    postgres.hold()  # a host gone from the network: connecting waits for an answer never sent
    # What needs no database still answers at once.
    resolved = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", service_key)
    assert resolved.status_code == 200
    # What needs it gives up after DATABASE_CONNECT_TIMEOUT, within the client's own timeout.
    assert_unavailable(
        web.post(f"/api/v1/releases/staging/{KEY}/deploy", manager_key, {"version": 1})
    )
    assert_unavailable(
        web.get(f"/api/v1/prompts/{KEY}/resolve?environment=eu-production", service_key)
    )
    # A copy no longer vouched for (Redis reconnected meanwhile) is served, and said to be.
    production = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=production", service_key)
    assert production.status_code == 200, production.text
    assert production.headers[DEGRADED] == "database-unavailable"

    postgres.up()
    deployed = web.post(f"/api/v1/releases/staging/{KEY}/deploy", manager_key, {"version": 2})
    assert deployed.status_code == 200, deployed.text


def test_a_connection_gives_up_a_host_that_has_gone_silent(settings):
    """A host gone from the network mid-query cannot be staged on loopback (the machine's own
    kernel answers for the proxy): what bounds it is on the connection's socket, and that is
    what is checked here. libpq's keepalives probe a connection waiting for an answer, and
    unacknowledged data is given up, both after about DATABASE_DEAD_PEER_SECONDS (30) rather
    than the kernel's two hours."""
    seconds = settings.DATABASE_DEAD_PEER_SECONDS
    connection.ensure_connection()
    # A duplicate of the connection's descriptor, whose family the socket reads from it.
    with socket.socket(fileno=os.dup(connection.connection.pgconn.socket)) as s:
        if s.family != socket.AF_INET:
            pytest.skip("the test database is reached over a Unix socket: no TCP keepalives")
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == seconds // 3
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == seconds // 6
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == seconds * 1000
