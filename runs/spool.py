"""Call records the database could not take when they were written, kept in Redis until it can.

A run's record is written once the model has answered (and, for a plain ``/run``, once the answer
is sent: decision 0041). If the database is out of reach at that moment (a failover, a restart,
a connection lost), the record is not dropped: it is kept here, in a Redis list, and the worker
writes it (``spool_drain``, every 30 seconds from beat: config.celery) once the database is back.

A record is lost only when Redis cannot keep it either (down, or the list full at ``CAPACITY``);
that is logged at ERROR with the request id and counted
(``promptregistry_call_records_total{outcome="lost"}``). A row the database refuses for what it
holds (a ``DataError``) is not kept: it would be refused again, so it is logged and counted as lost
too. Without Redis (the embedded default) nothing can be kept.

A record is kept as JSON, each column as its field writes it for Django's serializers and read back
by the same field (to the microsecond, which Django's JSON serializer would round). A record
whose write failed after it was in fact committed (the connection lost on the way back) would come
back a second time: the drain skips a record whose request id and start are already written.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError

from config.metrics import CALL_RECORDS
from releases.cache import DATABASE_OUTAGE

from .calls import call_insert
from .models import Call

logger = logging.getLogger(__name__)

KEY = "promptregistry:call-records:spool"
# At about 2 KB a record, 100,000 is some 200 MB of Redis at most: an outage of a few minutes at
# a few hundred runs a second. Past it, records are lost (and counted), Redis is not filled.
CAPACITY = 100_000
DRAIN_BATCH = 500
_SPOOLED = CALL_RECORDS.labels(outcome="spooled")
_DRAINED = CALL_RECORDS.labels(outcome="drained")
_LOST = CALL_RECORDS.labels(outcome="lost")


def spool_keep(call: Call) -> bool:
    """Keep a record the database could not take; False (logged, counted) when it cannot be."""
    client = _redis()
    if client is not None:
        try:
            length = client.rpush(KEY, _dumped(call))
            if length <= CAPACITY:
                _SPOOLED.inc()
                logger.warning("The call %s was kept to be recorded later", call.request_id)
                return True
            client.rpop(KEY)  # the one just pushed: the oldest stay, in order
        except Exception:
            logger.warning("Redis could not keep the call %s", call.request_id, exc_info=True)
    record_lost(call.request_id)
    return False


def record_lost(request_id: str) -> None:
    _LOST.inc()
    logger.error("The call %s could not be recorded, and is lost", request_id)


def spool_drain(limit: int = DRAIN_BATCH) -> int:
    """Write up to ``limit`` kept records, oldest first; returns how many were written. Stops at
    the first the database cannot take, which goes back to the head of the list."""
    client = _redis()
    if client is None:
        return 0
    written = 0
    for _ in range(limit):
        kept = client.lpop(KEY)
        if kept is None:
            break
        try:
            call = _loaded(kept)
        except (ValueError, TypeError, ValidationError):
            logger.exception("A kept call record could not be read")
            record_lost("(unreadable)")
            continue
        try:
            if not Call.objects.filter(
                request_id=call.request_id, created_at=call.created_at
            ).exists():
                call_insert(call)
        except DATABASE_OUTAGE:
            client.lpush(KEY, kept)
            logger.warning("The database cannot take kept call records yet", exc_info=True)
            break
        except DatabaseError:  # the row itself refused: it would be refused again
            logger.exception("The database refused the kept call %s", call.request_id)
            record_lost(call.request_id)
            continue
        written += 1
        _DRAINED.inc()
    if written:
        logger.info("%d kept call records written", written)
    return written


def spool_length() -> int | None:
    """Records waiting; None without Redis or when it cannot be read."""
    client = _redis()
    try:
        return None if client is None else int(client.llen(KEY))
    except Exception:
        return None


def _dumped(call: Call) -> str:
    return json.dumps(
        {
            field.attname: None
            if field.value_from_object(call) is None
            else field.value_to_string(call)
            for field in _FIELDS
        }
    )


def _loaded(kept: bytes) -> Call:
    """The record kept; a column the model no longer has is left out (kept across an upgrade)."""
    values = json.loads(kept)
    if not isinstance(values, dict):
        raise ValueError("A kept call record is not a JSON object.")
    fields = {field.attname: field for field in _FIELDS}
    return Call(
        **{
            name: None if value is None else fields[name].to_python(value)
            for name, value in values.items()
            if name in fields
        }
    )


_FIELDS = [field for field in Call._meta.concrete_fields if not field.primary_key]


def _redis():  # -> redis.Redis | None
    """The cache's Redis client (its timeouts), or None on the embedded default."""
    if not settings.REDIS_URL:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")
