"""The admin for canary analyses: the policy, its derived times and every verdict with its figures.

The list shows each analysis with its release, canary version, status, step and derived times. An
analysis's page is read-only: the policy, the derived times, the ramp drawn over time, and the
verdicts, each with a table of the figures it was decided on. Resume and stop are verbs for users
with ``change_canaryanalysis`` (release managers, migration 0004), as list actions and as buttons
on the page; they go through ``evaluations.canary.services``, as the API does. Neither
changes traffic, so neither asks for a confirmation page. "Look now" (same permission, POST) runs
one look at once, the same look beat runs: without beat (``make run``) it is how an analysis gets
judged. It may change traffic as the policy says, exactly as the next beat tick would.

The releases admin never links here: releases sits below evaluations and does not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.timezone import localtime
from django.views.decorators.http import require_POST

from registry.actors import Actor
from registry.errors import RegistryError
from registry.templatetags.registry_display import basis_points, decimal, money, p_value

from ..canary.metrics import Check, check_text
from ..canary.policy import judged_steps, sources_text
from ..canary.services import (
    Look,
    canary_analysis_look,
    canary_analysis_overtaken,
    canary_analysis_resume,
    canary_analysis_stop,
    canary_analysis_times,
    canary_verdicts_recent,
)
from ..chart_time import axis_window, time_ticks
from ..models import CanaryAnalysis, CanaryVerdict

TEMPLATES = "admin/evaluations/canaryanalysis"
VERDICTS_SHOWN = 50
# The ramp drawing: a step line of the canary's percent over the looks, in SVG user units.
RAMP_WIDTH, RAMP_HEIGHT, RAMP_PAD = 640, 160, 40
RAMP_LABEL_GAP = 11  # px between two percent labels, about a line of their 10 px text


def _when(value: datetime | None) -> str:
    return localtime(value).strftime("%Y-%m-%d %H:%M") if value else "—"


def _figure(value: Any, unit: str) -> str:
    """A check's figure in its unit's precision (the unit itself is its own column)."""
    return money(value) if unit == "cost" else decimal(value)


def figure_rows(verdict: CanaryVerdict) -> list[dict[str, str]]:
    """One row per check of a verdict: what its table shows."""
    rows = []
    for stored in verdict.figures.get("checks", []):
        check = Check.from_dict(stored)
        unit = check.unit
        ci = check.ci
        rows.append(
            {
                "label": check.label,
                "unit": {"pp": "%", "cost": ""}.get(unit, unit),
                "canary": _figure(check.canary, unit),
                "stable": _figure(check.stable, unit),
                "difference": _figure(check.difference, unit),
                "ci": f"{_figure(ci[0], unit)} to {_figure(ci[1], unit)}" if ci else "—",
                "p_value": p_value(check.p_value),
                "margin": f"{check.margin:g}",
                "status": check.status.replace("_", " "),
                "passed": check.passed,
                "text": check_text(check),
            }
        )
    return rows


def ramp_svg_points(
    analysis: CanaryAnalysis, verdicts: list[CanaryVerdict], *, now: datetime | None = None
) -> dict[str, Any]:
    """The canary's percent over time as polyline points: it starts at the analysis's first
    step and moves at each verdict that ramped, promoted (100 %) or rolled back (0 %).

    A running analysis's line runs to ``now`` (its level holds until the next look), an ended
    one's to its last change; either way the axis is at least a minute wide
    (``chart_time.axis_window``), so a fresh analysis is a line at its step, not an empty box.
    The percent labels skip a step too close to the one below to be read (10 % above 5 %)."""
    steps = analysis.policy["steps"]
    start = analysis.created_at
    ordered = sorted(verdicts, key=lambda v: (v.created_at, v.pk))
    # Not steps[0]: an analysis attached to a running canary starts at the canary's step. The
    # oldest verdict shown records the percent it judged; without one, the step is unchanged.
    first = float(ordered[0].percent) if ordered else steps[analysis.step]
    changes: list[tuple[datetime, float]] = [(start, first)]
    for verdict in ordered:
        at = verdict.created_at
        if verdict.outcome == CanaryVerdict.Outcome.PASS:
            changes.append((at, steps[min(verdict.step + 1, len(steps) - 1)]))
        elif verdict.outcome == CanaryVerdict.Outcome.PROMOTE:
            changes.append((at, 100))
        elif verdict.outcome == CanaryVerdict.Outcome.FAILED:
            changes.append((at, 0))
    last = [changes[-1][0], analysis.last_looked_at or start, analysis.updated_at]
    if analysis.status == CanaryAnalysis.Status.RUNNING:
        last.append(now or timezone.now())
    start, end = axis_window(start, max(last), "minute")
    span = (end - start).total_seconds()
    width, height = RAMP_WIDTH - 2 * RAMP_PAD, RAMP_HEIGHT - 2 * RAMP_PAD

    def x(at: datetime) -> float:
        return round(RAMP_PAD + (at - start).total_seconds() / span * width, 1)

    def y(percent: float) -> float:
        return round(RAMP_PAD + (1 - percent / 100) * height, 1)

    points: list[str] = []
    for i, (at, percent) in enumerate(changes):
        if i:
            points.append(f"{x(at)},{y(changes[i - 1][1])}")  # hold the level until the change
        points.append(f"{x(at)},{y(percent)}")
    points.append(f"{x(end)},{y(changes[-1][1])}")
    labels: list[dict[str, Any]] = []
    for percent in sorted({0, *steps, 100}, reverse=True):
        if labels and y(percent) - labels[-1]["y"] < RAMP_LABEL_GAP and percent != 0:
            continue
        if labels and percent == 0 and y(0) - labels[-1]["y"] < RAMP_LABEL_GAP:
            labels.pop()  # 0 % is kept: the floor of the chart
        labels.append({"y": y(percent), "text": basis_points(round(percent * 100))})
    ticks = time_ticks(start, end, most=5)
    return {
        "points": " ".join(points),
        "width": RAMP_WIDTH,
        "height": RAMP_HEIGHT,
        "labels": labels[::-1],
        "ticks": [
            {
                "x": x(tick.at),
                "text": tick.label,
                "anchor": "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle",
            }
            for i, tick in enumerate(ticks)
        ],
        "start": _when(start),
        "end": _when(end),
        "pad": RAMP_PAD,
        "right": RAMP_WIDTH - RAMP_PAD,
        "bottom": RAMP_HEIGHT - RAMP_PAD,
    }


def duration_text(minutes: int) -> str:
    """``30 min``, ``4 h``, ``1 h 30 min``, ``2 days``: a policy's minutes as a person says them."""
    days, rest = divmod(minutes, 24 * 60)
    if days and not rest:
        return f"{days} day{'s' if days != 1 else ''}"
    hours, mins = divmod(minutes, 60)
    if hours and mins:
        return f"{hours} h {mins} min"
    return f"{hours} h" if hours else f"{mins} min"


