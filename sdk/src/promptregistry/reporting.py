"""Outcome reporting: a bounded queue drained by a background thread in batches.

The caller's thread only ever appends to a queue (``Reporter.put``): it never waits for the
network, never blocks on a full queue and never sees an exception. A daemon thread takes batches
off the queue and hands them to ``send``; the registry's ``POST /api/v1/events`` is idempotent by
``event_id``, so a batch that failed half-way is simply sent again.

``events_sender`` is the ``send`` that talks to the registry: it splits a batch to fit the
endpoint's limits (1,000 events and ``max_body_bytes`` a request), and tells a failure worth
retrying (5xx, 429, no connection) from a refusal (every other 4xx) that no retry would change.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import httpx

logger = logging.getLogger(__name__)

__all__ = ["Reporter", "RetryableSendError", "events_sender"]

# The endpoint's limits (docs/api.md, "Reporting outcomes"): a request over either is refused whole.
MAX_EVENTS_PER_REQUEST = 1000
MAX_BODY_BYTES = 1_048_576  # the server's DATA_UPLOAD_MAX_MEMORY_SIZE default
EVENTS_PATH = "/api/v1/events"
_ENVELOPE = len(b'{"events":[]}')  # the bytes of a request around its events

# What `send` returns: how many of the batch's events the registry refused (None: none).
Send = Callable[[list[dict[str, Any]]], int | None]


class RetryableSendError(Exception):
    """Raised by a ``send`` whose failure may pass: the batch is sent again after a backoff.

    ``retry_after``: seconds the server asked to wait (a 429's ``Retry-After``), a floor for the
    backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Reporter:
    """Queues events and delivers them in batches from a background thread.

    ``send(batch)`` delivers one batch and returns how many of its events were refused (None for
    none); it raises ``RetryableSendError`` for a failure worth retrying. A batch leaves when it
    holds ``batch_size`` events, when its first event has waited ``interval`` seconds, or at once
    on ``flush``/``close``. A failed batch is retried ``max_retries`` times, after an exponential
    backoff (``backoff`` seconds doubled each time, at most ``max_backoff``) with jitter (the
    wait is drawn between half and all of it, so many clients that failed together do not retry
    together); then it is given up and counted in ``failed``.

    Counters (read at any time, from any thread): ``sent`` (delivered and stored, duplicates
    included), ``rejected`` (refused by the registry: invalid events), ``dropped`` (refused by
    ``put``: the queue was full, or the reporter closed), ``failed`` (given up: retries exhausted,
    or still queued when ``close`` ran out of time).

    ``sleep``, ``clock`` and ``jitter`` (a draw in [0, 1)) are injectable for tests. The default
    ``sleep`` is cut short when ``close`` gives up waiting, so a closing process never sits out a
    backoff.

    The thread starts with the first event. Reporters that are still open at interpreter exit are
    flushed then (``exit_timeout`` seconds each); the exit hook holds them weakly, so a closed
    reporter is not kept alive by it.
    """

    def __init__(
        self,
        send: Send,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval: float = 1.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        exit_timeout: float = 2.0,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if capacity < 1 or batch_size < 1 or max_retries < 0 or interval <= 0:
            raise ValueError(
                "capacity and batch_size must be at least 1, max_retries at least 0, "
                "and interval above 0."
            )
        self._send = send
        self.capacity, self.batch_size, self.interval = capacity, batch_size, interval
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.exit_timeout = exit_timeout
        self._custom_sleep = sleep
        self._clock, self._jitter = clock, jitter
        self._new_locks()
        self._queue: deque[dict[str, Any]] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False
        # Events in order: ``_taken`` have left the queue, ``_done`` of those are settled (sent,
        # rejected or failed). A flush waits until ``_done`` reaches what had been queued.
        self._taken = 0
        self._done = 0
        self._flush_target = 0
        self._sent = self._rejected = self._dropped = self._failed = 0

    def _new_locks(self) -> None:
        self._abort = threading.Event()  # set when close() stops waiting: the worker gives up
        self._sleep = self._custom_sleep or self._abort.wait
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the worker waits here for events
        self._idle = threading.Condition(self._lock)  # flush() waits here for deliveries

    def _after_fork_in_child(self) -> None:
        """A forked child (a gunicorn worker of a ``--preload`` app) has no worker thread, and
        the lock may have been held by a thread that does not exist here: start afresh. Events
        queued before the fork are sent by both processes; their ids make the second copy a
        duplicate the registry ignores."""
        self._new_locks()
        self._thread = None
        self._done = self._taken  # the parent's batch in flight is the parent's to settle
        if self._queue and not self._closing:
            self._start()

    # --- the caller's side: never blocks on I/O, never raises ----------------------------------

    def put(self, event: dict[str, Any]) -> bool:
        """Queues one event; False (and counted in ``dropped``) when the queue is full or the
        reporter is closed. Holds the lock only to append: it never waits for the network."""
        with self._lock:
            if self._closing or len(self._queue) >= self.capacity:
                self._dropped += 1
                return False
            self._queue.append(event)
            if self._thread is None and not self._start():
                self._queue.pop()
                self._dropped += 1
                return False
            # Wake the worker when its batch starts (it then waits up to ``interval``) or fills.
            if len(self._queue) == 1 or len(self._queue) >= self.batch_size:
                self._wake.notify()
            return True

    def flush(self, timeout: float | None = None) -> bool:
        """Sends what is queued now, without waiting for ``interval``; True when all of it is
        settled (sent, rejected or given up) within ``timeout`` seconds (None: no limit)."""
        with self._lock:
            target = self._taken + len(self._queue)
            if self._done >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            self._wake.notify()
            return self._wait_done(target, timeout)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stops taking events, delivers what is queued within ``timeout`` seconds, and ends the
        thread. True when everything was settled in time; otherwise the worker gives up what is
        left (counted in ``failed``) at its next wait. Idempotent."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        _open_reporters.discard(self)
        if thread is None:
            return True
        if thread is threading.current_thread():  # closed from inside send: it drains and ends
            return False
        thread.join(timeout)
        if thread.is_alive():
            self._abort.set()
            logger.warning(
                "Prompt registry reporter closed with %d events still undelivered", self.pending
            )
            return False
        return True

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- counters -------------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        with self._lock:
            return self._sent

    @property
    def rejected(self) -> int:
        with self._lock:
            return self._rejected

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    @property
    def failed(self) -> int:
        with self._lock:
            return self._failed

    @property
    def pending(self) -> int:
        """Events queued or being sent."""
        with self._lock:
            return len(self._queue) + self._taken - self._done

    def counts(self) -> dict[str, int]:
        """Every counter, read at one instant."""
        with self._lock:
            return {
                "sent": self._sent,
                "rejected": self._rejected,
                "dropped": self._dropped,
                "failed": self._failed,
                "pending": len(self._queue) + self._taken - self._done,
            }

    # --- the worker -----------------------------------------------------------------------------

    def _start(self) -> bool:
        """Starts the worker (under the lock); False when no thread can be started, as happens
        during interpreter shutdown."""
        thread = threading.Thread(target=self._run, name="promptregistry-reporter", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            logger.warning("Prompt registry reporter: cannot start its thread; event dropped")
            return False
        self._thread = thread
        _open_reporters.add(self)
        return True

    def _wait_done(self, target: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else self._clock() + timeout
        while self._done < target:
            if self._thread is None or not self._thread.is_alive():
                return False
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                return False
            self._idle.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                sent, refused, failed = self._deliver(batch)
            # The worker must outlive any bug in ``send``: an uncaught error would end the
            # thread and silently stop all reporting.
            except Exception:
                logger.exception("Prompt registry reporter: sending a batch failed")
                sent, refused, failed = 0, 0, len(batch)
            with self._lock:
                self._sent += sent
                self._rejected += refused
                self._failed += failed
                self._done += len(batch)
                self._idle.notify_all()

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Waits for a batch and takes it off the queue; None when closed and drained."""
        with self._lock:
            while not self._queue:
                if self._closing:
                    return None
                self._wake.wait()
            if self._abort.is_set():  # close() stopped waiting: give up the rest at once
                self._failed += len(self._queue)
                self._taken += len(self._queue)
                self._done += len(self._queue)
                self._queue.clear()
                self._idle.notify_all()
                return None
            deadline = self._clock() + self.interval
            while (
                len(self._queue) < self.batch_size
                and not self._closing
                and self._flush_target <= self._taken
            ):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            size = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            self._taken += size
            return batch

    def _deliver(self, batch: list[dict[str, Any]]) -> tuple[int, int, int]:
        """Sends one batch, retrying; returns (sent, refused, failed) event counts."""
        attempt = 0
        while True:
            try:
                refused = self._send(batch)
            except RetryableSendError as exc:
                if attempt >= self.max_retries or self._abort.is_set():
                    logger.warning(
                        "Prompt registry reporter: giving up %d events after %d attempts: %s",
                        len(batch),
                        attempt + 1,
                        exc,
                    )
                    return 0, 0, len(batch)
                delay = self._backoff_delay(attempt, exc.retry_after)
                attempt += 1
                logger.info(
                    "Prompt registry reporter: send failed (%s); retry %d in %.2f s",
                    exc,
                    attempt,
                    delay,
                )
                self._sleep(delay)
                if self._abort.is_set():  # close() stopped waiting during the backoff
                    return 0, 0, len(batch)
                continue
            # A send returning something odd must not poison the counters.
            refused = min(max(refused, 0), len(batch)) if isinstance(refused, int) else 0
            return len(batch) - refused, refused, 0

    def _backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        delay = ceiling / 2 + self._jitter() * ceiling / 2
        return max(delay, retry_after or 0.0)


# Open reporters, held weakly: the exit hook must not keep a reporter (and its client) alive.
_open_reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for reporter in list(_open_reporters):
        reporter.close(reporter.exit_timeout)


def _after_fork_in_child() -> None:
    for reporter in list(_open_reporters):
        reporter._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- sending to the registry -----------------------------------------------------------------------


def events_sender(
    http: httpx.Client,
    base_url: str,
    api_key: str,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_events: int = MAX_EVENTS_PER_REQUEST,
) -> Callable[[list[dict[str, Any]]], int]:
    """A ``Reporter`` send that posts ``{"events": [...]}`` to the registry's events endpoint.

    The batch goes in as many requests as the endpoint's limits need. Per-event refusals in a
    202 (and a 400 where every event was refused) are counted, not retried: the same events would
    be refused again. 5xx, 429 and connection failures raise ``RetryableSendError``; any other
    answer (a wrong key, a missing scope) refuses the request's events and is logged once.
    """
    return _EventsSender(
        http,
        base_url.rstrip("/") + EVENTS_PATH,
        api_key,
        max_body_bytes=max_body_bytes,
        max_events=max_events,
    )


class _EventsSender:
    def __init__(
        self, http: httpx.Client, url: str, api_key: str, *, max_body_bytes: int, max_events: int
    ) -> None:
        self.http, self.url = http, url
        self.max_body_bytes, self.max_events = max_body_bytes, max_events
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        # A misconfiguration (a wrong key, a missing scope) would otherwise log every batch.
        self._warned: set[str] = set()

    def __call__(self, batch: list[dict[str, Any]]) -> int:
        refused = 0
        chunks: list[list[bytes]] = []
        chunk: list[bytes] = []
        size = _ENVELOPE
        for event in batch:
            try:
                encoded = json.dumps(
                    event, ensure_ascii=False, allow_nan=False, separators=(",", ":")
                ).encode("utf-8")
            except (TypeError, ValueError) as exc:  # not JSON (NaN, an object): the server's 400
                refused += 1
                self._warn_once("unencodable", "An event is not JSON and was dropped: %s", exc)
                continue
            if len(encoded) + _ENVELOPE > self.max_body_bytes:
                refused += 1
                self._warn_once(
                    "too-large",
                    "An event of %d bytes exceeds the request limit (%d bytes) and was dropped",
                    len(encoded),
                    self.max_body_bytes,
                )
                continue
            extra = len(encoded) + (1 if chunk else 0)  # the comma
            if chunk and (len(chunk) >= self.max_events or size + extra > self.max_body_bytes):
                chunks.append(chunk)
                chunk, size = [], _ENVELOPE
                extra = len(encoded)
            chunk.append(encoded)
            size += extra
        if chunk:
            chunks.append(chunk)
        # A retryable failure on a later chunk resends the earlier ones too: they come back as
        # duplicates (idempotent by event_id), so nothing is stored twice.
        for part in chunks:
            refused += self._post(part)
        return refused

    def _post(self, events: list[bytes]) -> int:
        body = b'{"events":[' + b",".join(events) + b"]}"
        try:
            response = self.http.post(self.url, content=body, headers=self.headers)
        except httpx.TransportError as exc:
            raise RetryableSendError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 202:
            answer = _json(response)
            refused = _refused_count(answer, default=0)
            if refused:
                self._warn_once(
                    "rejected", "The registry refused %d events; first: %s", refused, _first(answer)
                )
            return refused
        if status == 429 or status >= 500:
            raise RetryableSendError(
                f"HTTP {status}", retry_after=_retry_after(response.headers.get("Retry-After"))
            )
        answer = _json(response)
        if status == 400 and isinstance(answer.get("rejected"), list):
            refused = _refused_count(answer, default=len(events))
            self._warn_once(
                "all-rejected", "The registry refused every event of a batch: %s", _first(answer)
            )
            return refused
        self._warn_once(
            f"http-{status}",
            "The registry refused a batch of %d events: HTTP %d %s",
            len(events),
            status,
            answer.get("detail") or answer.get("title") or "",
        )
        return len(events)

    def _warn_once(self, kind: str, message: str, *args: object) -> None:
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        logger.log(level, message, *args)


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _refused_count(answer: Mapping[str, Any], *, default: int) -> int:
    rejected = answer.get("rejected")
    return len(rejected) if isinstance(rejected, list) else default


def _first(answer: Mapping[str, Any]) -> str:
    for rejected in answer.get("rejected") or ():
        for error in (rejected or {}).get("errors") or ():
            return f"{error.get('pointer', '')} {error.get('code', '')}: {error.get('detail', '')}"
    return ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; an HTTP date is ignored (the backoff applies)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
