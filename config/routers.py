"""Which database a query goes to: the primary (``default``), or the read replica
(``DATABASE_REPLICA_URL``'s ``replica`` alias) for the reads that have asked for it (decision 0040).

Reads go to the replica only inside ``replica_reads()``, which two places open: the release
cache's loads (``releases.cache``, through ``read_replica``) and the read-only API's GETs
(``api.replica``). Everything else reads and writes the primary. Inside that context a read still
goes to the primary when:

- the primary's connection is in a transaction (``atomic``): what it reads must be what the
  transaction sees, its own writes included;
- a write was routed in the same context (a request reads its own writes);
- the replica is resting: it could not be reached a moment ago (``REPLICA_REST_SECONDS``).

Without the replica every method answers None: Django's own routing, unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

REPLICA = "replica"  # the alias config/settings.py gives DATABASE_REPLICA_URL
# What an outage looks like: the database cannot be reached (stopped, restarting, the connection
# lost mid-query, a statement timeout). A query PostgreSQL refuses for what it was given
# (DataError: a NUL in a string, a value out of range) is no outage, and is never answered as one.
DATABASE_OUTAGE = (OperationalError, InterfaceError)
# After the replica could not be reached, reads go to the primary for this long before it is
# tried again: a replica that is down costs one connect timeout per process this often, not one
# per request.
REPLICA_REST_SECONDS = 10.0


@dataclass(slots=True)
class Reads:
    """Where the reads of one context (a request, a cache load) may go."""

    replica: bool = False
    wrote: bool = False  # a write was routed: reads stay on the primary from then on


_reads: ContextVar[Reads | None] = ContextVar("database_reads", default=None)
_resting_until = 0.0  # monotonic; per process


def replica_configured() -> bool:
    """Whether there is a replica to read from, and it is not resting after a failure."""
    return REPLICA in connections.settings and time.monotonic() >= _resting_until


def replica_failed() -> None:
    """The replica could not be reached: the primary takes its reads for a while."""
    global _resting_until
    _resting_until = time.monotonic() + REPLICA_REST_SECONDS
    logger.warning("Replica unreachable: reading the primary for %.0f s", REPLICA_REST_SECONDS)


def replica_recovered() -> None:
    """The replica answered (``/readyz``): it may take reads again at once."""
    global _resting_until
    _resting_until = 0.0


def replica_ready() -> bool:
    """Whether reads may go to the replica now: configured, not resting, and connected. The
    connection is checked and opened here, as the first query would (Django's health check once
    per request, then a connect bounded by ``DATABASE_CONNECT_TIMEOUT``), but before anything
    was read from it, while the reads can still go to the primary instead."""
    if not replica_configured():
        return False
    replica = connections[REPLICA]
    try:
        replica.close_if_health_check_failed()
        replica.ensure_connection()
    except DATABASE_OUTAGE:
        replica_failed()
        return False
    return True


@contextmanager
def replica_reads(reads: Reads | None = None) -> Iterator[Reads]:
    """Routes this context's reads to the replica (``reads``: a state to share, else a new one
    that allows it). The router still keeps a read on the primary where it must (above)."""
    state = reads if reads is not None else Reads(replica=True)
    token = _reads.set(state)
    try:
        yield state
    finally:
        _reads.reset(token)


def current_reads() -> Reads | None:
    return _reads.get()


def read_replica[T](read: Callable[[], T], *, current: Callable[[T], bool] | None = None) -> T:
    """``read()`` on the replica, or on the primary when the replica is not ready, cannot be
    reached midway, or answers what ``current`` says is older than already known (its lag)."""
    if replica_ready():
        try:
            with replica_reads():
                found = read()
        except DATABASE_OUTAGE:
            replica_failed()
        else:
            if current is None or current(found):
                return found
    return read()


class ReplicaRouter:
    """``DATABASE_ROUTERS``: the primary for every write, the replica for the reads allowed to go
    there, migrations on the primary only."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        if REPLICA not in connections.settings:
            return None
        reads = _reads.get()
        if (
            reads is not None
            and reads.replica
            and not reads.wrote
            and not connections[DEFAULT_DB_ALIAS].in_atomic_block
        ):
            return REPLICA
        return DEFAULT_DB_ALIAS

    def db_for_write(self, model: type, **hints: Any) -> str | None:
        if REPLICA not in connections.settings:
            return None
        reads = _reads.get()
        if reads is not None:
            reads.wrote = True
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        # The replica holds the primary's rows: a row read from one may point at a row read from
        # the other (Django refuses relations across databases unless a router allows them).
        if REPLICA in connections.settings and {obj1._state.db, obj2._state.db} <= {
            DEFAULT_DB_ALIAS,
            REPLICA,
        }:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        # A replica replays the primary's schema; it is never migrated itself.
        return False if db == REPLICA else None
