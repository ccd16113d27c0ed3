"""What the admin's status page shows (``config.status_admin``), read in one place: every web
process's release cache, the worker heartbeat, the Celery queues, the shadow outbox, recent task
failures and each provider's health. Each app reads its own part (``releases.nodes``,
``releases.selectors``, ``runs.status``, ``evaluations.evalruns.selectors``); this module puts
them together and reads Redis.

Every read is bounded. Redis is asked through ``config.health``'s client (0.5 s timeouts, no
retries) in three round trips at most (the clock, the heartbeat and the queues in one pipeline;
then the processes' records in two), and after a first failure nothing more is asked of it, so a
Redis that refuses or hangs costs the page one timeout, and its sections say "unreachable". The
database is read in a fixed number of queries, each on an index and limited in rows (each
selector says how).

Without ``REDIS_URL`` (the embedded default of ``make run``) processes share nothing: the page
shows the process answering it, and says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

import redis
from django.conf import settings
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel

from evaluations.evalruns.selectors import eval_run_failures
from evaluations.models import EvalRun
from releases.cache import release_cache
from releases.nodes import (
    SILENT_AFTER_SECONDS,
    HeldEnvironment,
    NodeRecord,
    NodeRecords,
    Serving,
    node_record_here,
    node_records,
)
from releases.selectors import environment_revision_totals
from runs import spool
from runs.outbox import DROPPED_FIGURE, WAITING_FIGURE
from runs.status import ProviderHealthReport, ShadowFailures, provider_health, shadow_run_failures

from .health import HEARTBEAT_KEY, probe_client

logger = logging.getLogger(__name__)

FAILURES_WINDOW = timedelta(hours=24)
PROVIDERS_WINDOW = timedelta(hours=1)

T = TypeVar("T")


class RedisState(StrEnum):
    EMBEDDED = "embedded"  # no REDIS_URL: nothing is shared between processes
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


class RedisReads:
    """The page's Redis reads, one after another; after the first that fails, none is tried."""

    def __init__(self) -> None:
        self.state = RedisState.REACHABLE if settings.REDIS_URL else RedisState.EMBEDDED

    def read(self, what: str, read: Callable[[redis.Redis], T]) -> T | None:
        if self.state is not RedisState.REACHABLE:
            return None
        try:
            return read(probe_client())
        except (redis.RedisError, OSError):
            logger.warning("Status page: Redis is unreachable (reading %s)", what, exc_info=True)
            self.state = RedisState.UNREACHABLE
            return None


# --- the web processes' release caches ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvironmentFreshness:
    name: str
    held: HeldEnvironment
    behind: int  # release changes the database has that the process had not seen (0: current)


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    record: NodeRecord
    here: bool  # the process answering this page (read from its memory, not from Redis)
    started_age: float | None  # seconds
    confirmed_age: float | None
    written_age: float | None
    environments: list[EnvironmentFreshness]

    @property
    def silent(self) -> bool:
        """No record written for a while: the process ended, is stuck, or lost Redis."""
        return not self.here and (
            self.written_age is None or self.written_age > SILENT_AFTER_SECONDS
        )

    @property
    def unconfirmed(self) -> bool:
        """Serving from memory, but its revisions not read from the database for longer than
        two periodic checks (or, never read, not within two checks of its start): its copy may be
        behind. A process serving from the database reads it at every lookup."""
        limit = 2 * settings.RELEASE_CACHE_CHECK_SECONDS
        since = self.confirmed_age if self.confirmed_age is not None else self.started_age
        return self.record.serving == Serving.MEMORY and (since is None or since > limit)

    @property
    def stale(self) -> bool:
        return self.silent or self.unconfirmed

    @property
    def outbox_waiting(self) -> int | None:
        return self.record.figures.get(WAITING_FIGURE)

    @property
    def outbox_dropped(self) -> int | None:
        return self.record.figures.get(DROPPED_FIGURE)


@dataclass(frozen=True, slots=True)
class Processes:
    rows: list[ProcessStatus]  # this process first
    unreadable: int  # records in Redis that did not parse
    more: bool  # more processes than listed

    @property
    def outbox_waiting(self) -> int:
        return sum(r.outbox_waiting or 0 for r in self.rows if not r.silent)

    @property
    def outbox_dropped(self) -> int:
        return sum(r.outbox_dropped or 0 for r in self.rows if not r.silent)


def _age(now: float, moment: float | None) -> float | None:
    return None if moment is None else max(0.0, now - moment)


