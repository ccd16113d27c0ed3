"""promptregistry.reporting: the background batcher and the sender for ``POST /api/v1/events``.

The batcher is tested with a recording ``send`` and a recorded ``sleep`` (no real waits); the
sender against the real endpoint, reached through Django's test client mounted as an httpx
transport, and once over loopback against a live server.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.db import connection
from django.test import Client as DjangoClient
from promptregistry import reporting
from promptregistry.reporting import Reporter, RetryableSendError, events_sender

from api.services import apikey_create
from runs.models import Call
from tests.factories import event

# A generous bound on waits for the worker thread: a hang fails the test instead of blocking the
# suite. Never a measure of speed.
SETTLE = 10.0


class Recorder:
    """A ``send`` that records each batch, fails as scripted, and can hold the worker."""

    def __init__(self, *, failures: list[Exception] | None = None, refuse: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.attempts = 0
        self.failures = list(failures or [])
        self.refuse = refuse
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.delivered = threading.Event()

    def __call__(self, batch: list[dict[str, Any]]) -> int:
        self.attempts += 1
        self.entered.set()
        self.gate.wait(SETTLE)
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(batch))
        self.delivered.set()
        return self.refuse

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def make_reporter(waits: list[float]) -> Iterator[Callable[..., Reporter]]:
    made: list[Reporter] = []

    def make(send: Callable[..., Any], **options: Any) -> Reporter:
        options = {"sleep": waits.append, "jitter": lambda: 1.0, "interval": 60.0, **options}
        reporter = Reporter(send, **options)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=SETTLE)


def numbered(count: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}"} for i in range(count)]


# --- The queue ------------------------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_without_blocking(make_reporter):
    send = Recorder()
    send.gate.clear()  # the worker holds its first batch: nothing leaves the queue
    reporter = make_reporter(send, capacity=3, batch_size=1)
    assert reporter.put({"event_id": "held"})
    assert send.entered.wait(SETTLE)
    results: list[bool] = []

    # In a thread, so that a put that blocked would fail the test instead of hanging it.
    putter = threading.Thread(
        target=lambda: results.extend(reporter.put(e) for e in numbered(10)), daemon=True
    )
    putter.start()
    putter.join(SETTLE)

    assert not putter.is_alive()
    assert results == [True] * 3 + [False] * 7
    assert reporter.dropped == 7
    send.gate.set()
    assert reporter.flush(SETTLE)
    assert [e["event_id"] for e in send.events] == ["held", "e0", "e1", "e2"]
    assert reporter.counts() == {"sent": 4, "rejected": 0, "dropped": 7, "failed": 0, "pending": 0}


def test_events_leave_in_batches_of_batch_size_in_order(make_reporter):
    send = Recorder()
    reporter = make_reporter(send, batch_size=2)

    for e in numbered(5):
        reporter.put(e)
    assert reporter.flush(SETTLE)

    assert [len(batch) for batch in send.batches] == [2, 2, 1]
    assert [e["event_id"] for e in send.events] == [f"e{i}" for i in range(5)]
    assert reporter.sent == 5


def test_a_partial_batch_leaves_after_the_interval_without_a_flush(make_reporter):
    send = Recorder()
    reporter = make_reporter(send, batch_size=100, interval=0.01)

    reporter.put({"event_id": "alone"})

    assert send.delivered.wait(SETTLE)  # no flush asked for it
    assert send.events == [{"event_id": "alone"}]
    assert reporter.flush(SETTLE)
    assert reporter.sent == 1


def test_concurrent_puts_are_all_counted(make_reporter):
    send = Recorder()
    reporter = make_reporter(send, capacity=1000, batch_size=50)
    results: list[bool] = []
    lock = threading.Lock()

    def put_many(thread: int) -> None:
        mine = [reporter.put({"event_id": f"t{thread}-{i}"}) for i in range(300)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=put_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SETTLE)
    assert reporter.flush(SETTLE)

    counts = reporter.counts()
    assert len(results) == 2400
    assert counts["sent"] == results.count(True) == len(send.events)
    assert counts["dropped"] == results.count(False)
    assert counts["sent"] + counts["dropped"] == 2400
    assert len({e["event_id"] for e in send.events}) == counts["sent"]


# --- Retries --------------------------------------------------------------------------------------


def test_a_transient_failure_is_retried_with_backoff_then_succeeds(make_reporter, waits):
    send = Recorder(failures=[RetryableSendError("503"), RetryableSendError("timeout")])
    reporter = make_reporter(send, backoff=0.5)

    reporter.put({"event_id": "a"})
    assert reporter.flush(SETTLE)

    assert send.attempts == 3
    assert waits == [0.5, 1.0]  # doubled each time (jitter drawn at its top here)
    assert send.events == [{"event_id": "a"}]
    assert (reporter.sent, reporter.failed) == (1, 0)


def test_the_backoff_is_jittered_capped_and_honours_retry_after(make_reporter, waits):
    draws = iter([0.0, 0.5, 1.0, 1.0, 1.0])
    send = Recorder(
        failures=[RetryableSendError("x")] * 4 + [RetryableSendError("429", retry_after=7)]
    )
    reporter = make_reporter(send, backoff=1.0, max_backoff=4.0, jitter=lambda: next(draws))

    reporter.put({"event_id": "a"})
    assert reporter.flush(SETTLE)

    # ceilings 1, 2, 4, 4 (capped), 4; each wait drawn between half and all of its ceiling;
    # the last failure asked for 7 seconds, more than the backoff.
    assert waits == [0.5, 1.5, 4.0, 4.0, 7.0]
    assert reporter.sent == 1


def test_a_permanent_failure_gives_up_after_max_retries_and_counts(make_reporter, waits):
    send = Recorder(failures=[RetryableSendError("503")] * 10)
    reporter = make_reporter(send, max_retries=3, batch_size=10)

    for e in numbered(4):
        reporter.put(e)
    assert reporter.flush(SETTLE)

    assert send.attempts == 4  # the first try and three retries
    assert len(waits) == 3
    assert reporter.counts() == {"sent": 0, "rejected": 0, "dropped": 0, "failed": 4, "pending": 0}
    reporter.put({"event_id": "next"})  # the worker goes on with the next batch
    send.failures.clear()
    assert reporter.flush(SETTLE)
    assert reporter.sent == 1


def test_a_bug_in_send_is_counted_and_the_worker_survives(make_reporter, caplog):
    send = Recorder(failures=[KeyError("boom")])
    reporter = make_reporter(send)

    reporter.put({"event_id": "a"})
    assert reporter.flush(SETTLE)
    reporter.put({"event_id": "b"})
    assert reporter.flush(SETTLE)

    assert (reporter.failed, reporter.sent) == (1, 1)
    assert send.events == [{"event_id": "b"}]
    assert "sending a batch failed" in caplog.text


def test_per_event_rejections_are_counted_not_retried(make_reporter):
    send = Recorder(refuse=2)
    reporter = make_reporter(send, batch_size=5)

    for e in numbered(5):
        reporter.put(e)
    assert reporter.flush(SETTLE)

    assert send.attempts == 1
    assert (reporter.sent, reporter.rejected) == (3, 2)


# --- Closing and exit -----------------------------------------------------------------------------


def test_close_flushes_what_is_queued_and_refuses_later_events(make_reporter):
    send = Recorder()
    reporter = make_reporter(send, interval=3600.0)  # nothing would leave on its own
    for e in numbered(3):
        reporter.put(e)

    assert reporter.close(SETTLE)

    assert len(send.events) == 3
    assert reporter.put({"event_id": "late"}) is False
    assert reporter.dropped == 1
    assert reporter.close(SETTLE)  # idempotent


def test_close_gives_up_a_batch_stuck_in_backoff_when_its_time_is_out():
    send = Recorder(failures=[RetryableSendError("down")] * 100)
    # The real sleep: close() must cut it short, not sit out an hour of backoff.
    reporter = Reporter(send, backoff=3600.0, max_retries=100, interval=60.0)
    reporter.put({"event_id": "a"})
    reporter.put({"event_id": "b"})
    assert reporter.flush(0) is False  # starts the batch without waiting for it
    assert send.entered.wait(SETTLE)

    assert reporter.close(timeout=0.05) is False

    reporter._thread.join(SETTLE)
    assert not reporter._thread.is_alive()
    assert reporter.counts() == {"sent": 0, "rejected": 0, "dropped": 0, "failed": 2, "pending": 0}


def test_open_reporters_are_flushed_at_exit_and_closed_ones_are_not_kept_alive(make_reporter):
    send = Recorder()
    reporter = make_reporter(send, interval=3600.0)
    reporter.put({"event_id": "at-exit"})
    assert reporter in reporting._open_reporters

    reporting._flush_at_exit()

    assert send.events == [{"event_id": "at-exit"}]
    assert reporter not in reporting._open_reporters
    # Closed and dropped by its owner: nothing (the exit hook included) keeps it alive.
    other = Reporter(Recorder(), interval=3600.0)
    other.put({"event_id": "x"})
    other.close(SETTLE)
    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reports_through_its_own_thread(make_reporter):
    # A gunicorn worker of a --preload app: the reporter was made (and its thread started) in the
    # parent; the child has no such thread and must start one.
    send = Recorder()
    reporter = make_reporter(send)
    reporter.put({"event_id": "parent"})
    assert reporter.flush(SETTLE)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a threaded process
        pid = os.fork()
    if pid == 0:  # the child: report, flush, and say through the exit code whether it worked
        ok = reporter.put({"event_id": "child"}) and reporter.flush(SETTLE)
        os._exit(0 if ok and send.events[-1] == {"event_id": "child"} else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert send.events == [{"event_id": "parent"}]  # the parent's reporter is untouched
    reporter.put({"event_id": "parent-again"})
    assert reporter.flush(SETTLE)
    assert reporter.sent == 2


def test_an_unused_reporter_starts_no_thread_and_flushes_at_once():
    reporter = Reporter(Recorder())

    assert reporter.flush(0) is True
    assert reporter.close(0) is True
    assert reporter._thread is None


def test_it_refuses_nonsense_settings():
    with pytest.raises(ValueError, match="capacity and batch_size must be at least 1"):
        Reporter(Recorder(), capacity=0)
    with pytest.raises(ValueError, match="interval above 0"):
        Reporter(Recorder(), interval=0)


# --- The sender, offline ---------------------------------------------------------------------------


class Endpoint:
    """An httpx transport answering as scripted, recording each request's events."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else accepted()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[list[dict[str, Any]]]:
        return [json.loads(r.content)["events"] for r in self.requests]

    def sender(self, **limits: Any) -> Callable[[list[dict[str, Any]]], int]:
        http = httpx.Client(transport=httpx.MockTransport(self))
        return events_sender(http, "http://registry.test/", "pr_secret", **limits)


