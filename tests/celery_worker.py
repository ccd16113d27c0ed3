"""A real ``celery worker`` process for tests that need one: on the test database and Redis,
consuming a queue of its own (so nothing else on the machine takes the test's jobs), with a short
visibility timeout so a killed worker's job comes back within seconds. Waiting polls with a
generous deadline; nothing here measures time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 60.0
VISIBILITY_TIMEOUT_SECONDS = 3  # a killed worker's job comes back this soon (production: an hour)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Gave up waiting for {what}")
        time.sleep(0.1)


class Worker:
    """One ``celery worker`` process on this test's queue; ``start()`` waits until it is ready."""

    def __init__(self, queue: str, log: Path, env: dict[str, str]) -> None:
        self.queue, self.log, self.env = queue, log, env
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--queues",
                    self.queue,
                    "--hostname",
                    f"{self.queue}-{self.starts}@%h",
                    "--concurrency",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "INFO",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() takes the pool child too
            )
        wait_for(lambda: self.log.read_text().count(" ready.") >= self.starts, "the worker")

    def stop(self) -> None:
        """Warm shutdown: the job in hand finishes, queued ones stay in Redis."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=DEADLINE_SECONDS)
        self.process = None

    def kill(self) -> None:
        """As a crash or an OOM kill: no chance to finish or hand anything back."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=DEADLINE_SECONDS)
        self.process = None


@contextmanager
def worker_on_own_queue(settings, log: Path, *, purpose: str) -> Iterator[Worker]:
    """A ``Worker`` (not started) on a fresh queue that this test's tasks are sent to."""
    db = connection.settings_dict
    queue = f"test-{purpose}-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_QUEUE": queue,
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_SECONDS),
        "DATABASE_CONN_MAX_AGE": "0",
        # The worker calls the suite's loopback model server too (see _loopback_providers).
        "PROVIDER_ALLOW_LOOPBACK": "true" if settings.PROVIDER_ALLOW_LOOPBACK else "false",
    }
    worker = Worker(queue, log, env)
    try:
        yield worker
    finally:
        # The test is over: nothing it waits for is left, so no warm shutdown (about 3 s a worker).
        if worker.process is not None and worker.process.poll() is None:
            worker.kill()
        print(worker.log.read_text()[-3000:])  # shown by pytest when the test failed
