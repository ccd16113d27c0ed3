"""Every process's release cache as the others can see it: a small status record per process in
Redis, written by that process's release listener and read by the admin's status page
(``config.status``).

A process's memory is its own, so the process answering the status page cannot tell how fresh
another's cache is; each one says it. The record is a hash, ``promptregistry:node:<host>:<pid>``:

- ``host``, ``pid``, ``program`` (what the process runs: gunicorn, uvicorn, celery…);
- ``serving``: ``memory`` while its listener is subscribed, ``database`` while it is not (the
  modes of ``/readyz``'s ``release_cache`` check);
- ``started`` (when its listener started: its first resolve or probe), ``confirmed`` (when it last
  read its revisions from the database: every load and every ``RELEASE_CACHE_CHECK_SECONDS``
  check) and ``written``, in Unix seconds on Redis's clock, so hosts whose clocks differ still
  compare;
- ``environments``: per environment it holds whole, how many releases and the sum of their
  revisions (JSON). Every release change adds one to its release's revision, so the sum says how
  many changes the process has seen: equal to the database's, it is current; below, it is behind
  by the difference;
- ``figures``: counts other apps add (``node_figures_register``), e.g. the shadow outbox's.

The listener writes it when it subscribes, every ``WRITE_SECONDS`` after, and within a second of a
change to what the cache holds: two round trips (Redis's time, then one pipeline) on the
listener's thread, nothing on a request's. It expires ``RECORD_TTL_SECONDS`` after its last write,
so a process that ended leaves the list by itself; ``promptregistry:nodes``, a sorted set by time
written, indexes the records so that a reader lists them without scanning Redis.

Without a listener (no ``REDIS_URL``, or Redis down) nothing is written: there is nowhere to.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import redis

logger = logging.getLogger(__name__)

NODE_PREFIX = "promptregistry:node:"
NODE_INDEX = "promptregistry:nodes"
WRITE_SECONDS = 5
# A change to what the cache holds is written within this long (a burst of changes, once).
CHANGE_WRITE_SECONDS = 1.0
RECORD_TTL_SECONDS = 60
# Past this long without a write the process is gone, stuck, or cut off from Redis.
SILENT_AFTER_SECONDS = 3 * WRITE_SECONDS
# What a reader takes at most: records, and the bytes of a record's JSON fields.
NODES_READ = 100
JSON_FIELD_MAX = 8_000
ENVIRONMENTS_KEPT = 50
NAME_MAX = 100


class Serving(StrEnum):
    """Where a process's lookups are answered from (the modes of ``/readyz``'s ``release_cache``)."""

    MEMORY = "memory"  # its listener is subscribed and vouches for the snapshots
    DATABASE = "database"  # every lookup reads the database


@dataclass(frozen=True, slots=True)
class HeldEnvironment:
    """An environment's releases as held (or as the database has them): how many, and the sum
    of their revisions."""

    releases: int
    revisions: int


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One process's release cache. Times are Unix seconds: on Redis's clock in a record read
    from Redis, on this host's in ``node_record_here``'s."""

    host: str
    pid: int
    program: str
    serving: str  # a Serving, or what another writer put there
    started_at: float | None
    confirmed_at: float | None
    written_at: float | None
    environments: dict[str, HeldEnvironment] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return node_id(self.host, self.pid)


class CacheState(Protocol):
    """What a record says of a release cache (``releases.cache.ReleaseCache``)."""

    confirmed_at: float | None
    listening_since: float | None
    changes: int

    @property
    def serving(self) -> Serving: ...

    def held_environments(self) -> dict[str, HeldEnvironment]: ...


def node_id(host: str, pid: int) -> str:
    return f"{host}:{pid}"


