"""The release streams of one ASGI process: one Redis subscription, fanned out in memory.

Every stream the process holds (``api.stream`` on its ASGI path) follows a ``Feed``: the
environment's revisions as this process knows them, and a short history of the changes, each
with the ``id`` it is sent under. The ``StreamHub`` keeps the feeds current, for every stream at
once:

- With Redis, one ``redis.asyncio`` subscription to the release cache's channel (the messages
  ``releases.cache.release_changed`` publishes). Each message about a followed environment is
  applied to its feed once, and wakes the streams of that feed: the event's bytes are encoded
  once and written to every client. No thread, no connection, no query per client.
- Subscribing, and subscribing again after Redis failed, reads each feed's revisions from the
  database (messages may have been missed meanwhile); so does a check every
  ``RELEASE_CACHE_CHECK_SECONDS``, in case a publisher's message was lost.
- Without Redis, or while it is down, the revisions of every followed environment are read from
  the database every ``STREAM_CHECK_SECONDS`` (one query per environment, not per client), and
  Redis is tried again with a back-off from 0.5 s up to 10 s.

An event's ``id`` is the bundle's ETag after that change (``api.runtime.revisions_etag``, the
``hello``'s ``etag``): a function of the revisions alone, so every process names the same state
alike. A client reconnecting with ``Last-Event-ID`` gets, after its ``hello``, the changes made
since that state, if this process's history still holds it (``resumed: true``); otherwise the
hello says ``resumed: false`` and the client fetches the bundle, as it does when the hello's etag
is not its own.

The hub belongs to the event loop it started on (uvicorn runs one per process); it starts with
the first stream and its database reads run in the loop's executor threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection

from config.redisclients import async_redis_client
from releases.cache import DATABASE_OUTAGE, channel
from releases.selectors import release_revisions

from .fastpath import sse
from .runtime import revisions_etag

logger = logging.getLogger(__name__)

STREAM_CHECK_SECONDS = 1.0  # the database check's period while there is no subscription
HISTORY = 1024  # changes kept per environment, for clients resuming with Last-Event-ID
REDIS_BACKOFF = (0.5, 10.0)  # the first and the longest wait before subscribing again


@dataclass(frozen=True, slots=True)
class Change:
    seq: int  # this feed's count of changes, for the streams' cursors
    prompt: str
    revision: int
    event_id: str  # the bundle's ETag after this change
    event: bytes  # the server-sent event, encoded once for every client


class Feed:
    """One environment's revisions and recent changes, shared by every stream following it."""

    def __init__(self, environment: str) -> None:
        self.environment = environment
        self.revisions: dict[str, int] = {}
        self.etag = revisions_etag(environment, {})
        self.seq = 0
        self.history: deque[Change] = deque(maxlen=HISTORY)
        self._seq_of_etag: dict[str, int] = {}
        self.wakeup = asyncio.Event()
        self.streams = 0
        self.started = False  # holds its first revisions (from then on, each newer one is a change)
        self.loaded = False  # revisions read from the database since the last (re)subscription
        self.loading: asyncio.Lock = asyncio.Lock()

    def apply(self, prompt: str, revision: int) -> bool:
        """Records a change newer than the revision held; returns whether it was one."""
        if revision <= self.revisions.get(prompt, 0):
            return False
        self.revisions[prompt] = revision
        self.seq += 1
        self.etag = revisions_etag(self.environment, self.revisions)
        if len(self.history) == HISTORY:
            self._seq_of_etag.pop(self.history[0].event_id, None)
        event = sse("release", {"prompt": prompt, "revision": revision}, event_id=self.etag)
        self.history.append(Change(self.seq, prompt, revision, self.etag, event))
        self._seq_of_etag[self.etag] = self.seq
        return True

    def merge(self, revisions: Mapping[str, int]) -> bool:
        """Applies every revision newer than the one held (a database read); whether any was.
        A feed's first revisions are its starting point, not changes: no history, one ETag."""
        if not self.started:
            self.started = True
            self.revisions = dict(revisions)
            self.etag = revisions_etag(self.environment, self.revisions)
            self._seq_of_etag[self.etag] = self.seq  # a hello's id: resumable as any event's
            return False
        changed = False
        for prompt, revision in sorted(revisions.items()):
            changed = self.apply(prompt, revision) or changed
        return changed

    def wake(self) -> None:
        """Wakes every stream waiting on this feed (each then reads the history from its cursor)."""
        woken, self.wakeup = self.wakeup, asyncio.Event()
        woken.set()

    def since(self, seq: int) -> list[Change] | None:
        """The changes after ``seq``, or None when the history no longer reaches back there."""
        if seq >= self.seq:
            return []
        if not self.history or self.history[0].seq > seq + 1:
            return None
        start = seq + 1 - self.history[0].seq
        return [self.history[i] for i in range(start, len(self.history))]

    def seq_of(self, etag: str) -> int | None:
        """Where the state named ``etag`` is in this feed's history (None: unknown here)."""
        if etag == self.etag:
            return self.seq
        return self._seq_of_etag.get(etag)


