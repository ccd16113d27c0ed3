"""Celery tasks of the releases app: ids in (none here), one service call each (STYLE R7)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="releases.apply_due_schedules", ignore_result=True)
def apply_due_schedules() -> int:
    """Beat's tick (every minute): every due step of every active schedule, in order. Two runs
    may overlap; each step is applied by one of them (a row lock, skip_locked)."""
    from .services.schedule import schedules_apply

    return len(schedules_apply())
