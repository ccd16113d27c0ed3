"""``GET /api/v1/environments/{environment}/stream``: release changes as server-sent events, so
SDKs apply a rollback within a second instead of at their next poll. A runtime-path view, like
resolve and bundle (``api.fastpath``), served two ways (decision 0029):

- Under ASGI (uvicorn, ``config.asgi``), the stream holds no worker and no thread: it is an
  async iterator on the process's event loop, fed by the process's one Redis subscription
  (``api.streamhub``), and resumes from ``Last-Event-ID``.
- Under WSGI (gunicorn, ``make run``'s development server, Django's test client), the thread
  serving the request holds the stream for its life, with its own subscription: it works, for a
  few clients.

Both take a slot (``api.streamlimits``) for their life, end after ``RELEASE_STREAM_MAX_SECONDS``
less up to a fifth at random, and end with a ``retry:`` hint drawn at random, so the clients of a
process do not all come back at the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse

from config.redisclients import redis_client
from releases.cache import channel, release_cache

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
from .streamhub import Change, Feed, StreamHub, read_revisions, release_message, stream_hub
from .streamlimits import Slot, retry_hint_seconds, slots

logger = logging.getLogger(__name__)


STREAM_CHECK_SECONDS = 1.0
LIFE_JITTER = 0.2  # a stream lives between 80 % and 100 % of RELEASE_STREAM_MAX_SECONDS


@runtime_view("GET")
async def stream_view(request: HttpRequest, environment: str) -> HttpResponse:
    """``GET /api/v1/environments/{environment}/stream``: release changes as server-sent events."""
    last_event_id = request.headers.get("Last-Event-ID", "")
    if not isinstance(request, ASGIRequest):
        # WSGI: the thread serving the request (the one Django called this view from) holds it.
        return await sync_to_async(_threaded_stream)(request, environment, last_event_id)
    # The key check may read the database (a key not seen yet) and asks Redis for a token: in an
    # executor thread, never on the event loop. Not through ``sync_to_async``, which would copy
    # the thread's context variables (Django's connection holders) back into this request's, to
    # be kept for the stream's life: a few KB per client.
    loop = asyncio.get_running_loop()
    slot, known = await loop.run_in_executor(None, _open, request, environment)
    try:
        hub = stream_hub()
        feed = await hub.follow(environment, known)
    except BaseException:
        slot.release()
        raise
    events = _hub_events(hub, feed, slot, last_event_id)
    response = event_stream(events)
    response.events = events  # written straight to the client by config.asgi.StreamHandler
    # The client's next stream comes on a new connection, which a load balancer may send to
    # another process (a stream ends to spread clients again). WSGI servers close it anyway, and
    # refuse hop-by-hop headers from the application.
    response["Connection"] = "close"
    return response


def _open(request: HttpRequest, environment: str) -> tuple[Slot, dict[str, int]]:
    """The refusals every stream shares (key, scope, environment, an unknown environment's 404,
    the limits), then the slot it holds and the revisions this process's release cache knows."""
    try:
        entry = authenticate(request)
        allow_environment(entry, environment)
        releases, _ = cached_environment(environment)
        return slots.take(entry.pk), {key: r.revision for key, r in releases.items()}
    finally:
        _release_connection()


def _threaded_stream(request: HttpRequest, environment: str, last_event_id: str) -> HttpResponse:
    slot, _ = _open(request, environment)
    response = event_stream(_release_events(environment, slot, last_event_id))
    # A stream whose first event was never asked for never runs its ``finally``.
    response._resource_closers.append(slot.release)
    return response


def lifetime() -> float:
    """This stream's life: the maximum less up to a fifth, drawn at random, so the streams a
    process opened together (after a restart) end spread out."""
    return settings.RELEASE_STREAM_MAX_SECONDS * random.uniform(1 - LIFE_JITTER, 1)


def retry_field() -> bytes:
    """The reconnect hint a stream ends with (milliseconds, drawn at random)."""
    return f"retry: {retry_hint_seconds() * 1000 - random.randrange(1000)}\n\n".encode()


def hello(environment: str, etag: str, last_event_id: str, resumed: bool) -> dict:
    """The ``hello``'s data: ``resumed`` only when the client sent ``Last-Event-ID``."""
    data: dict = {"environment": environment, "etag": etag}
    if last_event_id:
        data["resumed"] = resumed
    return data