def program_name() -> str:
    """What this process runs: its script's name (``gunicorn``, ``celery``, ``manage.py``), or
    the package's of ``python -m package``."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else sys.executable
    name = os.path.basename(path)
    if name == "__main__.py":
        name = os.path.basename(os.path.dirname(path))
    return name[:NAME_MAX]


# --- figures other apps add -----------------------------------------------------------------------

FigureSource = Callable[[], Mapping[str, int]]
_figure_sources: list[FigureSource] = []


def node_figures_register(source: FigureSource) -> None:
    """Adds counts to every record (runs adds its shadow outbox's in ``RunsConfig.ready()``):
    releases may not import the apps above it."""
    if source not in _figure_sources:
        _figure_sources.append(source)


def node_figures() -> dict[str, int]:
    figures: dict[str, int] = {}
    for source in _figure_sources:
        try:
            figures.update(source())
        except Exception:
            # A source's bug must not stop the record (and the listener writing it).
            logger.exception("A node figure source failed")
    return figures


def node_record_here(cache: CacheState) -> NodeRecord:
    """This process's record, now, on this host's clock."""
    return NodeRecord(
        host=socket.gethostname()[:NAME_MAX],
        pid=os.getpid(),
        program=program_name(),
        serving=cache.serving,
        started_at=cache.listening_since,
        confirmed_at=cache.confirmed_at,
        written_at=time.time(),
        environments=cache.held_environments(),
        figures=node_figures(),
    )


# --- writing --------------------------------------------------------------------------------------


class NodeReporter:
    """Writes this process's record; the listener calls ``tick`` at every turn of its loop (at
    least once a second), which costs a clock read and a comparison until a write is due."""

    def __init__(self, cache: CacheState) -> None:
        self._cache = cache
        self._due = 0.0  # monotonic: the next periodic write
        self._written_at = 0.0  # monotonic: the last write
        self._changes = -1  # the cache's change count at the last write

    def tick(self, client: redis.Redis) -> None:
        now = time.monotonic()
        changed = self._cache.changes != self._changes
        if now < self._due and not (changed and now >= self._written_at + CHANGE_WRITE_SECONDS):
            return
        self._changes = self._cache.changes
        self._written_at = now
        self._due = now + WRITE_SECONDS
        try:
            node_record_write(client, node_record_here(self._cache))
        except redis.RedisError:
            # The subscription on the same server fails too, and the listener reconnects.
            logger.warning("Could not write this process's status record", exc_info=True)
        except Exception:
            # A report's bug must not end the subscription (and with it the cache's freshness):
            # logged with its traceback, tried again at the next interval.
            logger.exception("This process's status record could not be made")


def node_record_write(client: redis.Redis, record: NodeRecord) -> None:
    """Stores ``record`` (on this host's clock) on Redis's clock, with its expiry, and drops the
    index's entries of records expired meanwhile."""
    seconds, micros = client.time()
    now = seconds + micros / 1_000_000
    shift = now - (record.written_at or time.time())

    def on_redis_clock(moment: float | None) -> str:
        return "" if moment is None else f"{moment + shift:.3f}"

    environments = dict(sorted(record.environments.items())[:ENVIRONMENTS_KEPT])
    key = NODE_PREFIX + record.id
    pipeline = client.pipeline(transaction=False)
    pipeline.hset(
        key,
        mapping={
            "host": record.host,
            "pid": record.pid,
            "program": record.program,
            "serving": record.serving,
            "started": on_redis_clock(record.started_at),
            "confirmed": on_redis_clock(record.confirmed_at),
            "written": f"{now:.3f}",
            "environments": json.dumps(
                {name: [held.releases, held.revisions] for name, held in environments.items()}
            ),
            "figures": json.dumps(record.figures),
        },
    )
    pipeline.expire(key, RECORD_TTL_SECONDS)
    pipeline.zadd(NODE_INDEX, {record.id: now})
    pipeline.zremrangebyscore(NODE_INDEX, "-inf", now - RECORD_TTL_SECONDS)
    pipeline.expire(NODE_INDEX, RECORD_TTL_SECONDS)
    pipeline.execute()


# --- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRecords:
    records: list[NodeRecord]
    unreadable: int  # records that did not parse (written by something else, or cut short)
    more: bool  # more records than NODES_READ were alive: the oldest were left out


def node_records(client: redis.Redis, *, limit: int = NODES_READ) -> NodeRecords:
    """The records alive, the most recently written first: two round trips, ``limit`` records at
    most. Raises what the client raises (the caller says Redis is unreachable)."""
    ids = client.zrevrange(NODE_INDEX, 0, limit)  # one more than shown: are there more?
    more = len(ids) > limit
    ids = ids[:limit]
    pipeline = client.pipeline(transaction=False)
    for member in ids:
        pipeline.hgetall(NODE_PREFIX + _text(member))
    found = pipeline.execute() if ids else []
    records, unreadable = [], 0
    for fields in found:
        if not fields:
            continue  # expired since the index was last pruned
        record = node_record_parse(fields)
        if record is None:
            unreadable += 1
        else:
            records.append(record)
    return NodeRecords(records, unreadable, more)


def node_record_parse(fields: Mapping[bytes | str, bytes | str]) -> NodeRecord | None:
    """A record as stored, or None when it does not hold what a record holds. Anything could
    have written the key: every value is checked and bounded, none is trusted."""
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        pid = int(values["pid"])
        environments = _environments(values.get("environments", "{}"))
        figures = _figures(values.get("figures", "{}"))
        return NodeRecord(
            host=values["host"][:NAME_MAX],
            pid=pid,
            program=values.get("program", "")[:NAME_MAX],
            serving=values.get("serving", "")[:NAME_MAX],
            started_at=_moment(values.get("started", "")),
            confirmed_at=_moment(values.get("confirmed", "")),
            written_at=_moment(values.get("written", "")),
            environments=environments,
            figures=figures,
        )
    except (KeyError, ValueError, TypeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _moment(value: str) -> float | None:
    if not value:
        return None
    moment = float(value)
    if moment != moment or moment in (float("inf"), float("-inf")):
        raise ValueError("not a time")
    return moment


def _json_object(value: str) -> dict[str, Any]:
    if len(value) > JSON_FIELD_MAX:
        raise ValueError("too long")
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("not an object")
    return parsed


def _environments(value: str) -> dict[str, HeldEnvironment]:
    held = {}
    for name, pair in list(_json_object(value).items())[:ENVIRONMENTS_KEPT]:
        releases, revisions = pair
        if type(releases) is not int or type(revisions) is not int:
            raise ValueError("not counts")
        held[name[:NAME_MAX]] = HeldEnvironment(releases, revisions)
    return held


def _figures(value: str) -> dict[str, int]:
    figures = {}
    for name, count in list(_json_object(value).items())[:ENVIRONMENTS_KEPT]:
        if type(count) is not int:
            raise ValueError("not a count")
        figures[name[:NAME_MAX]] = count
    return figures
