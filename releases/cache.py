"""The in-process release cache: how a resolve answers without touching the database.

Each web process keeps, per environment, every release as a ``ServedRelease`` snapshot. It learns
of changes at once through Redis pub/sub: a service publishes ``(environment, prompt, revision)``
after commit, and every process's listener thread reloads that one release when the revision is
newer than the one it holds.

Failure rules (DESIGN.md):

- Redis unset or down: the listener cannot vouch for the snapshots, so a lookup reads the release
  from the database (and refreshes its copy). When Redis is back, snapshots are reloaded whole,
  since messages may have been missed meanwhile.
- Database down: a lookup serves the copy it has and says so (``degraded``); the web answers with
  a header. A reconnect to Redis makes no copy current any more, but keeps them: they are the last
  known releases for as long as the database stays down. That includes a trusted copy whose reload failed: a change was announced (its
  revision is newer than the copy's) but could not be read, so the copy is known to be behind.
- Unknown environments are never stored, so callers naming environments at random cannot grow
  the cache.
- A message lost while connected (a publisher whose Redis call failed): the listener compares
  revisions with one narrow query every ``RELEASE_CACHE_CHECK_SECONDS``.

The listener starts lazily in each process (after a gunicorn fork too) and is a daemon thread.

Each process also writes a small status record to Redis from its listener (``releases.nodes``):
what it holds, whether it serves from memory and when it last confirmed its revisions, for the
admin's status page.

Metrics (config.metrics): lookups answered from memory (hits), reads from the database (loads, of
an environment or of one release), answers served from the copy while the database is down
(degraded), and when this process last read its revisions from the database. That time moves on
with every load and every periodic check (``RELEASE_CACHE_CHECK_SECONDS``), so on a healthy process
it is never older than the check's interval; it stops while the database cannot be read, or while
the listener is stuck, which is when the copy may fall behind.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, connections

from config.metrics import CACHE_CONFIRMED, CACHE_DEGRADED, CACHE_HITS, CACHE_LOADS
from config.redisclients import redis_client
from config.routers import DATABASE_OUTAGE, read_replica, replica_configured

from . import selectors
from .nodes import HeldEnvironment, NodeReporter, Serving
from .resolution import ServedRelease
from .snippets import ServedSnippets

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "promptregistry:changes:"
DATABASE_UNAVAILABLE = "database-unavailable"
# How long a new worker's warm waits for its listener to subscribe (``ReleaseCache.warm``).
WARM_LISTENER_SECONDS = 5.0
# Only an outage (``DATABASE_OUTAGE``: the database cannot be reached) is served from the copy
# held and said so; any other database error propagates as the bug it is.


# Bound once: a lookup's cost on the runtime path is a counter's increment, no label lookup.
_ENVIRONMENT_LOADS = CACHE_LOADS.labels(scope="environment")
_RELEASE_LOADS = CACHE_LOADS.labels(scope="release")


@dataclass(frozen=True, slots=True)
class Lookup:
    release: ServedRelease | None  # None: not released in that environment
    degraded: str = ""  # why the answer may be stale ("" when it is not)


def _redis_client() -> redis.Redis:
    return redis_client(socket_timeout=2, socket_connect_timeout=1, health_check_interval=10)


def channel() -> str:
    """This registry's pub/sub channel. Pub/sub ignores Redis's database number, so registries
    sharing one Redis (staging and production, two test runs) are told apart by their database."""
    database = settings.DATABASES["default"]
    return (
        f"{CHANNEL_PREFIX}{database.get('HOST', '')}:{database.get('PORT', '')}/{database['NAME']}"
    )


def publish(message: dict) -> None:
    """Tells every web process; a failure is logged, and the periodic check catches up."""
    if not settings.REDIS_URL:
        return
    client = _redis_client()
    try:
        client.publish(channel(), json.dumps(message))
    except redis.RedisError:
        logger.warning("Could not publish a change: kind=%s", message.get("kind"), exc_info=True)
    finally:
        client.close()


def release_changed(*, environment: str, prompt: str, revision: int) -> None:
    """Called after commit by every release change."""
    publish({"kind": "release", "environment": environment, "prompt": prompt, "revision": revision})
    # This process learns at once even before its own message comes back.
    release_cache().announce(environment, prompt, revision)


def served_snippets(release: ServedRelease) -> ServedSnippets:
    """What ``release``'s includes serve: pinned versions loaded with it, and for each include
    that follows, the snippet's release in the same environment as this cache holds it now (so a
    snippet's deploy or rollback reaches every prompt following it as soon as its own release
    change does; decision 0035)."""
    cache = release_cache()
    environment = release.environment
    return ServedSnippets(
        lookup=lambda key: cache.lookup(environment, key).release, pinned=release.pinned
    )


class ReleaseCache:
    def __init__(self, *, listen: bool = True) -> None:
        self._lock = threading.Lock()
        # Per environment, prompt key -> snapshot. Copy-on-write: readers never see a dict being
        # changed. Only the environments in ``_complete`` were loaded whole since the listener last
        # subscribed; the others hold the few releases an untrusted lookup read one by one.
        self._environments: dict[str, dict[str, ServedRelease]] = {}
        self._complete: set[str] = set()
        # Environments loaded whole at some time. After a reconnect their copies are no longer
        # current (messages may have been missed) but are kept: with the database down they are
        # the last known releases, served saying so, rather than nothing at all.
        self._whole: set[str] = set()
        # The newest revision announced per (environment, prompt): a snapshot older than this is
        # never served as current, which closes the race of a load that read the database just
        # before a change and finished just after its message, and tells a lookup that a reload
        # failed (the database was down) so that it says so.
        self._announced: dict[tuple[str, str], int] = {}
        # Bumped whenever every snapshot is dropped (a reconnect, ``clear``): a load that read the
        # database before the drop does not store what it read, since messages may have been
        # missed in between.
        self._generation = 0
        self._listen = listen
        self._healthy = False
        self._listener_pid: int | None = None
        self._stop = threading.Event()
        self._handlers: dict[str, list[Callable[[dict], None]]] = {}
        # For this process's status record (releases.nodes): when it last read its revisions from
        # the database and when its listener started (Unix time), and a count that moves with
        # every change to what it holds, so the record is rewritten soon after.
        self.confirmed_at: float | None = None
        self.listening_since: float | None = None
        self.changes = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether snapshots are kept fresh by the listener (else lookups read the database)."""
        self._ensure_listener()
        return self._healthy

    def lookup(self, environment: str, prompt: str) -> Lookup:
        """The release of ``prompt`` in ``environment``; on a warm, trusted cache no query runs."""
        if self.trusted:
            snapshot = (
                self._environments.get(environment) if environment in self._complete else None
            )
            held_in_memory = snapshot is not None
            if snapshot is None:
                try:
                    snapshot = self._load_environment(environment)
                except DATABASE_OUTAGE:
                    logger.warning(
                        "Database unavailable loading env=%s", environment, exc_info=True
                    )
                    return _stale(self._environments.get(environment, {}).get(prompt))
                if snapshot is None:
                    return Lookup(None)  # no such environment
            held = snapshot.get(prompt)
            if not self._behind(environment, prompt, held):
                if held_in_memory:
                    CACHE_HITS.inc()
                return Lookup(held)
            # A newer revision was announced but its reload failed: try again below.
        try:
            return Lookup(self._load_release(environment, prompt))
        except DATABASE_OUTAGE:
            logger.warning(
                "Database unavailable: serving cached env=%s prompt=%s",
                environment,
                prompt,
                exc_info=True,
            )
            return _stale(self._environments.get(environment, {}).get(prompt))

    def environment(self, environment: str) -> tuple[dict[str, ServedRelease] | None, str]:
        """Every release of an environment (the bundle), and why it may be stale.

        ``None`` with no reason: there is no such environment. ``None`` with a reason: the
        database is down and this process never loaded that environment whole."""
        if self.trusted:
            snapshot = (
                self._environments.get(environment) if environment in self._complete else None
            )
            if snapshot is not None:
                try:
                    for prompt in self._behind_in(environment):
                        self._load_release(environment, prompt)
                except DATABASE_OUTAGE:
                    logger.warning(
                        "Database unavailable: serving cached env=%s", environment, exc_info=True
                    )
                    CACHE_DEGRADED.inc()
                    return self._environments.get(environment, snapshot), DATABASE_UNAVAILABLE
                CACHE_HITS.inc()
                return self._environments.get(environment, snapshot), ""
        try:
            return self._load_environment(environment), ""
        except DATABASE_OUTAGE:
            logger.warning(
                "Database unavailable: serving cached env=%s", environment, exc_info=True
            )
            if environment in self._whole:
                CACHE_DEGRADED.inc()
                return self._environments.get(environment), DATABASE_UNAVAILABLE
            return None, DATABASE_UNAVAILABLE

    def warm(self, *, seconds: float) -> list[str]:
        """Loads every environment whole, so that a worker that has just started (or replaced
        one gunicorn recycled) answers its first requests from memory: loading a registry of
        10,000 prompts takes seconds, which its first callers would otherwise wait. At most about
        ``seconds`` (an environment begun is finished; the rest load on first use). Nothing
        without a listener (none configured, or none subscribed within
        ``WARM_LISTENER_SECONDS``), whose absence means every lookup reads the database anyway,
        and nothing more once the database is down. Returns the environments loaded."""
        deadline = time.monotonic() + seconds
        loaded: list[str] = []
        if not self._listen or not settings.REDIS_URL:
            return loaded
        # The listener gets a few seconds to subscribe (a slow Redis): a worker is not held back
        # longer for a copy that Redis being away would leave unused anyway.
        listening = min(deadline, time.monotonic() + WARM_LISTENER_SECONDS)
        while not self.trusted:
            if time.monotonic() >= listening:
                logger.warning("Release cache not warmed: its listener did not subscribe")
                return loaded
            time.sleep(0.05)
        try:
            names = list(selectors.environment_list().values_list("name", flat=True))
            for name in names:
                if time.monotonic() >= deadline:
                    break
                if name not in self._complete and self._load_environment(name) is not None:
                    loaded.append(name)
        except DATABASE_OUTAGE:
            logger.warning("Database unavailable warming the release cache", exc_info=True)
        return loaded

    @property
    def serving(self) -> Serving:
        """From memory while the listener vouches for the snapshots, else from the database;
        unlike ``trusted``, never starts the listener."""
        listening = self._healthy and self._listener_pid == os.getpid()
        return Serving.MEMORY if listening else Serving.DATABASE

    def held_environments(self) -> dict[str, HeldEnvironment]:
        """Per environment held whole: how many releases, and the sum of their revisions."""
        held = {}
        for environment in sorted(self._complete):
            releases = self._environments.get(environment, {}).values()
            held[environment] = HeldEnvironment(len(releases), sum(r.revision for r in releases))
        return held

    def _behind(self, environment: str, prompt: str, held: ServedRelease | None) -> bool:
        announced = self._announced.get((environment, prompt))
        return announced is not None and (held is None or held.revision < announced)

    def _behind_in(self, environment: str) -> list[str]:
        held = self._environments.get(environment, {})
        with self._lock:
            announced = [(p, r) for (e, p), r in self._announced.items() if e == environment]
        return [p for p, r in announced if p not in held or held[p].revision < r]

    # -- loading ---------------------------------------------------------------------------

    def _load_environment(self, environment: str) -> dict[str, ServedRelease] | None:
        generation = self._generation
        loaded = self._read_environment(environment)
        _ENVIRONMENT_LOADS.inc()
        self._confirmed()
        # Unknown environments are never stored: a caller naming environments at random must not
        # grow this cache (or the periodic check).
        if not loaded and not selectors.environment_exists(name=environment):
            return None
        with self._lock:
            if generation != self._generation:
                return loaded  # every snapshot was dropped meanwhile: serve it, keep nothing
            merged = dict(self._environments.get(environment, {}))
            for key, release in loaded.items():
                held = merged.get(key)
                # A one-release load that finished while we read may hold a newer revision.
                if held is None or held.revision <= release.revision:
                    merged[key] = release
            self._environments[environment] = merged
            self._complete.add(environment)
            self._whole.add(environment)
            self.changes += 1
        # Changed while we read: those few are reloaded one by one.
        for key in self._behind_in(environment):
            self._load_release(environment, key)
        return self._environments.get(environment, merged)

    def _read_environment(self, environment: str) -> dict[str, ServedRelease]:
        """Every release of the environment, from the replica when there is one.

        A replica's lag can hide a change committed before the listener subscribed, which no
        message will announce, so the replica's load is not enough on its own: the primary first
        says the revisions (one narrow query, read after subscribing, so it holds every such
        change), and each release the replica shows older than that is noted as announced. The
        load's caller then reads those few again (``_load_release``), as it does for changes
        announced while it read."""
        if not replica_configured():
            return {r.prompt: r for r in selectors.served_releases(environment=environment)}
        revisions = selectors.release_revisions(environment=environment)
        if not revisions:
            return {}  # releases are never deleted: none on the primary, none to load
        loaded = read_replica(
            lambda: {r.prompt: r for r in selectors.served_releases(environment=environment)}
        )
        with self._lock:
            for prompt, revision in revisions.items():
                held = loaded.get(prompt)
                if held is None or held.revision < revision:
                    key = (environment, prompt)
                    self._announced[key] = max(revision, self._announced.get(key, 0))
        return loaded

    def _load_release(self, environment: str, prompt: str) -> ServedRelease | None:
        """Reads one release and stores it unless the copy held is newer; returns the newer.

        From the replica when there is one, unless it shows the release older than a revision
        this process was told of (its lag): then from the primary, so a lagging replica never
        makes a process serve what it knows to be out of date."""
        generation = self._generation
        announced = self._announced.get((environment, prompt))
        found = read_replica(
            lambda: selectors.served_releases(environment=environment, prompt=prompt),
            current=lambda found: (
                announced is None or (bool(found) and found[0].revision >= announced)
            ),
        )
        _RELEASE_LOADS.inc()
        self._confirmed()
        release = found[0] if found else None
        with self._lock:
            held = self._environments.get(environment, {}).get(prompt)
            # Releases are never deleted: a reader that does not see one (yet) keeps the copy.
            if release is None or (held is not None and held.revision > release.revision):
                return held
            if generation == self._generation:
                snapshot = dict(self._environments.get(environment, {}))
                snapshot[prompt] = release
                self._environments[environment] = snapshot
                self.changes += 1
        return release

    def announce(self, environment: str, prompt: str, revision: int) -> None:
        """A release changed: reload it if this process holds that environment whole."""
        with self._lock:
            key = (environment, prompt)
            self._announced[key] = max(revision, self._announced.get(key, 0))
            held = self._environments.get(environment, {}).get(prompt)
            stale = environment in self._complete and self._behind(environment, prompt, held)
        if stale:
            try:
                self._load_release(environment, prompt)
            except DatabaseError:
                # Lookups see that the copy is behind its announced revision, try again and,
                # while the database stays down, serve the copy saying so.
                logger.warning(
                    "Could not reload env=%s prompt=%s", environment, prompt, exc_info=True
                )

    def clear(self) -> None:
        with self._lock:
            self._environments = {}
            self._complete = set()
            self._whole = set()
            self._announced = {}
            self._generation += 1
            self.changes += 1

    # -- listening -------------------------------------------------------------------------

    def on(self, kind: str, handler: Callable[[dict], None]) -> None:
        """Registers a handler for another kind of change message (API keys, for the api app).

        Each (re)connection also calls it with ``{"kind": kind, "resync": True}``: messages may
        have been missed while the listener was not subscribed."""
        self._handlers.setdefault(kind, []).append(handler)

    def _ensure_listener(self) -> None:
        # Asked twice per resolve: the listener already running in this process answers first,
        # before the settings are read. (``stop`` clears the pid, so a stopped cache falls through
        # to ``_listen``.)
        if self._listener_pid == os.getpid() or not self._listen or not settings.REDIS_URL:
            return
        with self._lock:
            if not self._listen or self._listener_pid == os.getpid():
                return
            self._listener_pid = os.getpid()
            self._healthy = False
            self.listening_since = time.time()
            # One stop event per thread: a stopped thread never comes back to life.
            stop = self._stop = threading.Event()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._listen_forever,
            args=(ready, stop),
            name="release-cache-listener",
            daemon=True,
        )
        thread.start()
        # Wait briefly for the subscription so the first requests are already served from memory.
        ready.wait(timeout=1.0)

    def stop(self) -> None:
        """Stops listening for good: from now on every lookup reads the database."""
        with self._lock:
            self._listen = False
            self._stop.set()
            self._listener_pid = None
            self._healthy = False

    def _listen_forever(self, ready: threading.Event, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                self._listen_once(ready, stop)
                backoff = 0.5
            except (redis.RedisError, OSError):
                logger.warning(
                    "Release listener lost Redis; reading the database meanwhile", exc_info=True
                )
            except Exception:
                # Anything else (a bug, a read racing a schema change) must not end this
                # process's freshness for good: log it and subscribe again, dropping snapshots.
                logger.exception("Release listener failed; subscribing again")
            finally:
                self._healthy = False
                connections.close_all()  # this thread's own connections
            ready.set()
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _listen_once(self, ready: threading.Event, stop: threading.Event) -> None:
        # The client is held for the whole subscription: a throwaway one would be collected,
        # closing its pool, and the subscription would silently drop until the next reconnect.
        client = _redis_client()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel())
            pubsub.get_message(timeout=1.0)  # the subscribe confirmation
            # Messages may have been missed while not subscribed: no snapshot is current any
            # more. They are kept only as the last known copies for when the database is down.
            with self._lock:
                self._complete = set()
                self._generation += 1
                self.changes += 1
            for kind, handlers in self._handlers.items():
                for handler in handlers:
                    self._call(handler, {"kind": kind, "resync": True})
            self._healthy = not stop.is_set()
            ready.set()
            next_check = time.monotonic() + settings.RELEASE_CACHE_CHECK_SECONDS
            reporter = NodeReporter(self)  # writes at once: a new subscription is news
            while not stop.is_set():
                reporter.tick(client)
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
                if time.monotonic() >= next_check:
                    self._check_revisions()
                    next_check = time.monotonic() + settings.RELEASE_CACHE_CHECK_SECONDS
        finally:
            pubsub.close()
            client.close()

    def _dispatch(self, message: dict) -> None:
        """One pub/sub message. Anything malformed is logged and skipped: a bad message must
        not kill the listener (and with it every process's freshness)."""
        try:
            data = json.loads(message["data"])
        except (ValueError, TypeError, KeyError):
            logger.warning("Ignoring a malformed change message")
            return
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str):
            logger.warning("Ignoring a change message without a kind")
            return
        try:
            if kind == "release":
                environment, prompt = data.get("environment"), data.get("prompt")
                revision = data.get("revision")
                if (
                    not isinstance(environment, str)
                    or not isinstance(prompt, str)
                    or type(revision) is not int
                ):
                    logger.warning("Ignoring a malformed release message")
                    return
                self.announce(environment, prompt, revision)
            for handler in self._handlers.get(kind, []):
                self._call(handler, data)
        finally:
            connections.close_all()

    @staticmethod
    def _call(handler: Callable[[dict], None], data: dict) -> None:
        try:
            handler(data)
        except Exception:
            # A handler's bug must not stop the listener; it is logged with its traceback.
            logger.exception("Change handler failed: kind=%s", data.get("kind"))

    def _check_revisions(self) -> None:
        try:
            for environment in list(self._complete):
                revisions = selectors.release_revisions(environment=environment)
                held = self._environments.get(environment, {})
                for prompt, revision in revisions.items():
                    if prompt not in held or held[prompt].revision < revision:
                        self.announce(environment, prompt, revision)
            self._confirmed()
        except DatabaseError:
            logger.warning("Could not check release revisions", exc_info=True)
        finally:
            connections.close_all()

    def _confirmed(self) -> None:
        """The revisions were just read from the database."""
        self.confirmed_at = time.time()
        CACHE_CONFIRMED.set(self.confirmed_at)


def _stale(held: ServedRelease | None) -> Lookup:
    """The database is down: the copy held (None: no copy, which the caller answers 503)."""
    if held is not None:
        CACHE_DEGRADED.inc()
    return Lookup(held, DATABASE_UNAVAILABLE)


_cache: ReleaseCache | None = None


def release_cache() -> ReleaseCache:
    global _cache
    if _cache is None:
        _cache = ReleaseCache()
    return _cache
