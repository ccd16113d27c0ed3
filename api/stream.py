"""``GET /api/v1/environments/{environment}/stream``: release changes as server-sent events, so
SDKs apply a rollback within a second instead of at their next poll. A plain view on the runtime
path, like resolve and bundle (``api.fastpath``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse

from releases.cache import DATABASE_OUTAGE, channel, release_cache
from releases.selectors import release_revisions
from runs.provider_cache import provider_cache

from .fastpath import (
    KEEPALIVE,
    STREAM_KEEPALIVE_SECONDS,
    allow_environment,
    authenticate,
    cached_environment,
    event_stream,
    runtime_view,
    sse,
)
from .runtime import revisions_etag

logger = logging.getLogger(__name__)


STREAM_CHECK_SECONDS = 1.0


@runtime_view("GET")
def stream_view(request: HttpRequest, environment: str) -> HttpResponse:
    """``GET /api/v1/environments/{environment}/stream``: release changes as server-sent events."""
    allow_environment(authenticate(request), environment)
    cached_environment(environment)  # an unknown environment is a 404, not an empty stream
    return event_stream(_release_events(environment))


def _release_events(environment: str) -> Iterator[bytes]:
    """``hello`` ``{environment, etag}`` (the bundle's ETag now), then ``release``
    ``{prompt, revision}`` per change, ``: keep-alive`` comments, and the end after
    ``RELEASE_STREAM_MAX_SECONDS`` (the client reconnects, and a sync worker is freed).

    1. Subscribe first, then read the revisions: a change in between is heard, not lost.
    2. With Redis, each message about this environment is a change. Without Redis, or once the
       subscription fails, the revisions are compared with the database every second.
    3. ``revisions`` holds the hello's revisions plus every change sent, so each newer revision is
       sent once, however it was learnt (a message, or the database after Redis failed)."""
    started = time.monotonic()
    ends_at = started + settings.RELEASE_STREAM_MAX_SECONDS
    keepalive_at = started + STREAM_KEEPALIVE_SECONDS
    client = _redis_client() if settings.REDIS_URL else None
    subscription = _subscribe(client) if client is not None else None
    try:
        revisions = _revisions(environment)
        if revisions is None:  # the database is down: the copy the bundle serves
            held, _ = release_cache().environment(environment)
            revisions = {key: r.revision for key, r in (held or {}).items()}
        _release_connection()
        yield sse(
            "hello",
            {
                "environment": environment,
                "etag": revisions_etag(environment, revisions, provider_cache.strict_outputs()),
            },
        )
        check_at = started + STREAM_CHECK_SECONDS
        while (now := time.monotonic()) < ends_at:
            if now >= keepalive_at:
                yield KEEPALIVE
                keepalive_at = now + STREAM_KEEPALIVE_SECONDS
            wait = max(0.0, min(ends_at, keepalive_at, now + STREAM_CHECK_SECONDS) - now)
            changes: list[tuple[str, int]] = []
            if subscription is not None:
                try:
                    changes = _release_message(subscription.get_message(timeout=wait), environment)
                except (redis.RedisError, OSError):
                    logger.warning(
                        "Release stream lost Redis: env=%s; checking the database instead",
                        environment,
                        exc_info=True,
                    )
                    subscription.close()
                    subscription = None
                    check_at = now  # messages may have been missed: check at once
            else:
                if check_at > now:
                    time.sleep(min(wait, check_at - now))
                if time.monotonic() >= check_at:
                    current = _revisions(environment)
                    _release_connection()
                    check_at = time.monotonic() + STREAM_CHECK_SECONDS
                    changes = sorted((current or {}).items())
            for prompt, revision in changes:
                if revision > revisions.get(prompt, 0):
                    revisions[prompt] = revision
                    yield sse("release", {"prompt": prompt, "revision": revision})
    finally:
        if subscription is not None:
            subscription.close()
        if client is not None:
            client.close()


def _redis_client() -> redis.Redis:
    # Kept open as long as the subscription: closing (or collecting) the client disconnects its
    # pool, the subscription's connection included.
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=1, health_check_interval=10
    )


def _subscribe(client: redis.Redis) -> redis.client.PubSub | None:
    """A subscription to the release cache's channel, confirmed by Redis (so a change published
    from now on is heard), or None when Redis is down: the stream then checks the database."""
    subscription = client.pubsub(ignore_subscribe_messages=True)
    try:
        subscription.subscribe(channel())
        subscription.get_message(timeout=1.0)  # reads the confirmation
    except (redis.RedisError, OSError):
        logger.warning("Release stream could not subscribe; checking the database", exc_info=True)
        subscription.close()
        return None
    return subscription


def _revisions(environment: str) -> dict[str, int] | None:
    try:
        return release_revisions(environment=environment)
    except DATABASE_OUTAGE:
        logger.warning(
            "Release stream could not read revisions: env=%s", environment, exc_info=True
        )
        return None


def _release_connection() -> None:
    """A stream lasts minutes and reads the database at most once a second: it holds no
    connection while it waits (with many SDKs following, idle connections would pile up). Inside
    a transaction (a test's) the connection is left alone."""
    if not connection.in_atomic_block:
        connection.close()


def _release_message(message: dict | None, environment: str) -> list[tuple[str, int]]:
    """The change a pub/sub message announces for ``environment`` (the shape
    ``releases.cache.release_changed`` publishes); anything else, or malformed, is none."""
    if message is None:
        return []
    try:
        data = json.loads(message["data"])
    except (ValueError, TypeError, KeyError):
        return []
    if (
        not isinstance(data, dict)
        or data.get("kind") != "release"
        or data.get("environment") != environment
        or not isinstance(data.get("prompt"), str)
        or type(data.get("revision")) is not int
    ):
        return []
    return [(data["prompt"], data["revision"])]
