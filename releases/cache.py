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
  a header.
- A message lost while connected (a publisher whose Redis call failed): the listener compares
  revisions with one narrow query every ``RELEASE_CACHE_CHECK_SECONDS``.

The listener starts lazily in each process (after a gunicorn fork too) and is a daemon thread.
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
from django.db import DatabaseError, close_old_connections

from .resolution import ServedRelease

logger = logging.getLogger(__name__)

CHANNEL = "promptregistry:changes"
DATABASE_UNAVAILABLE = "database-unavailable"


@dataclass(frozen=True, slots=True)
class Lookup:
    release: ServedRelease | None  # None: not released in that environment
    degraded: str = ""  # why the answer may be stale ("" when it is not)


def _redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=1, health_check_interval=10
    )


def publish(message: dict) -> None:
    """Tells every web process; a failure is logged, and the periodic check catches up."""
    if not settings.REDIS_URL:
        return
    try:
        _redis_client().publish(CHANNEL, json.dumps(message))
    except redis.RedisError:
        logger.warning("Could not publish a change: kind=%s", message.get("kind"), exc_info=True)


def release_changed(*, environment: str, prompt: str, revision: int) -> None:
    """Called after commit by every release change."""
    publish({"kind": "release", "environment": environment, "prompt": prompt, "revision": revision})
    # This process learns at once even before its own message comes back.
    release_cache().announce(environment, prompt, revision)


