"""Readiness: whether this process can serve traffic now (``/readyz``, ``config.views``), and the
worker heartbeat it reports.

Five checks (six with a replica), each bounded by a short timeout, each answered as a status and little else (no
hostname, version or error text: the answer is public; the log says why):

1. ``database``: a connection and ``SELECT 1``, on a thread of its own (``DatabaseProbe``), waited
   for at most ``READYZ_TIMEOUT_SECONDS``. Failing: 503.
2. ``migrations``: no migration left unapplied, read with Django's migration executor. Failing
   (a deploy whose migrations have not run yet): 503. Migrations are applied at deploy and never
   undone under a running process, so once true the answer is kept for the process's life.
3. ``redis``: one round trip (Redis's clock and the heartbeat), with a short timeout. Down is
   degraded, never failing: the registry serves from the database meanwhile (DESIGN.md, "Failure
   rules"). Without ``REDIS_URL`` the mode is ``embedded``.
4. ``release_cache``: ``memory`` while the listener is subscribed (a resolve reads no database),
   ``database`` while it is not (every lookup reads the database: degraded with Redis configured,
   the normal case without).
5. ``worker``: how long ago a worker last ran the heartbeat task that beat queues every
   ``WORKER_HEARTBEAT_SECONDS``, on Redis's clock; past ``WORKER_HEARTBEAT_STALE_SECONDS``, or
   never, it is degraded: shadows, eval runs and canary analyses wait, live traffic does not.
   Without ``REDIS_URL`` tasks run in-process: ``embedded``.
6. ``replica``, only with ``DATABASE_REPLICA_URL``: the database check on the replica (no
   migrations), on its own thread, within the same deadline. Down is degraded, never failing: its
   reads go to the primary meanwhile (``config.routers``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from redis.backoff import NoBackoff
from redis.retry import Retry

from .redisclients import redis_client
from .routers import REPLICA, replica_failed, replica_recovered

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "promptregistry:worker-heartbeat"
# A probe must answer within its own timeout: Redis gets a fraction of it, with no retries, as
# the rate limiter's client does (api.ratelimit).
REDIS_TIMEOUT_SECONDS = 0.5


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # serving, with less (slower reads, shadows waiting): still ready
    FAILING = "failing"  # cannot serve: not ready


Check = dict[str, Any]  # {"status": ..., and "mode" or "heartbeat_age_seconds" where they apply}


def check(status: Status, **fields: Any) -> Check:
    return {"status": str(status), **fields}


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(c["status"] != Status.FAILING for c in self.checks.values())


def readiness() -> Readiness:
    """Every check. The database's runs meanwhile on its own thread, so a probe takes about as
    long as its slowest check: the database's is waited for until ``READYZ_TIMEOUT_SECONDS``
    after the start, Redis's and the listener's take a second or so at worst."""
    deadline = time.monotonic() + settings.READYZ_TIMEOUT_SECONDS
    database = database_probe.start()
    replica = replica_probe.start() if REPLICA in connections.settings else None
    redis_check, worker = redis_checks()
    cache = release_cache_check()
    state = database_probe.wait(database, max(0.0, deadline - time.monotonic()))
    checks = {
        "database": check(Status.OK if state.reachable else Status.FAILING),
        "migrations": check(Status.OK if state.migrated else Status.FAILING),
        "redis": redis_check,
        "release_cache": cache,
        "worker": worker,
    }
    if replica is not None:
        checks["replica"] = replica_check(
            replica_probe.wait(replica, max(0.0, deadline - time.monotonic()))
        )
    return Readiness(checks)


# --- the database -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseState:
    reachable: bool
    migrated: bool


class DatabaseProbe:
    """Checks the database on a thread of its own, so that a probe waits for it at most
    ``READYZ_TIMEOUT_SECONDS`` whatever the database does: connecting is bounded by
    ``DATABASE_CONNECT_TIMEOUT``, a query on an open connection to a host gone from the network
    by ``DATABASE_DEAD_PEER_SECONDS``, but one to a server process that stopped answering on a
    live host has no client-side bound.

    One check at a time per process: a probe arriving while one is still running waits for
    that one (within its own timeout) instead of starting another, so a wedged database never
    piles up threads. Each check opens its connection and closes it after, as the release
    listener does: no idle connection is held per process for the probes' sake.

    ``alias``: the database checked (the primary, or the replica); ``migrations``: whether to
    check that its migrations were applied too (a replica replays the primary's).
    """

    def __init__(self, alias: str = DEFAULT_DB_ALIAS, *, migrations: bool = True) -> None:
        self.alias, self.migrations = alias, migrations
        self._lock = threading.Lock()
        self._running: Future[DatabaseState] | None = None
        self._pid = 0  # the process that started it: a forked worker starts its own
        self.migrated = False  # once true, kept

    def start(self) -> Future[DatabaseState]:
        with self._lock:
            running = self._running
            if running is None or running.done() or self._pid != os.getpid():
                running = self._running = Future()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._check, args=(running,), name=f"readyz-{self.alias}", daemon=True
                ).start()
            return running

    def wait(self, running: Future[DatabaseState], timeout: float) -> DatabaseState:
        try:
            return running.result(timeout=timeout)
        except FutureTimeout:
            logger.warning(
                "Readiness: database %s did not answer within %.1f s", self.alias, timeout
            )
        except DatabaseError:
            logger.warning("Readiness: database %s is unreachable", self.alias, exc_info=True)
        except Exception:
            logger.exception("Readiness: the check of database %s failed", self.alias)
        return DatabaseState(reachable=False, migrated=self.migrated)

    def reset(self) -> None:
        """Forget that the migrations were applied (tests)."""
        self.migrated = False

    def _check(self, result: Future[DatabaseState]) -> None:
        try:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            if self.migrations and not self.migrated:
                self.migrated = not migrations_pending()
            result.set_result(DatabaseState(reachable=True, migrated=self.migrated))
        except BaseException as exc:  # the waiting probe must always get its answer
            result.set_exception(exc)
        finally:
            connections.close_all()  # this thread's own connection


def migrations_pending() -> bool:
    """Whether a migration on disk is not applied to the database: a deploy that has not run
    ``migrate`` yet, or a process newer than its database."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


database_probe = DatabaseProbe()
replica_probe = DatabaseProbe(REPLICA, migrations=False)


def replica_check(state: DatabaseState) -> Check:
    """The replica (only with ``DATABASE_REPLICA_URL``): down is degraded, never failing, since
    its reads go to the primary meanwhile; and the router hears of it either way, so requests
    stop (or start again) trying it without waiting to find out themselves."""
    if state.reachable:
        replica_recovered()
        return check(Status.OK)
    replica_failed()
    return check(Status.DEGRADED)


# --- Redis, the release cache and the worker's heartbeat ---------------------------------------


def probe_client() -> redis.Redis:
    """A client with short timeouts and no retries (redis-py retries for seconds by default),
    kept per process: its pool keeps the connection open between probes. One per address the
    settings give (a test overriding them gets its own)."""
    return _probe_client(
        settings.REDIS_URL, tuple(settings.REDIS_SENTINELS), settings.REDIS_SENTINEL_PASSWORD
    )


@lru_cache(maxsize=4)
def _probe_client(*address: object) -> redis.Redis:
    return redis_client(
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


def redis_checks() -> tuple[Check, Check]:
    """The ``redis`` and ``worker`` checks, from one round trip: Redis's time and the last
    heartbeat."""
    if not settings.REDIS_URL:
        return check(Status.OK, mode="embedded"), check(Status.OK, mode="embedded")
    try:
        pipeline = probe_client().pipeline(transaction=False)
        (now, _), beat = pipeline.time().get(HEARTBEAT_KEY).execute()
    except (redis.RedisError, OSError):
        logger.warning("Readiness: Redis is unreachable; serving from the database", exc_info=True)
        unknown = check(Status.DEGRADED, mode="worker", heartbeat_age_seconds=None)
        return check(Status.DEGRADED, mode="redis"), unknown
    age = max(0, now - int(beat)) if beat is not None else None
    fresh = age is not None and age <= settings.WORKER_HEARTBEAT_STALE_SECONDS
    worker = check(
        Status.OK if fresh else Status.DEGRADED, mode="worker", heartbeat_age_seconds=age
    )
    return check(Status.OK, mode="redis"), worker


def heartbeat_record() -> None:
    """A worker ran the heartbeat task: note Redis's time (one clock for every host, so a web
    node whose clock runs ahead never sees a fresh heartbeat as stale)."""
    client = probe_client()
    seconds, _ = client.time()
    client.set(HEARTBEAT_KEY, seconds)


def release_cache_check() -> Check:
    # Imported here: config.celery imports this module before the apps are loaded.
    from releases.cache import release_cache

    # ``trusted`` starts this process's listener if it is not running yet, and waits at most a
    # second for it to subscribe: a probe before the first request warms it.
    if release_cache().trusted:
        return check(Status.OK, mode="memory")
    return check(Status.DEGRADED if settings.REDIS_URL else Status.OK, mode="database")
