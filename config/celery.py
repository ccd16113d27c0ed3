"""The Celery app. Periodic schedules live here, one comment per entry (STYLE R7)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
)
from django.conf import settings

from config.telemetry import telemetry_start

# worker_metrics: imported to connect the task signals the metrics count, and the worker's
# metrics port (docs/metrics.md).
from . import logs, worker_metrics  # noqa: F401
from .health import heartbeat_record

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The request id of a web request follows the jobs it queues (config.logs).
before_task_publish.connect(logs.task_headers_add)
task_prerun.connect(logs.task_context_start)
task_postrun.connect(logs.task_context_end)
# JSON logs: the worker and beat write as the web does, rather than in Celery's own format on a
# root logger Celery takes over. Plain logs keep Celery's format (task names and ids).
if settings.LOG_FORMAT == "json":
    setup_logging.connect(logs.worker_logging_setup)


@app.task(name="config.worker_heartbeat", ignore_result=True)
def worker_heartbeat() -> None:
    """Beat queues it; whichever worker takes it notes the time, which /readyz reports."""
    heartbeat_record()


app.conf.beat_schedule = {
    # Calls past CALL_RETENTION_DAYS go, with their shadow runs; hourly keeps each batch small.
    "delete-expired-calls": {"task": "runs.delete_expired_calls", "schedule": 3600.0},
    # Call records the database could not take, kept in Redis, are written once it can
    # (runs.spool); a drain left waiting past the next is dropped unrun.
    "write-kept-calls": {
        "task": "runs.write_kept_calls",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
    # Each prompt's and model's spend today against its baseline (runs.anomalies); one left
    # waiting past the next is dropped unrun (the next compares the same).
    "check-spend": {
        "task": "runs.check_spend",
        "schedule": float(settings.SPEND_CHECK_INTERVAL_SECONDS),
        "options": {"expires": float(settings.SPEND_CHECK_INTERVAL_SECONDS)},
    },
    # Every running canary analysis gets a look: advance, hold or roll back
    # (evaluations.canary.services).
    "analyse-canaries": {
        "task": "evaluations.analyse_canaries",
        "schedule": float(settings.CANARY_ANALYSIS_INTERVAL_SECONDS),
    },
    # Scheduled release changes that are due: applied in order, each only on the release its
    # step was planned on (releases.services.schedule). One left waiting past the next is
    # dropped unrun: the next tick applies the same steps.
    "apply-due-schedules": {
        "task": "releases.apply_due_schedules",
        "schedule": float(settings.RELEASE_SCHEDULE_TICK_SECONDS),
        "options": {"expires": float(settings.RELEASE_SCHEDULE_TICK_SECONDS)},
    },
    # Webhook sends that are due and not queued: a backoff longer than this interval has ended,
    # or a send was lost (the broker down at commit, a worker killed); webhooks.sending. One left
    # waiting past the next is dropped unrun (the next sweep finds the same).
    "send-due-webhooks": {
        "task": "webhooks.send_due",
        "schedule": float(settings.WEBHOOK_SWEEP_SECONDS),
        "options": {"expires": float(settings.WEBHOOK_SWEEP_SECONDS)},
    },
    # Change requests past their time are marked expired and announced (releases.services.
    # change_requests); one left waiting past the next is dropped unrun (the next finds the same).
    "expire-change-requests": {
        "task": "releases.expire_change_requests",
        "schedule": 300.0,
        "options": {"expires": 300.0},
    },
    # A worker taking this from the queue is alive and keeping up: /readyz reports how long ago
    # that was (config.health). One left waiting past the next is dropped unrun, so a queue
    # backed up (or no worker, or no beat) shows as a heartbeat growing old.
    "worker-heartbeat": {
        "task": "config.worker_heartbeat",
        "schedule": float(settings.WORKER_HEARTBEAT_SECONDS),
        "options": {"expires": float(settings.WORKER_HEARTBEAT_SECONDS)},
    },
}


@worker_process_init.connect
def _start_tracing(**_: object) -> None:
    """Traces from each worker process (a prefork child), when OTEL_EXPORTER_OTLP_ENDPOINT is
    set: a task's span is the child of the request or task that queued it (config/telemetry.py)."""
    telemetry_start("prompt-registry-worker")
