"""The admin pages of A/B results: releases that ran experiments, and one experiment's results.

- ``/admin/evaluations/experiments/``: every release with an experiment, running or past.
- ``/admin/evaluations/experiments/<release id>/[?experiment=<start event id>]``: the running
  experiment's results (or a past one's), with a selector of the release's experiments and three
  server-rendered SVG charts (``evaluations.experiments.charts``).

There is no model to hang these on (results are read from calls and release events, and the
releases admin must not import evaluations), so the pages are added to the admin site's own URLs
and to its app list under "Evaluations". Who may look: staff who may read calls or releases
(Release managers can). Reads only; nothing here changes a release.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse

from registry.templatetags.registry_display import EMPTY, count, decimal, money, ms, percent
from releases.models import Release, ReleaseEvent

from ..experiments.analysis import Mean, Rate, VariantFigures, format_difference
from ..experiments.charts import colour, forest_plot, split_bars, timeline_chart
from ..experiments.selectors import (
    ExperimentNotFound,
    NoExperimentRunning,
    experiment_list,
    experiment_results,
)

TEMPLATES = "admin/evaluations/experiment"
TITLE = "A/B results"


def can_view_results(request: HttpRequest) -> bool:
    user = request.user
    return bool(
        user.is_active
        and user.is_staff
        and (user.has_perm("runs.view_call") or user.has_perm("releases.view_release"))
    )


def _rate(rate: Rate) -> str:
    if rate.rate is None or rate.ci is None:
        return EMPTY
    return (
        f"{percent(rate.rate)} ({percent(rate.ci.low)}–{percent(rate.ci.high)}) · "
        f"{count(rate.count)}/{count(rate.total)}"
    )


def _mean(mean: Mean, unit: Callable[[float], str]) -> str:
    """A mean in its unit, its 95 % interval in brackets, and how many calls it is over."""
    if mean.mean is None:
        return EMPTY
    if mean.ci is None:
        return f"{unit(mean.mean)} (n = {count(mean.n)})"
    return f"{unit(mean.mean)} ({unit(mean.ci.low)}–{unit(mean.ci.high)}) · n = {count(mean.n)}"


def _variant_row(v: VariantFigures) -> dict[str, str]:
    """The figures of one variant, written for the table (95 % intervals in brackets)."""
    return {
        "error_rate": _rate(v.error_rate),
        "schema_failure_rate": _rate(v.schema_failure_rate),
        "feedback": _mean(v.feedback, decimal),
        "latency": _mean(v.latency_ms, ms),
        "p50": ms(v.latency_p50_ms),
        "p95": ms(v.latency_p95_ms),
        "cost": _mean(v.cost, money),
        "tokens": " / ".join(count(m.mean) for m in (v.input_tokens, v.output_tokens)),
        "share": f"{percent(v.observed_share)} (expected {percent(v.expected_share)})",
    }


def _context(request: HttpRequest, title: str) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "title": title,
        "index_url": reverse("admin:evaluations_experiments"),
    }


def experiment_index_view(request: HttpRequest) -> HttpResponse:
    """Releases that have run an experiment, the running ones first; one query."""
    if not can_view_results(request):
        raise PermissionDenied
    releases = (
        Release.objects.filter(events__action=ReleaseEvent.Action.EXPERIMENT_START)
        .select_related("prompt", "environment")
        .annotate(
            experiments=Count(
                "events", filter=Q(events__action=ReleaseEvent.Action.EXPERIMENT_START)
            ),
            last_started=Max("events__created_at"),
        )
        .order_by("-last_started", "pk")
    )
    context = _context(request, TITLE) | {"releases": releases}
    return TemplateResponse(request, f"{TEMPLATES}/index.html", context)


def experiment_results_view(request: HttpRequest, release_id: int) -> HttpResponse:
    """One release's experiment results; ``?experiment=`` picks a past one."""
    if not can_view_results(request):
        raise PermissionDenied
    release = get_object_or_404(
        Release.objects.select_related("prompt", "environment"), pk=release_id
    )
    chosen = request.GET.get("experiment", "")
    # isdigit() alone admits "²", which int() refuses: a 500 instead of a 404.
    if chosen and not (chosen.isascii() and chosen.isdigit()):
        raise Http404("Name an experiment by its start event id.")
    records = experiment_list(release=release)
    context = _context(request, f"{TITLE}: {release}") | {
        "release": release,
        "records": records,
        "chosen": int(chosen) if chosen else None,
    }
    try:
        results = experiment_results(
            release=release, experiment_event=int(chosen) if chosen else None
        )
    except NoExperimentRunning:
        return TemplateResponse(request, f"{TEMPLATES}/results.html", context)
    except ExperimentNotFound as exc:
        raise Http404(exc.message) from exc
    names = [v.name for v in results.variants]
    context |= {
        "results": results,
        "record": results.record,
        "variants": [(v, colour(i), _variant_row(v)) for i, v in enumerate(results.variants)],
        "comparisons": [
            (
                c,
                EMPTY if c.difference is None else format_difference(c.metric, c.difference),
                EMPTY
                if c.ci is None
                else f"{format_difference(c.metric, c.ci.low)} to "
                f"{format_difference(c.metric, c.ci.high)}",
            )
            for c in results.comparisons
        ],
        "forest_plot": forest_plot(results.comparisons),
        "split_bars": split_bars(results.variants),
        "timeline_chart": timeline_chart(
            results.timeline,
            names,
            results.timeline_unit,
            start=results.record.started_at,
            end=results.record.stopped_at or results.computed_at,
        ),
    }
    return TemplateResponse(request, f"{TEMPLATES}/results.html", context)


# --- Hooking the pages into the admin site --------------------------------------------------------

_site_get_urls = admin.site.get_urls
_site_get_app_list = admin.site.get_app_list


def _get_urls() -> list[URLPattern | URLResolver]:
    # Ahead of the site's own patterns, whose "evaluations/<model>/" catch-alls would answer first.
    wrap = admin.site.admin_view
    return [
        path(
            "evaluations/experiments/",
            wrap(experiment_index_view),
            name="evaluations_experiments",
        ),
        path(
            "evaluations/experiments/<int:release_id>/",
            wrap(experiment_results_view),
            name="evaluations_experiment_results",
        ),
        *_site_get_urls(),
    ]


def _get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
    apps = _site_get_app_list(request, app_label)
    if app_label not in (None, "evaluations") or not can_view_results(request):
        return apps
    entry = {
        "name": TITLE,
        "object_name": "ExperimentResults",
        "perms": {"add": False, "change": False, "delete": False, "view": True},
        "admin_url": reverse("admin:evaluations_experiments"),
        "add_url": None,
        "view_only": True,
    }
    for app in apps:
        if app["app_label"] == "evaluations":
            app["models"] = sorted([*app["models"], entry], key=lambda m: m["name"])
            return apps
    if app_label is None:  # no other evaluations page for this user: the app holds just this one
        apps.append(
            {
                "name": "Evaluations",
                "app_label": "evaluations",
                "app_url": entry["admin_url"],
                "has_module_perms": True,
                "models": [entry],
            }
        )
        apps.sort(key=lambda a: a["name"].lower())
    return apps


admin.site.get_urls = _get_urls
admin.site.get_app_list = _get_app_list
