"""Gunicorn's settings for the web process (the Procfile's ``web``): production defaults.

Every value can be overridden from the environment (``GUNICORN_WORKERS=4``) or on the command
line, which wins over this file. The release streams have their own ASGI process (the Procfile's
``stream``, decision 0029); a stream that reaches this process still works, holding a thread for
its life, so the timeouts below leave room for one.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _stream_seconds() -> int:
    """The release stream's maximum life, as config/settings.py reads it."""
    return _int("RELEASE_STREAM_MAX_SECONDS", 300)


bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Two workers per core and one more, the usual rule for a service that waits on its database and
# on model providers; threads let one worker wait on several calls (a run waits for the model).
workers = _int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)
# A worker that says nothing for this long is killed and replaced. A streamed run or a release
# stream served here lasts up to its maximum, so the timeout is above both.
timeout = max(_stream_seconds(), _int("RUN_STREAM_MAX_SECONDS", 300)) + 30
# On SIGTERM (a deploy), requests in flight get this long to finish before the worker is killed.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = 5  # behind a proxy that reuses connections
# Recycle each worker after about this many requests (a slow leak never becomes an outage); the
# jitter keeps the workers from restarting all at once. A new worker pays its start (the releases
# loaded whole, new connections: seconds for a large registry, see post_worker_init), so not
# often: at 2,000 a busy worker was replaced every second or two.
max_requests = _int("GUNICORN_MAX_REQUESTS", 50_000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 5_000)
# Requests and errors go to stdout/stderr through Python's logging, formatted as the rest of the
# service's logs (LOG_FORMAT=json gives one JSON object per line; docs/operations.md).
accesslog = "-"
errorlog = "-"
# The path without its query string: a resolve's query holds the subject, which no log keeps.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s" %({x-request-id}i)s'
# Load the application before forking: the workers share its memory, and an error in the
# settings stops the master at once instead of every worker in a loop.
preload_app = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# The temporary heartbeat files of the workers: in memory where there is /dev/shm (a container's
# disk can be slow enough to get healthy workers killed).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


# Metrics (docs/metrics.md): the workers count into files under one directory, which /metrics adds
# up, so a scrape that reaches any worker sees the whole process group. Without a directory named
# in the environment, each start gets a new one of its own (named before the application loads:
# prometheus_client chooses its mode at import).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="promptregistry-web-metrics-")


def on_starting(server) -> None:
    """Before any worker: an empty directory for this run's metrics (none left from a previous
    one, whose counters would add up again)."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def post_worker_init(worker) -> None:
    """A new worker loads the releases before it takes its first request (at most
    RELEASE_CACHE_WARM_SECONDS, 30 by default; the rest on first use): its first callers are
    answered from memory instead of waiting seconds for a large registry to load."""
    from django.apps import apps
    from django.db import connections

    if not apps.is_installed("releases"):  # another application (bench/bare_app.py)
        return
    started = time.monotonic()
    try:
        from releases.cache import release_cache

        loaded = release_cache().warm(seconds=_int("RELEASE_CACHE_WARM_SECONDS", 30))
    except Exception:  # a worker that cannot warm still serves: its releases load on first use
        worker.log.exception("Warming the release cache failed; releases load on first use")
        return
    finally:
        # This thread serves no request (gthread's requests run in its pool): its connection
        # would stay open, idle, for the worker's life.
        connections.close_all()
    worker.log.info(
        "Release cache warmed: %d environments in %.1f s", len(loaded), time.monotonic() - started
    )


def child_exit(server, worker) -> None:
    """A worker ended (max-requests, a crash, a reload): its live gauges go; its counters stay in
    the sums, as they must."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _logconfig() -> dict:
    """The service's logging (config/settings.py's LOGGING) with gunicorn's loggers in it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    config = dict(settings.LOGGING)
    loggers = dict(config.get("loggers", {}))
    for name in ("gunicorn.error", "gunicorn.access"):
        loggers[name] = {"handlers": ["console"], "level": "INFO", "propagate": False}
    config["loggers"] = loggers
    return config


logconfig_dict = _logconfig()
