"""Celery tasks of the runs app: thin adapters over runs.shadows and runs.services (STYLE R2)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .services import calls_delete_expired
from .shadows import shadow_run_execute


# acks_late + reject_on_worker_lost: a job leaves the broker only once a worker has finished it,
# so a worker stopped or killed mid-run leaves it queued for the next one; the ShadowRun row's
# unique key makes the second delivery harmless.
@shared_task(name="runs.shadow_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def shadow_run_task(
    *, call_id: int, version: int, kind: str, variables: dict[str, Any], locale: str
) -> None:
    shadow_run_execute(
        call_id=call_id, version=version, kind=kind, variables=variables, locale=locale
    )


@shared_task(name="runs.delete_expired_calls", ignore_result=True)
def delete_expired_calls_task() -> int:
    return calls_delete_expired()
