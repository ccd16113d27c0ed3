"""Celery tasks of the runs app: thin adapters over runs.shadows and runs.services (STYLE R2)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import task_revoked
from django.db import close_old_connections

from .payloads import PayloadRefused
from .services import calls_delete_expired
from .shadows import shadow_run_execute, shadow_run_refuse


# acks_late + reject_on_worker_lost: a job leaves the broker only once a worker has finished it,
# so a worker stopped or killed mid-run leaves it queued for the next one; the ShadowRun row's
# unique key makes the second delivery harmless.
# Ids in the clear, the variables sealed (``payload``, runs.payloads): the message sits in Redis.
@shared_task(name="runs.shadow_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def shadow_run_task(*, call_id: int, version: int, kind: str, payload: str) -> None:
    shadow_run_execute(call_id=call_id, version=version, kind=kind, payload=payload)


@task_revoked.connect
def shadow_job_expired(
    sender: Any = None, request: Any = None, expired: bool = False, **kwargs: Any
) -> None:
    """A shadow job past its Celery ``expires`` is dropped by the worker unrun; its run is recorded
    as expired, so none stays pending (a job a dead worker had claimed would otherwise)."""
    if not expired or getattr(sender, "name", None) != shadow_run_task.name or request is None:
        return
    job = request.kwargs or {}
    # This runs in the worker's consumer, not in a task: no fixup has checked its connection.
    close_old_connections()
    shadow_run_refuse(
        call_id=job["call_id"],
        version=job["version"],
        kind=job["kind"],
        reason=PayloadRefused.EXPIRED,
    )


@shared_task(name="runs.delete_expired_calls", ignore_result=True)
def delete_expired_calls_task() -> int:
    return calls_delete_expired()
