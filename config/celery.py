"""The Celery app. Periodic schedules live here, one comment per entry (STYLE R7)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init
from django.conf import settings

from config.telemetry import telemetry_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Calls past CALL_RETENTION_DAYS go, with their shadow runs; hourly keeps each batch small.
    "delete-expired-calls": {"task": "runs.delete_expired_calls", "schedule": 3600.0},
    # Every running canary analysis gets a look: advance, hold or roll back
    # (evaluations.canary.services).
    "analyse-canaries": {
        "task": "evaluations.analyse_canaries",
        "schedule": float(settings.CANARY_ANALYSIS_INTERVAL_SECONDS),
    },
}


@worker_process_init.connect
def _start_tracing(**_: object) -> None:
    """Traces from each worker process (a prefork child), when OTEL_EXPORTER_OTLP_ENDPOINT is
    set: a task's span is the child of the request or task that queued it (config/telemetry.py)."""
    telemetry_start("prompt-registry-worker")
