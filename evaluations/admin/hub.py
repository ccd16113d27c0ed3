"""What evaluations adds to a prompt's page (``registry.admin.hub``): its datasets, its recent eval
runs and its A/B results. Registered by ``EvaluationsConfig.ready()``.

Each panel is one query for one prompt, whatever the number of cases, results or calls (counts are
annotations, never a loop), and shows only to users who may read what it lists.
"""

from __future__ import annotations

from django.db.models import Count, Max, Q
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timezone import localtime

from registry.admin.hub import Link, Panel
from registry.models import Prompt
from releases.models import Release, ReleaseEvent

from ..datasets.selectors import dataset_list
from ..evalruns.report import eval_run_summary
from ..evalruns.services import eval_run_list
from .experiments import can_view_results

RECENT_RUNS = 10
EMPTY = "—"


def _when(moment) -> str:
    return localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else EMPTY


def datasets_panel(request: HttpRequest, prompt: Prompt) -> Panel | None:
    if not request.user.has_perm("evaluations.view_dataset"):
        return None
    datasets = list(dataset_list(prompt=prompt))
    links = []
    if request.user.has_perm("evaluations.add_dataset"):
        add = reverse("admin:evaluations_dataset_add")
        links.append(Link("Add a dataset", f"{add}?{urlencode({'prompt': prompt.pk})}"))
    return Panel(
        title="Datasets",
        headers=["Dataset", "Cases", "Holdout", "Must pass", "Updated"],
        rows=[
            [
                format_html(
                    '<a href="{}">{}</a>',
                    reverse("admin:evaluations_dataset_change", args=[d.pk]),
                    d.name,
                ),
                f"{d.case_count:,}",
                f"{d.holdout_count:,}",
                f"{d.must_pass_count:,}",
                _when(d.updated_at),
            ]
            for d in datasets
        ],
        links=links,
        empty="No dataset yet: a dataset holds the cases eval runs and promotion gates score.",
        order=30,
    )


def _percent(value: float | None) -> str:
    return EMPTY if value is None else f"{value:.1f} %"


def _points(value: float | None) -> str:
    return EMPTY if value is None else f"{value:+.1f} pp"


def eval_runs_panel(request: HttpRequest, prompt: Prompt) -> Panel | None:
    if not request.user.has_perm("evaluations.view_evalrun"):
        return None
    runs = list(eval_run_list(prompt=prompt)[:RECENT_RUNS])
    rows = []
    for run in runs:
        summary = eval_run_summary(run)
        rows.append(
            [
                format_html(
                    '<a href="{}">#{}</a>',
                    reverse("admin:evaluations_evalrun_change", args=[run.pk]),
                    run.pk,
                ),
                f"v{run.version.number}",
                run.dataset.name,
                "Gate run" if run.include_holdout else "Author run",
                run.get_status_display(),
                _percent(summary.pass_rate),
                _points(summary.delta_points),
                _when(run.created_at),
            ]
        )
    changelist = reverse("admin:evaluations_evalrun_changelist")
    links = [Link("Every eval run of this prompt", f"{changelist}?prompt__id__exact={prompt.pk}")]
    if request.user.has_perm("evaluations.add_evalrun"):
        links.append(Link("Start an eval run", reverse("admin:evaluations_evalrun_add")))
    return Panel(
        title="Recent eval runs",
        headers=[
            "Run",
            "Version",
            "Dataset",
            "Kind",
            "Status",
            "Pass rate",
            "Δ vs stable",
            "Started",
        ],
        rows=rows,
        links=links,
        empty="No eval run yet.",
        order=40,
        note=f"The {RECENT_RUNS} most recent." if len(runs) == RECENT_RUNS else "",
    )


def experiments_panel(request: HttpRequest, prompt: Prompt) -> Panel | None:
    """The prompt's releases that have run an A/B experiment: the running one and how many ran."""
    if not can_view_results(request):
        return None
    started = Q(events__action=ReleaseEvent.Action.EXPERIMENT_START)
    releases = (
        Release.objects.filter(started, prompt=prompt)
        .select_related("environment")
        .annotate(
            experiments=Count("events", filter=started),
            last_started=Max("events__created_at", filter=started),
        )
        .order_by("environment__position")
    )
    return Panel(
        title="A/B results",
        headers=["Environment", "Running now", "Experiments", "Last started", ""],
        rows=[
            [
                r.environment.name,
                r.experiment_name or "none",
                f"{r.experiments:,}",
                _when(r.last_started),
                format_html(
                    '<a href="{}">Results</a>',
                    reverse("admin:evaluations_experiment_results", args=[r.pk]),
                ),
            ]
            for r in releases
        ],
        empty="No experiment yet: start one from a release page.",
        order=60,
    )
