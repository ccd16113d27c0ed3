"""Celery tasks of the runs app: thin adapters over runs.shadows and runs.services (STYLE R2)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, task_revoked
from django.db import close_old_connections

from .anomalies import spend_anomalies_check
from .payloads import PayloadRefused
from .services import calls_delete_expired
from .shadows import shadow_run_execute, shadow_run_refuse, shadow_run_timed_out
from .spool import spool_drain

# What a task that ran past CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT fails with.
TIME_LIMITS = (SoftTimeLimitExceeded, TimeLimitExceeded)


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


# Every few seconds from beat; one left waiting past the next is dropped unrun (the next one
# drains the same list).
@shared_task(name="runs.write_kept_calls", ignore_result=True)
def write_kept_calls_task() -> int:
    return spool_drain()


@task_failure.connect
def _shadow_run_time_limit(
    sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any
) -> None:
    """A shadow job stopped by its time limit leaves its row an error, never pending: at the soft
    limit this runs in the pool process as the exception leaves the task; at the hard limit the
    pool process is gone and the worker's main process runs it. Either way the job is
    acknowledged (a time limit is a failure, not a lost worker), so it is not delivered again."""
    if getattr(sender, "name", None) != "runs.shadow_run" or not isinstance(exception, TIME_LIMITS):
        return
    # At the hard limit this runs in the worker's main process, outside any task: no fixup has
    # checked its connection (as for shadow_job_expired).
    close_old_connections()
    shadow_run_timed_out(call_id=kwargs["call_id"], version=kwargs["version"], kind=kwargs["kind"])


@shared_task(name="runs.check_spend", ignore_result=True)
def check_spend_task() -> int:
    return len(spend_anomalies_check())
