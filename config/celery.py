"""The Celery app. Periodic schedules live here, one comment per entry (STYLE R7)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Canary analysis and retention arrive with the releases and runs issues.
app.conf.beat_schedule = {}