def accepted(rejected: list[dict[str, Any]] | None = None) -> httpx.Response:
    return httpx.Response(202, json={"accepted": 1, "duplicates": [], "rejected": rejected or []})


def test_the_sender_posts_the_events_with_the_key():
    endpoint = Endpoint()

    refused = endpoint.sender()([{"event_id": "a"}, {"event_id": "b"}])

    assert refused == 0
    [request] = endpoint.requests
    assert (request.method, str(request.url)) == ("POST", "http://registry.test/api/v1/events")
    assert request.headers["authorization"] == "Bearer pr_secret"
    assert request.headers["content-type"] == "application/json"
    assert endpoint.bodies() == [[{"event_id": "a"}, {"event_id": "b"}]]


def test_the_sender_splits_a_batch_by_count_and_by_bytes():
    endpoint = Endpoint()
    events = [{"event_id": f"e{i:03d}", "output": "x" * 100} for i in range(10)]
    one = len(json.dumps(events[0], separators=(",", ":")))

    endpoint.sender(max_events=4)(events)
    by_count = [len(body) for body in endpoint.bodies()]
    endpoint.requests.clear()
    limit = len('{"events":[]}') + 3 * one + 2  # three events and their commas, exactly
    endpoint.sender(max_body_bytes=limit)(events)

    assert by_count == [4, 4, 2]
    assert [len(body) for body in endpoint.bodies()] == [3, 3, 3, 1]
    assert all(len(r.content) <= limit for r in endpoint.requests)
    assert [e["event_id"] for body in endpoint.bodies() for e in body] == [
        e["event_id"] for e in events
    ]