async def _hub_events(
    hub: StreamHub, feed: Feed, slot: Slot, last_event_id: str
) -> AsyncIterator[bytes]:
    """The ASGI path's stream: what ``_release_events`` sends, read from the process's feed.

    It waits on the feed's wake-up (or its keep-alive, or its end), then sends every change after
    its cursor, encoded once for every stream. A stream that fell behind the feed's history (its
    client reads too slowly) is sent every revision the feed holds instead, which repeats what
    it has but misses nothing."""
    loop = asyncio.get_running_loop()
    try:
        cursor = feed.seq
        seen = feed.seq_of(last_event_id) if last_event_id else None
        # None: an id this process never saw, or one its history no longer reaches back to.
        replay: list[Change] | None = feed.since(seen) if seen is not None else None
        first = sse(
            "hello",
            hello(feed.environment, feed.etag, last_event_id, replay is not None),
            event_id="" if replay else feed.etag,
        )
        yield first + b"".join(change.event for change in replay or ())
        now = loop.time()
        ends_at = now + lifetime()
        keepalive_at = now + STREAM_KEEPALIVE_SECONDS
        while (now := loop.time()) < ends_at:
            if feed.seq == cursor:
                wakeup = feed.wakeup
                try:
                    async with asyncio.timeout(min(ends_at, keepalive_at) - now):
                        await wakeup.wait()
                except TimeoutError:
                    pass
            changes = feed.since(cursor)
            cursor = feed.seq
            chunk = b"".join(c.event for c in changes) if changes is not None else _every(feed)
            if loop.time() >= keepalive_at:
                chunk += KEEPALIVE
                keepalive_at = loop.time() + STREAM_KEEPALIVE_SECONDS
            if chunk:
                yield chunk
        yield retry_field()
    finally:
        hub.leave(feed)
        slot.release()


def _every(feed: Feed) -> bytes:
    prompts = sorted(feed.revisions)
    return b"".join(
        sse(
            "release",
            {"prompt": prompt, "revision": feed.revisions[prompt]},
            event_id=feed.etag if prompt == prompts[-1] else "",
        )
        for prompt in prompts
    )


def _release_events(environment: str, slot: Slot, last_event_id: str) -> Iterator[bytes]:
    """The WSGI path's stream: ``hello`` ``{environment, etag}`` (the bundle's ETag now), then
    ``release`` ``{prompt, revision}`` per change, ``: keep-alive`` comments, and the end after
    its life (the client reconnects, and the worker is freed).

    1. Subscribe first, then read the revisions: a change in between is heard, not lost.
    2. With Redis, each message about this environment is a change. Without Redis, or once the
       subscription fails, the revisions are compared with the database every second.
    3. ``revisions`` holds the hello's revisions plus every change sent, so each newer revision is
       sent once, however it was learnt (a message, or the database after Redis failed).
    4. This path keeps no history: a ``Last-Event-ID`` resumes only when it names the state now
       (nothing was missed); otherwise the hello says ``resumed: false`` (fetch the bundle)."""
    started = time.monotonic()
    ends_at = started + lifetime()
    keepalive_at = started + STREAM_KEEPALIVE_SECONDS
    client = _redis_client() if settings.REDIS_URL else None
    subscription = _subscribe(client) if client is not None else None
    try:
        revisions = read_revisions(environment)
        if revisions is None:  # the database is down: the copy the bundle serves
            held, _ = release_cache().environment(environment)
            revisions = {key: r.revision for key, r in (held or {}).items()}
        etag = revisions_etag(environment, revisions)
        yield sse(
            "hello", hello(environment, etag, last_event_id, etag == last_event_id), event_id=etag
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
                    current = read_revisions(environment)
                    check_at = time.monotonic() + STREAM_CHECK_SECONDS
                    changes = sorted((current or {}).items())
            for prompt, revision in changes:
                if revision > revisions.get(prompt, 0):
                    revisions[prompt] = revision
                    yield sse(
                        "release",
                        {"prompt": prompt, "revision": revision},
                        event_id=revisions_etag(environment, revisions),
                    )
        yield retry_field()
    finally:
        slot.release()
        if subscription is not None:
            subscription.close()
        if client is not None:
            client.close()


def _redis_client() -> redis.Redis:
    # Kept open as long as the subscription: closing (or collecting) the client disconnects its
    # pool, the subscription's connection included.
    return redis_client(socket_timeout=5, socket_connect_timeout=1, health_check_interval=10)


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


def _release_connection() -> None:
    """A stream lasts minutes and reads the database at most once a second: it holds no
    connection while it waits (with many SDKs following, idle connections would pile up). Inside
    a transaction (a test's) the connection is left alone."""
    if not connection.in_atomic_block:
        connection.close()


def _release_message(message: dict | None, environment: str) -> list[tuple[str, int]]:
    """The change a pub/sub message announces for ``environment``; anything else is none."""
    change = release_message(message)
    if change is None or change[0] != environment:
        return []
    return [change[1:]]
