"""Celery tasks of the releases app: thin, each one service call (STYLE R7)."""

from __future__ import annotations

from celery import shared_task

from .services.change_requests import change_requests_expire


@shared_task(name="releases.expire_change_requests", ignore_result=True)
def expire_change_requests_task() -> int:
    """Marks change requests past their time expired and tells about them (decision 0048);
    refusing an expired request never waits for this sweep."""
    return change_requests_expire()
