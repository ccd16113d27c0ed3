"""The service's Redis clients: one way to connect, for every place that does (the release cache's
listener and its change messages, the release streams, the rate limiter, ``/readyz``). The
Django cache and Celery's broker are given the same address by config/settings.py.

``REDIS_URL`` names the server (``redis://[:password@]host:port/db``). With ``REDIS_SENTINELS`` it
names the master as the sentinels know it (``redis://[:password@]mymaster/db``), and each new
connection asks a sentinel where that master is now: after a failover, a client whose connection
broke reconnects to the new master, as it reconnects after any lost connection. Each caller
passes its own timeouts (and retries), which the sentinels' connections get too, so asking them
is bounded as well.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.connection import parse_url
from redis.sentinel import Sentinel

# The caller's options that also bound each question to a sentinel.
SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout", "retry")


def redis_client(**options: Any) -> redis.Redis:
    """A client of the Redis the settings name now (tests override them), with ``options``
    (``socket_timeout``, ``retry``...) for its connections."""
    if not settings.REDIS_SENTINELS:
        return redis.Redis.from_url(settings.REDIS_URL, **options)
    master, connection = _master(options)
    return Sentinel(settings.REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(options)).master_for(
        master, **connection
    )


def async_redis_client(**options: Any) -> aioredis.Redis:
    """``redis_client`` for asyncio (the release streams' hub)."""
    if not settings.REDIS_SENTINELS:
        return aioredis.Redis.from_url(settings.REDIS_URL, **options)
    master, connection = _master(options)
    return AsyncSentinel(
        settings.REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(options)
    ).master_for(master, **connection)


def _master(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The master's name (``REDIS_URL``'s host) and its connections' arguments: the URL's
    database, user and password, and ``options``."""
    connection = parse_url(settings.REDIS_URL)
    master = connection.pop("host")
    connection.pop("port", None)
    return master, connection | options


def _sentinel_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    password = {"password": settings.REDIS_SENTINEL_PASSWORD}
    return {k: v for k, v in options.items() if k in SENTINEL_OPTIONS} | (
        password if settings.REDIS_SENTINEL_PASSWORD else {}
    )
