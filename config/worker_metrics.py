"""The Celery worker's metrics: each task's duration and failures, and the port that serves them.

The signal handlers run in whichever process runs the task: a prefork pool's child, or the worker
itself for a task killed at its hard time limit (``task_failure`` then fires in the main process).
The children's figures reach the main process's server only through files, so a worker with a
pool sets ``PROMETHEUS_MULTIPROC_DIR`` (config.metrics), and that server adds every child up.

``WORKER_METRICS_PORT`` (0: none) is served by prometheus_client's own HTTP server, started in the
worker's main process once (``worker_init``, before the pool forks), on
``WORKER_METRICS_ADDRESS``. It has none of ``/metrics``'s checks: bind it where only Prometheus
reaches it.

Connected by ``config.celery``, so any process that loads the Celery app counts its tasks (eager
ones too, in a web process without a broker).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
)
from django.conf import settings
from prometheus_client import start_http_server

from .metrics import TASK_DURATION, TASK_FAILURES, metrics_registry, process_exited

logger = logging.getLogger(__name__)

# When each running task started, by task id; a process runs a task at a time (prefork) or a few
# (threads), and each entry goes when its task ends.
_started: dict[str, float] = {}


def _task_name(task: Any) -> str:
    """A registered task's name: from the code, so a bounded label."""
    return getattr(task, "name", None) or "unknown"


@task_prerun.connect
def task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def task_ended(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Observes the task's duration, whatever its end (success, failure, retry)."""
    started = _started.pop(task_id, None) if task_id is not None else None
    if started is not None:
        TASK_DURATION.labels(task=_task_name(task)).observe(time.perf_counter() - started)


@task_failure.connect
def task_failed(sender: Any = None, **_: Any) -> None:
    TASK_FAILURES.labels(task=_task_name(sender)).inc()


@worker_init.connect
def serve_worker_metrics(**_: Any) -> None:
    """Starts the worker's metrics server, when ``WORKER_METRICS_PORT`` asks for one."""
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    # One registry for the server's life: in multiprocess mode its collector reads every
    # process's files at each scrape, so children forked later are counted too.
    start_http_server(port, addr=settings.WORKER_METRICS_ADDRESS, registry=metrics_registry())
    logger.info("Worker metrics on %s:%s", settings.WORKER_METRICS_ADDRESS, port)


@worker_process_shutdown.connect
def pool_process_ended(pid: int | None = None, **_: Any) -> None:
    """A pool child ends (a restart after max tasks, a shutdown): its live gauges go with it."""
    process_exited(pid or os.getpid())