class ReleaseCache:
    def __init__(self, *, listen: bool = True) -> None:
        self._lock = threading.Lock()
        self._environments: dict[str, dict[str, ServedRelease]] = {}
        # The newest revision announced per (environment, prompt): a snapshot older than this is
        # never stored, which closes the race of a load that read the database just before a
        # change and finished just after its message.
        self._announced: dict[tuple[str, str], int] = {}
        self._listen = listen
        self._healthy = False
        self._listener_pid: int | None = None
        self._stop = threading.Event()
        self._handlers: dict[str, list[Callable[[dict], None]]] = {}

    # -- reading ---------------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether snapshots are kept fresh by the listener (else lookups read the database)."""
        self._ensure_listener()
        return self._healthy

    def lookup(self, environment: str, prompt: str) -> Lookup:
        if self.trusted:
            snapshot = self._environments.get(environment)
            if snapshot is not None:
                return Lookup(snapshot.get(prompt))
            try:
                return Lookup(self._load_environment(environment).get(prompt))
            except DatabaseError:
                logger.warning("Database unavailable loading env=%s", environment, exc_info=True)
                return Lookup(None, DATABASE_UNAVAILABLE)
        try:
            return Lookup(self._load_release(environment, prompt))
        except DatabaseError:
            logger.warning(
                "Database unavailable: serving cached env=%s prompt=%s",
                environment,
                prompt,
                exc_info=True,
            )
            return Lookup(self._environments.get(environment, {}).get(prompt), DATABASE_UNAVAILABLE)

    def environment(self, environment: str) -> tuple[dict[str, ServedRelease], str]:
        """Every release of an environment (the bundle), and why it may be stale."""
        if self.trusted and environment in self._environments:
            return self._environments[environment], ""
        try:
            return self._load_environment(environment), ""
        except DatabaseError:
            logger.warning(
                "Database unavailable: serving cached env=%s", environment, exc_info=True
            )
            return self._environments.get(environment, {}), DATABASE_UNAVAILABLE

    # -- loading ---------------------------------------------------------------------------

    def _load_environment(self, environment: str) -> dict[str, ServedRelease]:
        from .selectors import served_releases

        loaded = {r.prompt: r for r in served_releases(environment=environment)}
        with self._lock:
            self._environments[environment] = loaded
            # Changed while we read: those few are reloaded one by one.
            behind = [
                key
                for key, release in loaded.items()
                if release.revision < self._announced.get((environment, key), 0)
            ]
        for key in behind:
            self._load_release(environment, key)
        return self._environments[environment]

    def _load_release(self, environment: str, prompt: str) -> ServedRelease | None:
        from .selectors import served_releases

        found = served_releases(environment=environment, prompt=prompt)
        release = found[0] if found else None
        with self._lock:
            snapshot = dict(self._environments.get(environment, {}))
            if release is None:
                snapshot.pop(prompt, None)
            else:
                held = snapshot.get(prompt)
                if held is None or held.revision <= release.revision:
                    snapshot[prompt] = release
            # Copy-on-write: readers never see a dict being changed.
            self._environments[environment] = snapshot
        return release

    def announce(self, environment: str, prompt: str, revision: int) -> None:
        """A release changed: reload it if this process holds that environment."""
        with self._lock:
            key = (environment, prompt)
            self._announced[key] = max(revision, self._announced.get(key, 0))
            held = self._environments.get(environment)
            stale = held is not None and (prompt not in held or held[prompt].revision < revision)
        if stale:
            try:
                self._load_release(environment, prompt)
            except DatabaseError:
                logger.warning(
                    "Could not reload env=%s prompt=%s", environment, prompt, exc_info=True
                )

    def clear(self) -> None:
        with self._lock:
            self._environments = {}
            self._announced = {}

    # -- listening -------------------------------------------------------------------------

    def on(self, kind: str, handler: Callable[[dict], None]) -> None:
        """Registers a handler for another kind of change message (API keys, for the api app)."""
        self._handlers.setdefault(kind, []).append(handler)

    def _ensure_listener(self) -> None:
        if not self._listen or not settings.REDIS_URL or self._listener_pid == os.getpid():
            return
        with self._lock:
            if self._listener_pid == os.getpid():
                return
            self._listener_pid = os.getpid()
            self._healthy = False
            self._stop.clear()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._listen_forever, args=(ready,), name="release-cache-listener", daemon=True
        )
        thread.start()
        # Wait briefly for the subscription so the first requests are already served from memory.
        ready.wait(timeout=1.0)

    def stop(self) -> None:
        self._stop.set()
        self._listener_pid = None
        self._healthy = False

    def _listen_forever(self, ready: threading.Event) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen_once(ready)
                backoff = 0.5
            except (redis.RedisError, OSError):
                logger.warning(
                    "Release listener lost Redis; reading the database meanwhile", exc_info=True
                )
            finally:
                self._healthy = False
                close_old_connections()
            ready.set()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _listen_once(self, ready: threading.Event) -> None:
        pubsub = _redis_client().pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            pubsub.get_message(timeout=1.0)  # the subscribe confirmation
            # Messages may have been missed while not subscribed: drop every snapshot.
            with self._lock:
                self._environments = {}
            self._healthy = True
            ready.set()
            next_check = time.monotonic() + settings.RELEASE_CACHE_CHECK_SECONDS
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
                if time.monotonic() >= next_check:
                    self._check_revisions()
                    next_check = time.monotonic() + settings.RELEASE_CACHE_CHECK_SECONDS
        finally:
            pubsub.close()

    def _dispatch(self, message: dict) -> None:
        try:
            data = json.loads(message["data"])
        except (ValueError, TypeError, KeyError):
            logger.warning("Ignoring a malformed change message")
            return
        try:
            if data.get("kind") == "release":
                self.announce(data["environment"], data["prompt"], int(data["revision"]))
            for handler in self._handlers.get(data.get("kind", ""), []):
                handler(data)
        finally:
            close_old_connections()

    def _check_revisions(self) -> None:
        from .selectors import release_revisions

        for environment in list(self._environments):
            try:
                revisions = release_revisions(environment=environment)
            except DatabaseError:
                return
            held = self._environments.get(environment, {})
            for prompt, revision in revisions.items():
                if prompt not in held or held[prompt].revision < revision:
                    self.announce(environment, prompt, revision)
        close_old_connections()


_cache: ReleaseCache | None = None


def release_cache() -> ReleaseCache:
    global _cache
    if _cache is None:
        _cache = ReleaseCache()
    return _cache