def test_the_sender_refuses_an_event_too_large_or_not_json_and_sends_the_rest(caplog):
    endpoint = Endpoint()
    events = [
        {"event_id": "big", "output": "x" * 500},
        {"event_id": "nan", "latency_ms": float("nan")},
        {"event_id": "object", "inputs": {"when": object()}},
        {"event_id": "fine"},
    ]

    refused = endpoint.sender(max_body_bytes=200)(events)

    assert refused == 3
    assert endpoint.bodies() == [[{"event_id": "fine"}]]
    assert "exceeds the request limit" in caplog.text


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_throttling_are_retryable(status):
    headers = {"Retry-After": "3"} if status == 429 else {}
    endpoint = Endpoint(httpx.Response(status, headers=headers))

    with pytest.raises(RetryableSendError) as caught:
        endpoint.sender()([{"event_id": "a"}])

    assert caught.value.retry_after == (3.0 if status == 429 else None)


def test_a_connection_failure_is_retryable():
    endpoint = Endpoint(httpx.ConnectError("connection refused"))

    with pytest.raises(RetryableSendError, match="ConnectError"):
        endpoint.sender()([{"event_id": "a"}])


def test_per_event_rejections_in_a_202_are_counted():
    rejected = [{"index": 1, "event_id": "b", "errors": [{"code": "out_of_range"}]}]
    endpoint = Endpoint(accepted(rejected))

    assert endpoint.sender()([{"event_id": "a"}, {"event_id": "b"}]) == 1