def policy_steps(policy: dict[str, Any]) -> list[dict[str, str]]:
    """One row per judged step: its share of subjects, when it may be judged, when it gives up."""
    judged = judged_steps(policy)
    return [
        {
            "step": f"{i + 1} of {judged}",
            "share": f"{policy['steps'][i]:g} % of subjects",
            "judged_after": f"{duration_text(policy['min_minutes'][i])} and "
            f"{policy['min_calls'][i]:,} sticky calls in each arm",
            "gives_up_after": duration_text(policy["max_minutes"][i]),
        }
        for i in range(judged)
    ]


# What each margin checks, in words: (label, sentence with the number and its unit).
MARGINS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "max_error_rate_increase": (
        "Error rate",
        lambda v: f"at most {v:g} percentage point{'s' if v != 1 else ''} above stable",
    ),
    "max_schema_failure_increase": (
        "Answers that fail the response schema",
        lambda v: f"at most {v:g} percentage point{'s' if v != 1 else ''} above stable",
    ),
    "max_p95_latency_increase": ("p95 latency", lambda v: f"at most {v:g} % above stable"),
    "max_cost_increase": ("Cost per call", lambda v: f"at most {v:g} % above stable"),
    "max_feedback_decrease": (
        "Feedback",
        lambda v: f"at most {v:g} points below stable, on the −1 to 1 feedback scale",
    ),
    "min_shadow_agreement": (
        "Shadow agreement",
        lambda v: (
            f"at least {v:g} % of the canary's shadow runs answer as the live call did "
            "(checked only when it has shadow runs)"
        ),
    ),
}


