"""Celery tasks of the releases app: thin, each one service call (STYLE R7)."""

from __future__ import annotations

from celery import shared_task

from .services.change_requests import change_requests_expire
from .services.schedule import schedules_apply


@shared_task(name="releases.apply_due_schedules", ignore_result=True)
def apply_due_schedules() -> int:
    """Beat's tick (every minute): every due step of every active schedule, in order. Two runs
    may overlap; each step is applied by one of them (a row lock, skip_locked)."""
    return len(schedules_apply())


@shared_task(name="releases.expire_change_requests", ignore_result=True)
def expire_change_requests_task() -> int:
    """Marks change requests past their time expired and tells about them (decision 0048);
    refusing an expired request never waits for this sweep."""
    return change_requests_expire()
