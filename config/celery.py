"""The Celery app. Periodic schedules live here, one comment per entry (STYLE R7)."""

from __future__ import annotations

import os

from celery import Celery
from django.conf import settings

from .health import heartbeat_record

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="config.worker_heartbeat", ignore_result=True)
def worker_heartbeat() -> None:
    """Beat queues it; whichever worker takes it notes the time, which /readyz reports."""
    heartbeat_record()


app.conf.beat_schedule = {
    # Calls past CALL_RETENTION_DAYS go, with their shadow runs; hourly keeps each batch small.
    "delete-expired-calls": {"task": "runs.delete_expired_calls", "schedule": 3600.0},
    # Every running canary analysis gets a look: advance, hold or roll back
    # (evaluations.canary.services).
    "analyse-canaries": {
        "task": "evaluations.analyse_canaries",
        "schedule": float(settings.CANARY_ANALYSIS_INTERVAL_SECONDS),
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
