"""Shadow jobs leave the live path through a bounded in-memory queue and one publisher thread.

The live call only puts a job on the queue (``put_nowait``: never blocks). The thread hands it to
Celery. A broker that is down or slow stalls the thread, not the caller; when the queue is full, or
the broker refuses a job, the job is dropped and counted: shadows are a sample, and losing a few
while the broker is away costs a little precision, never a live answer. Once a job is in the
broker, late acknowledgement keeps it there until a worker has finished it.

With no broker (the embedded default, eager Celery) the thread runs the shadow itself, so
``make run`` shadows too, still off the live path.

Each job is handed on in the context it was queued in (``contextvars``): the live request's log
context, whose request id Celery's publish signal puts on the job (config.logs).

The same two figures are in this process's status record (``figures``, registered by
``RunsConfig.ready()``), which the admin's status page lists per process.

Metrics (config.metrics): the jobs waiting (a gauge summed over the processes) and the jobs dropped,
by reason: ``full`` (the queue was) or ``broker`` (it refused the job, or was down).
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import queue
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from config.metrics import OUTBOX_DEPTH, OUTBOX_DROPPED

logger = logging.getLogger(__name__)

CAPACITY = 1000
# This process's figures in its status record (releases.nodes; the admin's status page).
WAITING_FIGURE = "shadow_outbox_waiting"
DROPPED_FIGURE = "shadow_outbox_dropped"
_DROPPED_FULL = OUTBOX_DROPPED.labels(reason="full")
_DROPPED_BROKER = OUTBOX_DROPPED.labels(reason="broker")


class Outbox:
    def __init__(self, capacity: int = CAPACITY) -> None:
        # Each job with the context it was queued in (contextvars: the request's trace, its
        # request id), so that publishing from this thread carries them into the task.
        self._queue: queue.Queue[tuple[dict[str, Any], contextvars.Context]] = queue.Queue(
            maxsize=capacity
        )
        self._lock = threading.Lock()
        self._pid = 0  # the process that started the thread: a forked worker starts its own
        self.published = self.dropped = 0

    def put(self, job: dict[str, Any]) -> bool:
        """Queue a job; False (and counted) when the queue is full."""
        self._ensure_thread()
        OUTBOX_DEPTH.inc()  # before the put: the thread may take the job (and count it) at once
        try:
            self._queue.put_nowait((job, contextvars.copy_context()))
        except queue.Full:
            OUTBOX_DEPTH.dec()
            with self._lock:
                self.dropped += 1
            _DROPPED_FULL.inc()
            logger.warning("Shadow queue full: a shadow job was dropped (%d so far)", self.dropped)
            return False
        return True

    def figures(self) -> dict[str, int]:
        """The jobs waiting (the one being handed on included), and those dropped since this
        process started: what its status record says of the outbox."""
        with self._lock:
            dropped = self.dropped
        return {WAITING_FIGURE: self._queue.unfinished_tasks, DROPPED_FIGURE: dropped}

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued job has been handed on; True when the queue drained in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(
                    target=self._publish_forever, name="shadow-outbox", daemon=True
                ).start()

    def _publish_forever(self) -> None:
        while True:
            job, queued_in = self._queue.get()
            try:
                queued_in.run(self._publish, job)
            finally:
                OUTBOX_DEPTH.dec()
                self._queue.task_done()

    def _publish(self, job: dict[str, Any]) -> None:
        from .tasks import shadow_run_task

        close_old_connections()  # eager mode runs the task here, on this thread's connection
        try:
            # retry=False: a broker that is down fails this job now rather than holding the queue.
            # expires: a job that waited longer than its sealed payload lives is dropped unrun.
            # The limits travel with the job (Celery takes the sender's over the worker's), so
            # they are read here, at call time.
            shadow_run_task.apply_async(
                kwargs=job,
                retry=False,
                queue=settings.CELERY_TASK_DEFAULT_QUEUE,
                expires=settings.SHADOW_JOB_TTL_SECONDS,
                soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
                time_limit=settings.CELERY_TASK_TIME_LIMIT,
            )
        except Exception:  # whatever the broker or an eager task raises: count it, keep going
            with self._lock:
                self.dropped += 1
            _DROPPED_BROKER.inc()
            logger.exception("A shadow job could not be queued and was dropped")
        else:
            with self._lock:
                self.published += 1
        finally:
            close_old_connections()


outbox = Outbox()
atexit.register(outbox.flush, 2.0)


def shadow_enqueue(job: dict[str, Any]) -> bool:
    return outbox.put(job)