class StreamHub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.feeds: dict[str, Feed] = {}
        self.live = False  # subscribed: changes arrive as Redis messages
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    # -- streams ----------------------------------------------------------------------------

    async def follow(self, environment: str, known: Mapping[str, int]) -> Feed:
        """The environment's feed, with its revisions read, counting one more stream on it.
        ``known``: the revisions the caller found (the release cache's copy), which stand when
        the database cannot be read."""
        self._start()
        feed = self.feeds.get(environment)
        if feed is None:
            feed = self.feeds[environment] = Feed(environment)
        feed.streams += 1
        if feed.merge(known):
            feed.wake()
        try:
            if not feed.loaded:
                if settings.REDIS_URL and not self.live:
                    # Subscribe before reading, so a change in between is heard, not lost.
                    try:
                        async with asyncio.timeout(1.0):
                            await self._subscribed.wait()
                    except TimeoutError:
                        pass  # Redis is down: the database check keeps the feed current
                async with feed.loading:
                    if not feed.loaded:
                        await self._load(feed)
        except BaseException:
            self.leave(feed)
            raise
        return feed

    def leave(self, feed: Feed) -> None:
        # The feed stays, kept current, when its last stream leaves: a client reconnecting finds
        # the history it resumes from. Feeds are only made for environments that exist (the view
        # answered 404 to any other), so there are never more than the registry has.
        feed.streams -= 1

    async def _load(self, feed: Feed) -> None:
        revisions = await _read_revisions(feed.environment)
        if revisions is None:
            return  # the database is down: the stream starts from what the caller found
        if feed.merge(revisions):
            feed.wake()
        feed.loaded = True

    # -- keeping feeds current --------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run(), name="release-stream-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = REDIS_BACKOFF[0]
        while True:
            if not settings.REDIS_URL:
                await self._check()
                await asyncio.sleep(STREAM_CHECK_SECONDS)
                continue
            try:
                await self._listen()
            except (redis.RedisError, OSError):
                logger.warning(
                    "Release streams lost Redis; checking the database meanwhile", exc_info=True
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not end every stream's freshness: log it and subscribe again.
                logger.exception("Release stream hub failed; subscribing again")
            finally:
                if self._subscribed.is_set():
                    backoff = REDIS_BACKOFF[0]  # it was up: the outage starts now
                self.live = False
                self._subscribed.clear()
            # Until the next attempt, the database vouches for the feeds, every second.
            until = self.loop.time() + backoff
            while (left := until - self.loop.time()) > 0:
                await self._check()
                await asyncio.sleep(min(STREAM_CHECK_SECONDS, left))
            backoff = min(backoff * 2, REDIS_BACKOFF[1])

    async def _listen(self) -> None:
        client = async_redis_client(
            socket_timeout=5, socket_connect_timeout=1, health_check_interval=10
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel())
            await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
            self.live = True
            self._subscribed.set()
            # Messages may have been missed while not subscribed: every feed is read again.
            for feed in list(self.feeds.values()):
                feed.loaded = False
            await self._check()
            next_check = self.loop.time() + settings.RELEASE_CACHE_CHECK_SECONDS
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
                if self.loop.time() >= next_check:
                    await self._check()
                    next_check = self.loop.time() + settings.RELEASE_CACHE_CHECK_SECONDS
        finally:
            await pubsub.aclose()
            await client.aclose()

    def _dispatch(self, message: dict) -> None:
        change = release_message(message)
        if change is None:
            return
        environment, prompt, revision = change
        feed = self.feeds.get(environment)
        if feed is not None and feed.apply(prompt, revision):
            feed.wake()

    async def _check(self) -> None:
        """Reads the revisions of every followed environment and applies what is newer."""
        for feed in list(self.feeds.values()):
            await self._load(feed)


def release_message(message: dict | None) -> tuple[str, str, int] | None:
    """``(environment, prompt, revision)`` from a pub/sub message in the shape
    ``releases.cache.release_changed`` publishes; anything else, or malformed, is None."""
    if message is None:
        return None
    try:
        data = json.loads(message["data"])
    except (ValueError, TypeError, KeyError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("kind") != "release"
        or not isinstance(data.get("environment"), str)
        or not isinstance(data.get("prompt"), str)
        or type(data.get("revision")) is not int
    ):
        return None
    return data["environment"], data["prompt"], data["revision"]


async def _read_revisions(environment: str) -> dict[str, int] | None:
    # In an executor thread, as api.stream's connect check (it says why not sync_to_async).
    return await asyncio.get_running_loop().run_in_executor(None, read_revisions, environment)


def read_revisions(environment: str) -> dict[str, int] | None:
    """The environment's revisions from the database, or None when it is down. The connection is
    closed after: a stream process reads rarely and holds no idle connection."""
    try:
        return release_revisions(environment=environment)
    except DATABASE_OUTAGE:
        logger.warning(
            "Release streams could not read revisions: env=%s", environment, exc_info=True
        )
        return None
    finally:
        if not connection.in_atomic_block:
            connection.close()


_hub: StreamHub | None = None


def stream_hub() -> StreamHub:
    """This event loop's hub (uvicorn runs one loop per process)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = StreamHub(loop)
    return _hub