def processes_status(reads: RedisReads, redis_now: float | None) -> Processes:
    """This process (from its memory, on its own clock), and every other whose record is alive
    in Redis (on Redis's clock), each environment it holds against the database's revisions."""
    here = node_record_here(release_cache())
    found = (
        reads.read("the processes' records", node_records) if redis_now is not None else None
    ) or NodeRecords([], 0, False)
    others = sorted((r for r in found.records if r.id != here.id), key=lambda r: (r.host, r.pid))
    names = {name for record in (here, *others) for name in record.environments}
    totals = environment_revision_totals(names=names) if names else {}

    def row(record: NodeRecord, now: float, is_here: bool) -> ProcessStatus:
        return ProcessStatus(
            record=record,
            here=is_here,
            started_age=_age(now, record.started_at),
            confirmed_age=_age(now, record.confirmed_at),
            written_age=_age(now, record.written_at),
            environments=[
                EnvironmentFreshness(
                    name,
                    held,
                    max(0, totals.get(name, HeldEnvironment(0, 0)).revisions - held.revisions),
                )
                for name, held in record.environments.items()
            ],
        )

    rows = [row(here, time.time(), True)]
    if redis_now is not None:
        rows += [row(record, redis_now, False) for record in others]
    return Processes(rows, found.unreadable, found.more)


# --- workers and queues ---------------------------------------------------------------------------


class HeartbeatState(StrEnum):
    EMBEDDED = "embedded"  # no broker: tasks run in the process that queues them
    UNKNOWN = "unknown"  # Redis unreachable
    MISSING = "missing"  # no worker has run the heartbeat task (or not for a long while)
    FRESH = "fresh"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    state: HeartbeatState
    age: int | None  # seconds, on Redis's clock
    stale_after: int


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    waiting: int


@dataclass(frozen=True, slots=True)
class Broker:
    """What Redis says of the worker side in one round trip: its clock, the heartbeat, the
    queues' lengths, and the messages workers have taken and not yet acknowledged."""

    now: float
    heartbeat: int | None
    queues: list[QueueDepth]
    unacknowledged: int
    kept_calls: int  # call records waiting in Redis for the database (runs.spool)


def routed_queues() -> tuple[str, ...]:
    """The queues tasks are sent to. Every task goes to the default one: the shadow outbox and
    eval batches name it, beat's entries and the rest take it by default. A task routed to a
    queue of its own adds that queue here."""
    return (settings.CELERY_TASK_DEFAULT_QUEUE,)


def _queue_keys(queue: str) -> list[str]:
    """The lists kombu's Redis transport keeps a queue in: one per priority step (the plain name
    for the default priority)."""
    return [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]


def broker_read(client: redis.Redis) -> Broker:
    queues = routed_queues()
    pipeline = client.pipeline(transaction=False)
    pipeline.time().get(HEARTBEAT_KEY).hlen(Channel.unacked_key).llen(spool.KEY)
    for queue in queues:
        for key in _queue_keys(queue):
            pipeline.llen(key)
    (seconds, micros), beat, unacknowledged, kept_calls, *lengths = pipeline.execute()
    steps = len(PRIORITY_STEPS)
    return Broker(
        now=seconds + micros / 1_000_000,
        heartbeat=_seconds(beat),
        queues=[
            QueueDepth(queue, sum(lengths[i * steps : (i + 1) * steps]))
            for i, queue in enumerate(queues)
        ],
        unacknowledged=unacknowledged,
        kept_calls=kept_calls,
    )


def _seconds(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # not a heartbeat: as good as none


def heartbeat_status(reads: RedisReads, broker: Broker | None) -> WorkerHeartbeat:
    stale_after = settings.WORKER_HEARTBEAT_STALE_SECONDS
    if reads.state is RedisState.EMBEDDED:
        return WorkerHeartbeat(HeartbeatState.EMBEDDED, None, stale_after)
    if broker is None:
        return WorkerHeartbeat(HeartbeatState.UNKNOWN, None, stale_after)
    if broker.heartbeat is None:
        return WorkerHeartbeat(HeartbeatState.MISSING, None, stale_after)
    age = max(0, int(broker.now) - broker.heartbeat)
    state = HeartbeatState.FRESH if age <= stale_after else HeartbeatState.STALE
    return WorkerHeartbeat(state, age, stale_after)


# --- the whole page -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusReport:
    at: datetime
    redis: RedisState
    processes: Processes
    heartbeat: WorkerHeartbeat
    broker: Broker | None  # None: Redis embedded or unreachable
    failures_since: datetime
    shadow_failures: ShadowFailures
    eval_failures: list[EvalRun]
    providers_since: datetime
    providers: ProviderHealthReport


def status_report() -> StatusReport:
    """Everything the status page shows, now."""
    at = timezone.now()
    reads = RedisReads()
    broker = reads.read("the clock, heartbeat and queues", broker_read)
    processes = processes_status(reads, broker.now if broker is not None else None)
    failures_since, providers_since = at - FAILURES_WINDOW, at - PROVIDERS_WINDOW
    return StatusReport(
        at=at,
        redis=reads.state,
        processes=processes,
        heartbeat=heartbeat_status(reads, broker),
        broker=broker,
        failures_since=failures_since,
        shadow_failures=shadow_run_failures(since=failures_since),
        eval_failures=eval_run_failures(since=failures_since),
        providers_since=providers_since,
        providers=provider_health(since=providers_since),
    )