def test_a_batch_refused_whole_is_counted_and_logged_once(caplog):
    problem = {
        "type": "/problems/insufficient-scope",
        "status": 403,
        "detail": "needs events:write",
    }
    endpoint = Endpoint(httpx.Response(403, json=problem), httpx.Response(403, json=problem))
    send = endpoint.sender()

    with caplog.at_level(logging.DEBUG, logger="promptregistry.reporting"):
        first = send([{"event_id": "a"}, {"event_id": "b"}])
        second = send([{"event_id": "c"}])

    assert (first, second) == (2, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "needs events:write" in warnings[0].getMessage()


# --- Against the real endpoint ---------------------------------------------------------------------


def django_transport(client: DjangoClient, *, lose_answers: int = 0) -> httpx.MockTransport:
    """Requests go to the project's real view through Django's test client. The first
    ``lose_answers`` answers are lost after the server handled them, as a timeout would."""
    lost = [lose_answers]

    def handle(request: httpx.Request) -> httpx.Response:
        try:
            response = client.generic(
                request.method,
                request.url.path,
                data=request.content,
                content_type=request.headers["content-type"],
                headers={"Authorization": request.headers["authorization"]},
            )
        finally:
            # The reporter's thread has its own connection, which the test client never closes.
            if threading.current_thread() is not threading.main_thread():
                connection.close()
        if lost[0]:
            lost[0] -= 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(response.status_code, content=response.content)

    return httpx.MockTransport(handle)


@pytest.fixture
def events_key(db) -> str:
    return apikey_create(name="reporting-sdk", scopes=["events:write"])[1]


@pytest.mark.django_db
def test_a_batch_sent_again_after_a_lost_answer_is_stored_once(released, events_key):
    http = httpx.Client(transport=django_transport(DjangoClient(), lose_answers=1))
    send = events_sender(http, "http://testserver", events_key)
    events = [event(event_id=f"lost-{i}") for i in range(3)]

    with pytest.raises(RetryableSendError, match="ReadTimeout"):
        send(events)  # stored, but the answer never came back
    refused = send(events)

    assert refused == 0
    assert sorted(Call.objects.values_list("event_id", flat=True)) == ["lost-0", "lost-1", "lost-2"]


# The reporter sends from its own thread, so the events must be committed for it to see them:
# transactional tests, on PostgreSQL (SQLite's flush stumbles on the append-only release events).
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retried_batch_is_stored_once_thanks_to_event_ids(released, events_key, waits):
    http = httpx.Client(transport=django_transport(DjangoClient(), lose_answers=2))
    reporter = Reporter(
        events_sender(http, "http://testserver", events_key), sleep=waits.append, interval=60.0
    )
    events = [event(event_id=str(uuid.uuid4()), latency_ms=10.0 + i) for i in range(5)]

    for e in events:
        reporter.put(e)
    assert reporter.close(SETTLE)

    assert len(waits) == 2  # two answers lost, two retries
    assert reporter.counts() == {"sent": 5, "rejected": 0, "dropped": 0, "failed": 0, "pending": 0}
    stored = Call.objects.filter(event_id__in=[e["event_id"] for e in events])
    assert stored.count() == 5


@pytest.mark.django_db
def test_the_registry_refusing_events_counts_them_as_rejected(released, events_key):
    http = httpx.Client(transport=django_transport(DjangoClient()))
    send = events_sender(http, "http://testserver", events_key)
    good = event(event_id="good-1")

    partly = send(
        [good, event(event_id="bad-1", latency_ms=-1), event(event_id="bad-2", version=99)]
    )
    wholly = send([event(event_id="bad-3", feedback=5)])

    assert (partly, wholly) == (2, 1)
    assert list(Call.objects.values_list("event_id", flat=True)) == ["good-1"]


@pytest.mark.django_db
def test_a_key_without_the_scope_refuses_the_batch(released):
    key = apikey_create(name="reader", scopes=["prompts:read"])[1]
    http = httpx.Client(transport=django_transport(DjangoClient()))

    assert events_sender(http, "http://testserver", key)([event(), event()]) == 2
    assert not Call.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_reporter_delivers_over_loopback_to_a_live_server(live_server, released, events_key):
    with httpx.Client(timeout=SETTLE, trust_env=False) as http:
        reporter = Reporter(events_sender(http, live_server.url, events_key), batch_size=2)
        events = [event(event_id=f"live-{i}") for i in range(3)]
        for e in events:
            assert reporter.put(e)
        assert reporter.close(SETTLE)

    assert reporter.counts()["sent"] == 3
    assert set(Call.objects.values_list("event_id", flat=True)) == {"live-0", "live-1", "live-2"}
