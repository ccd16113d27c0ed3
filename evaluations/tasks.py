"""Celery tasks of the evaluations app: thin adapters over its services (STYLE R2).

Each task imports its service inside the task: the service publishes the task (it imports this
module), so this is the one lazy import in the app. The task names are fixed (``name=``): queued
tasks carry them, whatever module the code moves to.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import task_failure
from django.db import DatabaseError

from runs.tasks import TIME_LIMITS

# --- eval runs ---


# acks_late + reject_on_worker_lost: a batch leaves the broker only once a worker has finished
# it, so one taken by a worker that died is delivered again; results are unique per run and case
# key, so the second delivery scores only what the first did not. Database errors (a failover)
# are retried with backoff and jitter; model and render failures never raise (failed results).
@shared_task(
    name="evaluations.eval_run_batch",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def eval_run_batch(*, run_id: int, cases: dict[str, int]) -> int:
    from .evalruns.services import eval_run_batch_execute

    return eval_run_batch_execute(run_id=run_id, cases=cases)


@task_failure.connect
def _eval_run_batch_time_limit(
    sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any
) -> None:
    """A batch stopped by its time limit fails its unscored cases, so the run finishes: at the
    soft limit in the pool process, at the hard limit (the pool process killed) in the worker's
    main process. The batch is acknowledged either way, not delivered again."""
    if getattr(sender, "name", None) != "evaluations.eval_run_batch":
        return
    if not isinstance(exception, TIME_LIMITS):
        return
    from .evalruns.services import eval_run_batch_timed_out

    eval_run_batch_timed_out(run_id=kwargs["run_id"], cases=kwargs["cases"])


# --- canary analysis ---


@shared_task(name="evaluations.analyse_canaries")
def analyse_canaries() -> int:
    """Beat's tick (CANARY_ANALYSIS_INTERVAL_SECONDS): one look at every running analysis. Two
    workers may run it at once; each analysis is looked at by one of them (a row lock)."""
    from .canary.services import canary_analyses_look

    return len(canary_analyses_look())