def policy_sentences(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy as a page says it: the ramp, the margins with their units, the rules."""
    steps = policy["steps"]
    judged = [f"{p:g} %" for p in steps[: judged_steps(policy)]]
    ramp = ", ".join(judged) + " of subjects"
    ramp += ", then promoted to 100 %." if steps[-1] >= 100 else "; passing the last promotes."
    alpha = policy["alpha"]
    retries = policy["measure_retries"]
    return {
        "ramp": ramp,
        "steps": policy_steps(policy),
        "margins": [(label, say(policy[name])) for name, (label, say) in MARGINS.items()],
        "rules": [
            f"Differences are judged with {100 * (1 - alpha):g} % confidence: a check fails when "
            "the canary is shown worse than stable by more than its margin, passes when it is "
            "shown within it; otherwise the step holds for a person.",
            f"A step that cannot be measured {retries} look{'s' if retries != 1 else ''} in a row "
            "holds for a person."
            if retries
            else "A step that cannot be measured holds for a person at once.",
            f"Calls counted: {sources_text(policy['sources'])}.",
        ],
    }


def look_message(result: Look, analysis: CanaryAnalysis) -> tuple[int, str]:
    """What a look triggered by hand did, for the person who triggered it. A verdict's summary
    names the analysis itself ("Canary analysis of v3, step 1 of 3 ..."): it is said alone, never
    after the same words again."""
    if result.outcome == "skipped":
        return (
            messages.WARNING,
            f"{analysis}: no look. It is not running, another look holds it right now, or the "
            "release changed during the look; reload to see where it stands.",
        )
    if result.outcome == "ended":
        analysis.refresh_from_db(fields=["hold_reason"])
        return messages.WARNING, f"{analysis} ended: {analysis.hold_reason}"
    if result.verdict is None:  # a wait already stored for this step
        return messages.INFO, f"{analysis}: still waiting for the step's minimum sample."
    level = messages.ERROR if result.outcome == CanaryVerdict.Outcome.FAILED else messages.INFO
    return level, result.verdict.summary


@admin.register(CanaryAnalysis)
class CanaryAnalysisAdmin(admin.ModelAdmin):
    list_display = [
        "release_shown",
        "version_shown",
        "status",
        "step_shown",
        "earliest_promotion",
        "latest_verdict",
        "last_looked_at",
    ]
    list_select_related = ["release__prompt", "release__environment"]
    list_filter = ["status", "release__environment"]
    search_fields = ["release__prompt__key"]
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    actions = ["resume_selected", "stop_selected"]
    change_form_template = f"{TEMPLATES}/change_form.html"
    # In users' words: the step as "2 of 4", why it holds, who started it. The salt, the step's
    # index and the raw counter are internals (the salt is on the release's history).
    readonly_fields = [
        "release",
        "version_shown",
        "status",
        "hold_reason_shown",
        "step_shown",
        "step_started_at",
        "looks_shown",
        "last_looked_at",
        "started_by",
        "created_at",
    ]
    fields = readonly_fields

    # Analyses are made by starting or attaching to a canary (the API), verdicts by the looks;
    # neither is edited by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_steer_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Resume and stop: the model's change permission, though the page itself is read-only."""
        return request.user.has_perm("evaluations.change_canaryanalysis")

    @admin.display(description="Release", ordering="release__prompt__key")
    def release_shown(self, analysis: CanaryAnalysis) -> str:
        return f"{analysis.release.prompt.key} @ {analysis.release.environment.name}"

    @admin.display(description="Canary", ordering="canary_version")
    def version_shown(self, analysis: CanaryAnalysis) -> str:
        return f"v{analysis.canary_version}"

    @admin.display(description="Step")
    def step_shown(self, analysis: CanaryAnalysis) -> str:
        steps = analysis.policy["steps"]
        return (
            f"{analysis.step + 1} of {judged_steps(analysis.policy)} · {steps[analysis.step]:g} %"
        )

    @admin.display(description="Why it stopped or waits")
    def hold_reason_shown(self, analysis: CanaryAnalysis) -> str:
        overtaken = "" if analysis.hold_reason else canary_analysis_overtaken(analysis)
        if overtaken:
            return f"{overtaken} It ends at its next look (Look now ends it at once)."
        return analysis.hold_reason or "—"

    @admin.display(description="Looks that could not measure")
    def looks_shown(self, analysis: CanaryAnalysis) -> str:
        retries = analysis.policy["measure_retries"]
        if not analysis.unmeasured_looks:
            return f"None in a row (it holds for a person after {retries})"
        return f"{analysis.unmeasured_looks} in a row (it holds for a person after {retries})"

    @admin.display(description="Started by")
    def started_by(self, analysis: CanaryAnalysis) -> str:
        return analysis.created_by_label or "—"

    @admin.display(description="Earliest promotion")
    def earliest_promotion(self, analysis: CanaryAnalysis) -> str:
        times = canary_analysis_times(analysis)
        return _when(times.earliest_promotion) if times else "—"

    @admin.display(description="Latest verdict of the step")
    def latest_verdict(self, analysis: CanaryAnalysis) -> str:
        times = canary_analysis_times(analysis)
        return _when(times.latest_verdict) if times else "—"

    # --- the page ---------------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        analysis = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if analysis is not None:
            verdicts = canary_verdicts_recent(analysis=analysis, limit=VERDICTS_SHOWN)
            context.update(
                analysis=analysis,
                policy=policy_sentences(analysis.policy),
                times=canary_analysis_times(analysis),
                verdicts=[(v, figure_rows(v)) for v in verdicts],
                ramp=ramp_svg_points(analysis, verdicts, now=timezone.now()),
                can_steer=self.has_steer_permission(request),
                resume_url=reverse("admin:evaluations_canaryanalysis_resume", args=[analysis.pk]),
                stop_url=reverse("admin:evaluations_canaryanalysis_stop", args=[analysis.pk]),
                look_url=reverse("admin:evaluations_canaryanalysis_look", args=[analysis.pk]),
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<int:analysis_id>/resume/",
                view(require_POST(self.resume_view)),
                name="evaluations_canaryanalysis_resume",
            ),
            path(
                "<int:analysis_id>/stop/",
                view(require_POST(self.stop_view)),
                name="evaluations_canaryanalysis_stop",
            ),
            path(
                "<int:analysis_id>/look/",
                view(require_POST(self.look_view)),
                name="evaluations_canaryanalysis_look",
            ),
            *super().get_urls(),
        ]

    def _steer(self, request: HttpRequest, analysis_id: int, verb: str) -> HttpResponse:
        if not self.has_steer_permission(request):
            return HttpResponse(status=403)
        analysis = get_object_or_404(CanaryAnalysis, pk=analysis_id)
        self._apply(request, analysis, verb)
        return HttpResponseRedirect(
            reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk])
        )

    def resume_view(self, request: HttpRequest, analysis_id: int) -> HttpResponse:
        return self._steer(request, analysis_id, "resume")

    def stop_view(self, request: HttpRequest, analysis_id: int) -> HttpResponse:
        return self._steer(request, analysis_id, "stop")

    def look_view(self, request: HttpRequest, analysis_id: int) -> HttpResponse:
        return self._steer(request, analysis_id, "look")

    def _apply(self, request: HttpRequest, analysis: CanaryAnalysis, verb: str) -> bool:
        if verb == "look":
            try:
                result = canary_analysis_look(analysis_id=analysis.pk)
            except RegistryError as exc:
                self.message_user(request, f"{analysis}: {exc.message}", messages.ERROR)
                return False
            level, text = look_message(result, analysis)
            self.message_user(request, text, level)
            return level != messages.ERROR
        actor = Actor.for_user(request.user)
        try:
            if verb == "resume":
                canary_analysis_resume(analysis_id=analysis.pk, actor=actor)
            else:
                canary_analysis_stop(analysis_id=analysis.pk, actor=actor)
        except RegistryError as exc:
            self.message_user(request, f"{analysis}: {exc.message}", messages.ERROR)
            return False
        done = "resumed on a fresh window" if verb == "resume" else "stopped; the canary stays"
        self.message_user(request, f"{analysis} {done}.", messages.SUCCESS)
        return True

    @admin.action(permissions=["steer"], description="Resume selected held analyses")
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[CanaryAnalysis]) -> None:
        for analysis in queryset:
            self._apply(request, analysis, "resume")

    @admin.action(permissions=["steer"], description="Stop selected analyses (canaries stay)")
    def stop_selected(self, request: HttpRequest, queryset: QuerySet[CanaryAnalysis]) -> None:
        for analysis in queryset:
            self._apply(request, analysis, "stop")
