"""runs.spool: call records the database could not take, kept in Redis and written later."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import DataError, OperationalError

from config.celery import app
from runs import spool as module
from runs.models import Call
from runs.spool import spool_keep
from runs.tasks import write_kept_calls_task
from tests.metrics import counting
from tests.runs.test_call_insert import call, columns


def test_a_kept_record_comes_back_the_row_it_would_have_been(released, spool) -> None:
    kept = call(released, request_id="kept-1")
    assert spool_keep(kept)

    assert spool.drain() == 1

    written = Call.objects.get(request_id="kept-1")
    assert {**columns(written), "id": None} == {**columns(kept), "id": None}
    assert written.cost == Decimal("0.00001300")
    assert written.inputs["customer_name"] == "Zoë ☃"


def test_records_are_written_oldest_first_and_once(released, spool) -> None:
    first = call(released, request_id="a")
    second = call(released, request_id="b", created_at=first.created_at + timedelta(seconds=1))
    for record in (first, second, first):  # the first kept twice: its write had in fact committed
        spool_keep(record)

    assert spool.drain() == 3
    assert list(Call.objects.order_by("pk").values_list("request_id", flat=True)) == ["a", "b"]
    assert spool.length() == 0


def test_a_database_still_away_leaves_the_records_kept_in_order(
    released, spool, monkeypatch
) -> None:
    for request_id in ("a", "b"):
        spool_keep(call(released, request_id=request_id))

    insert = module.call_insert

    def away(call, **kwargs):
        raise OperationalError("the database is still down")

    monkeypatch.setattr(module, "call_insert", away)
    assert spool.drain() == 0
    assert spool.length() == 2

    monkeypatch.setattr(module, "call_insert", insert)
    assert spool.drain() == 2
    assert list(Call.objects.order_by("pk").values_list("request_id", flat=True)) == ["a", "b"]


def test_a_record_the_database_refuses_and_an_unreadable_one_are_lost_not_retried(
    released, spool, monkeypatch
) -> None:
    lost = counting("promptregistry_call_records_total", outcome="lost")
    module._redis().rpush(module.KEY, b"not a record")
    spool_keep(call(released, request_id="refused"))
    spool_keep(call(released, request_id="fine"))
    insert = module.call_insert

    def refuse_one(call, **kwargs):
        if call.request_id == "refused":
            raise DataError("value out of range")
        return insert(call, **kwargs)

    monkeypatch.setattr(module, "call_insert", refuse_one)
    assert spool.drain() == 1
    assert lost() == 2
    assert spool.length() == 0
    assert list(Call.objects.values_list("request_id", flat=True)) == ["fine"]


def test_past_its_capacity_the_spool_keeps_the_oldest_and_counts_the_rest_lost(
    released, spool, monkeypatch
) -> None:
    monkeypatch.setattr(module, "CAPACITY", 2)
    lost = counting("promptregistry_call_records_total", outcome="lost")

    kept = [spool_keep(call(released, request_id=f"r{n}")) for n in range(3)]

    assert kept == [True, True, False]
    assert lost() == 1
    assert spool.drain() == 2
    assert sorted(Call.objects.values_list("request_id", flat=True)) == ["r0", "r1"]


def test_redis_out_of_reach_keeps_nothing_and_says_so(released, monkeypatch, settings) -> None:
    """A Redis that refuses connections: the record is lost, loudly, within the client's
    timeouts (nothing waits on it unbounded)."""
    import redis

    closed = redis.Redis.from_url(
        "redis://127.0.0.1:9/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    monkeypatch.setattr(module, "_redis", lambda: closed)
    lost = counting("promptregistry_call_records_total", outcome="lost")

    assert spool_keep(call(released, request_id="nowhere")) is False
    assert lost() == 1
    assert module.spool_length() is None


def test_without_redis_there_is_no_spool(released, settings) -> None:
    settings.REDIS_URL = ""  # the embedded default
    assert spool_keep(call(released)) is False
    assert module.spool_drain() == 0
    assert module.spool_length() is None


def test_beat_writes_kept_records_every_thirty_seconds(released, spool) -> None:
    entry = app.conf.beat_schedule["write-kept-calls"]
    assert (entry["task"], entry["schedule"]) == (write_kept_calls_task.name, 30.0)
    spool_keep(call(released, request_id="from-beat"))

    assert write_kept_calls_task.apply().get() == 1
    assert Call.objects.filter(request_id="from-beat").exists()
