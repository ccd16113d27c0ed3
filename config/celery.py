"""The Celery app. Periodic schedules live here, one comment per entry (STYLE R7)."""

from __future__ import annotations

import os

from celery import Celery
from django.conf import settings

# Connects the task signals counted in the metrics, and the worker's metrics port (docs/metrics.md).
from . import worker_metrics  # noqa: F401

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
