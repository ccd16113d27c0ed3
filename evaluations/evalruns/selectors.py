"""Reads of eval runs for the admin's status page (``config.status``): the runs that failed, or
lost cases to a batch's time limit, lately."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, Subquery

from ..models import EvalRun
from .services import TIME_LIMIT

# The runs looked at: the latest this many that started or ended in the window. Runs are few
# (one per version and dataset tried), so this reaches back far enough; it bounds the count of
# their results, on the (run, case key) index.
RUNS_READ = 200
FAILURES_LISTED = 10


def eval_run_failures(*, since: datetime, limit: int = FAILURES_LISTED) -> list[EvalRun]:
    """Eval runs created or ended since ``since`` that failed, or whose cases a batch's time limit
    failed (each annotated with ``timed_out``, how many), the latest first. One query."""
    recent = (
        EvalRun.objects.filter(Q(created_at__gte=since) | Q(finished_at__gte=since))
        .order_by("-created_at", "-id")
        .values("pk")[:RUNS_READ]
    )
    return list(
        EvalRun.objects.filter(pk__in=Subquery(recent))
        .annotate(timed_out=Count("results", filter=Q(results__error_class=TIME_LIMIT)))
        .filter(Q(status=EvalRun.Status.FAILED) | Q(timed_out__gt=0))
        .select_related("prompt", "version", "dataset")
        .order_by("-created_at", "-id")[:limit]
    )
