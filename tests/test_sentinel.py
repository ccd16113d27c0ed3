"""Redis through Sentinel (issue 16, item 6; decision 0040): with ``REDIS_SENTINELS``, every client
asks the sentinels where the master is: the service's own clients (config/redisclients.py: the
release messages and their listener, the rate limiter, /readyz), the Django cache (django-redis)
and Celery's broker (kombu).

A real sentinel runs for this module (``redis-server --sentinel`` on a free loopback port, with a
password of its own), monitoring the suite's Redis as its master. What each client wrote is read
back from that Redis directly, in the slot's database: it went through the sentinel to the right
place. No failover is staged: that needs a second Redis server and a replica, and the clients
follow one by reconnecting as after any lost connection (redis-py's sentinel pool asks again).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from api import ratelimit
from api.ratelimit import RateLimiter, limiter_client
from config.health import HEARTBEAT_KEY, redis_checks
from config.redisclients import async_redis_client, redis_client
from releases.cache import ReleaseCache, publish
from tests.celery_worker import wait_for, worker_on_own_queue
from tests.releases.test_cache import wait_until
from tests.test_deployment import free_port
from tests.test_settings import run

MASTER = "registry-tests"  # the master's name, as the sentinel knows it
SENTINEL_PASSWORD = "sentinel-secret-5"


def _knows_the_master(port: int) -> bool:
    client = redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1)
    try:
        return client.sentinel_get_master_addr_by_name(MASTER) is not None
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory) -> Iterator[int]:
    """A sentinel monitoring the suite's Redis; its port."""
    server = shutil.which("redis-server")
    if server is None or not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL) and redis-server, which runs as a sentinel")
    master = urlsplit(settings.REDIS_URL)
    port = free_port()
    folder = tmp_path_factory.mktemp("sentinel")
    config = folder / "sentinel.conf"  # the sentinel rewrites it: a file of its own
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nrequirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {MASTER} {master.hostname} {master.port or 6379} 1\n"
        # The suite's Redis is shared: a minute of silence before it is even suspected, and with
        # no replica there is nothing to fail over to anyway.
        f"sentinel down-after-milliseconds {MASTER} 60000\n"
    )
    with (folder / "sentinel.log").open("wb") as log:
        process = subprocess.Popen(
            [server, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: process.poll() is None and _knows_the_master(port), "the sentinel")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def sentinel_environment(port: int) -> dict[str, str]:
    """The settings of a deployment behind this sentinel, in the slot's Redis database."""
    return {
        "REDIS_URL": f"redis://{MASTER}{urlsplit(settings.REDIS_URL).path or '/0'}",
        "REDIS_SENTINELS": f"127.0.0.1:{port}",
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
    }


@pytest.fixture
def master(settings) -> Iterator[redis.Redis]:
    """The suite's Redis, addressed directly: where what goes through the sentinel must land."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def through_sentinel(settings, sentinel, master) -> None:
    """This process's settings name the master through the sentinel (read at call time)."""
    environment = sentinel_environment(sentinel)
    settings.REDIS_URL = environment["REDIS_URL"]
    settings.REDIS_SENTINELS = [("127.0.0.1", sentinel)]
    settings.REDIS_SENTINEL_PASSWORD = SENTINEL_PASSWORD


def test_the_services_clients_find_the_master_through_the_sentinel(through_sentinel, master):
    client = redis_client(socket_timeout=1, socket_connect_timeout=1)
    try:
        client.set("promptregistry:sentinel-check", "sync", ex=60)
    finally:
        client.close()

    async def set_async() -> None:
        client = async_redis_client(socket_timeout=1, socket_connect_timeout=1)
        try:
            await client.set("promptregistry:sentinel-check-async", "async", ex=60)
        finally:
            await client.aclose()

    asyncio.run(set_async())
    # The rate limiter's bucket, and /readyz's round trip.
    assert RateLimiter(limiter_client()).take(key_id=424242, scope="prompts:read") == 0.0
    assert redis_checks()[0] == {"status": "ok", "mode": "redis"}

    bucket = f"{ratelimit._KEY_PREFIX}424242:prompts:read"  # this test's own (tests/conftest.py)
    try:
        assert master.get("promptregistry:sentinel-check") == b"sync"
        assert master.get("promptregistry:sentinel-check-async") == b"async"
        assert master.exists(bucket)
    finally:
        master.delete(
            "promptregistry:sentinel-check", "promptregistry:sentinel-check-async", bucket
        )


def test_release_messages_reach_a_node_through_the_sentinel(through_sentinel):
    node = ReleaseCache()
    heard: list[dict] = []
    node.on("sentinel-check", heard.append)
    try:
        wait_until(lambda: node.trusted, what="the listener to subscribe through the sentinel")
        publish({"kind": "sentinel-check", "n": 1})
        wait_until(lambda: {"kind": "sentinel-check", "n": 1} in heard, what="the message")
    finally:
        node.stop()


def test_a_sentinel_that_refuses_the_password_reads_as_redis_down(through_sentinel, settings):
    settings.REDIS_SENTINEL_PASSWORD = "not-the-password"

    assert redis_checks()[0] == {"status": "degraded", "mode": "redis"}
    publish({"kind": "sentinel-check"})  # logged and dropped, as with Redis down: no exception


SCRIPT = """
import json, uuid
import django
django.setup()
from django.core.cache import cache
from config.celery import app

cache.set("sentinel-check", "cached", 60)
queue = f"test-sentinel-{uuid.uuid4().hex[:8]}"
with app.connection_for_write() as connection:
    connection.ensure_connection(max_retries=1)
    with connection.SimpleQueue(queue) as simple:
        simple.put({"n": 1})
        message = simple.get(timeout=10)
        message.ack()
        simple.queue.delete()
print(json.dumps({"cached": cache.get("sentinel-check"), "received": message.payload}))
"""


def test_the_django_cache_and_celerys_broker_go_through_the_sentinel(sentinel, master, tmp_path):
    """A process configured as a deployment would be, from its environment alone."""
    result = run(
        ["-c", SCRIPT],
        tmp_path,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="true",
        **sentinel_environment(sentinel),
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cached": "cached", "received": {"n": 1}}
    try:
        assert master.get("promptregistry:1:sentinel-check") is not None  # django-redis's key
    finally:
        master.delete("promptregistry:1:sentinel-check")


def test_a_celery_worker_takes_its_jobs_through_the_sentinel(
    sentinel, master, settings, tmp_path: Path
):
    from config.celery import worker_heartbeat

    master.delete(HEARTBEAT_KEY)
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="sentinel") as worker:
        worker.env |= sentinel_environment(sentinel)
        worker.start()
        # Queued by this process straight to Redis; taken by the worker through the sentinel,
        # and run there: it writes the heartbeat with /readyz's client, through the sentinel too.
        worker_heartbeat.apply_async(queue=worker.queue)
        try:
            wait_for(lambda: master.get(HEARTBEAT_KEY) is not None, "the worker's heartbeat")
        finally:
            master.delete(HEARTBEAT_KEY)
