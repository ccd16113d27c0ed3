"""Canary analysis: a policy, and a look at the canary every beat tick that advances it, holds it
for a person or rolls it back, writing each decision with its figures into the release history.

Dependencies point down: evaluations uses ``releases.services`` for every release change (with
the system actor ``canary-analysis``) and ``runs`` for the calls; neither knows about this module.

The policy (``canary_policy_validate``) is stored validated, every field filled in. Its steps are
percentages; a final 100 is not judged (at 100 % there is no stable arm to compare with): passing
the step before it promotes. The figures of a look are in ``evaluations.canary.metrics``.

A look (``canary_analysis_look``), in one transaction per analysis:

1. lock the analysis row, skipping it if another worker holds it; only a running one is looked at;
2. if the release's canary is gone, is another canary (salt), or its weight is not the step's
   percent (changed by hand), the analysis ends: a person has taken over;
3. measure the window since the step started: the canary arm against the stable arm;
4. below the step's minimum minutes or calls in either arm: WAIT (stored once per step); past the
   step's maximum minutes without it: UNMEASURED;
5. judge every check: any failed -> FAILED; a required figure missing or measuring raised ->
   UNMEASURED; a sample ratio mismatch or any check not shown within its margin -> INCONCLUSIVE;
   else PASS;
6. act: FAILED aborts the canary at once (a rollback is never held, not even by a sample ratio
   mismatch); UNMEASURED retries on the next look, and past ``measure_retries`` in a row holds;
   INCONCLUSIVE holds for a person; PASS ramps to the next step, or promotes after the last one
   (a promotion gate that refuses holds instead);
7. store the verdict with its figures, linked to the release event it caused; that event's reason
   is the verdict's summary, so the release history reads the numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone

from config.metrics import CANARY_VERDICTS
from registry.actors import Actor
from registry.errors import Problem, RegistryError
from registry.events import EventType, event_emit
from registry.models import Prompt
from releases.errors import PromotionBlocked, ReleaseConflict, ReleaseStateInvalid
from releases.models import Environment, Release, ReleaseEvent
from releases.rights import release_change_check
from releases.selectors import schedule_active
from releases.services import (
    ensure_revision_matches,
    percent_to_basis_points,
    release_canary_abort,
    release_canary_promote,
    release_canary_set_percent,
    release_canary_start,
)
from releases.state import ReleaseState

from ..models import CanaryAnalysis, CanaryVerdict
from . import metrics
from .policy import (
    CanaryPolicyInvalid,
    CanaryTimes,
    canary_policy_times,
    canary_policy_validate,
    judged_steps,
)

logger = logging.getLogger(__name__)

Outcome = CanaryVerdict.Outcome
SYSTEM = Actor.system("canary-analysis")
ACTIVE = (CanaryAnalysis.Status.RUNNING, CanaryAnalysis.Status.HELD)

# --- errors ---------------------------------------------------------------------------------------


class CanaryNotRunning(RegistryError):
    message = "No canary is running in this release."


class CanaryAnalysisExists(RegistryError):
    message = "The canary is being analysed already; resume or stop that analysis first."


class CanaryAnalysisNotFound(RegistryError):
    message = "The release's canary has never been analysed."


class CanaryAnalysisStateInvalid(RegistryError):
    message = "That does not apply to the analysis as it is."


class CanaryScheduled(RegistryError):
    """A canary on a schedule follows the schedule: an analysis would fight it (decision 0049)."""

    message = "The release follows a schedule; cancel it before analysing the canary."


def _schedule_refuses(*, prompt: Prompt, environment: Environment) -> None:
    schedule = schedule_active(prompt=prompt, environment=environment)
    if schedule is not None:
        raise CanaryScheduled(
            f"The release follows schedule #{schedule.pk} (by {schedule.created_by_label}); a "
            "canary under automatic analysis follows the analysis, not a schedule. Cancel the "
            "schedule first, or let it run."
        )


def canary_analysis_steers(*, release_id: int) -> str:
    """``releases.steering.SteeringCheck``: a canary under an active analysis is the analysis's
    to ramp, promote or roll back; a schedule is refused (decision 0049)."""
    release = Release.objects.filter(pk=release_id).only("canary_salt").first()
    if release is None or not release.canary_salt:
        return ""
    analysis = CanaryAnalysis.objects.filter(
        release_id=release_id, canary_salt=release.canary_salt, status__in=ACTIVE
    ).first()
    if analysis is None:
        return ""
    return (
        f"The canary is under automatic analysis (#{analysis.pk}, "
        f"{analysis.get_status_display().lower()}): it follows the analysis, not a schedule. "
        "Stop the analysis first to steer the canary by a schedule."
    )


# --- reads ----------------------------------------------------------------------------------------


def canary_analysis_get(*, release: Release) -> CanaryAnalysis:
    """The analysis of the running canary, else the release's latest one."""
    analyses = CanaryAnalysis.objects.filter(release=release)
    analysis = (
        analyses.filter(canary_salt=release.canary_salt).first() if release.canary_salt else None
    ) or analyses.order_by("-updated_at", "-id").first()
    if analysis is None:
        raise CanaryAnalysisNotFound()
    return analysis


def canary_verdicts_recent(*, analysis: CanaryAnalysis, limit: int = 20) -> list[CanaryVerdict]:
    return list(analysis.verdicts.order_by("-created_at", "-id")[:limit])


def canary_analysis_times(analysis: CanaryAnalysis) -> CanaryTimes | None:
    """The derived times of a running analysis; none once it has stopped judging."""
    if analysis.status != CanaryAnalysis.Status.RUNNING:
        return None
    return canary_policy_times(
        policy=analysis.policy, step=analysis.step, step_started_at=analysis.step_started_at
    )


def canary_analysis_change_notice(
    *, release_id: int, before: ReleaseState, after: ReleaseState
) -> list[str]:
    """``releases.notices.ChangeNotice``: what a release change does to the canary analysis that
    drives the canary, said on the confirmation page before the click. The look (step 2 of the
    module docstring) ends an analysis whose canary is gone, is another one, or is not at its
    step's percent; a hand-made change that does so ends it."""
    if before.canary is None:
        return []
    analysis = CanaryAnalysis.objects.filter(
        release_id=release_id, canary_salt=before.canary.salt, status__in=ACTIVE
    ).first()
    if analysis is None:
        return []
    steps = analysis.policy["steps"]
    kept = "Its verdicts stay on its page."
    # A hand-made change since the analysis's last look (a ramp off its step) has ended it in all
    # but name: the look records it. Said as it is, not as if this change were the one to end it.
    overtaken = canary_analysis_overtaken(analysis)
    back_on_step = (
        after.canary is not None
        and after.canary.salt == analysis.canary_salt
        and after.canary.weight == _basis_points(steps[analysis.step])
    )
    if overtaken and not back_on_step:
        return [
            f"The canary analysis (step {analysis.step + 1} of {judged_steps(analysis.policy)} at "
            f"{steps[analysis.step]:g} %) no longer steers this canary: {overtaken} It records "
            f"that it ended at its next look. {kept}"
        ]
    which = (
        f"the canary analysis ({analysis.get_status_display().lower()}, step {analysis.step + 1} "
        f"of {judged_steps(analysis.policy)} at {steps[analysis.step]:g} %)"
    )
    if after.canary is None and after.stable == before.canary.version:
        return [
            f"Promoting by hand ends {which}: it takes the decision the analysis was to make. {kept}"
        ]
    if after.canary is None:
        return [f"This ends {which}: with the canary gone there is nothing left to judge. {kept}"]
    if after.canary.salt != before.canary.salt:
        return [
            f"This ends {which}: it judges the canary of version {before.canary.version}, which "
            f"this change replaces. {kept}"
        ]
    if after.canary.weight != _basis_points(steps[analysis.step]):
        return [
            f"Setting the canary to {after.canary.weight / 100:g} % by hand ends {which}: from "
            "then on the canary is yours to steer, and the analysis will not ramp, promote or "
            "roll it back any more."
        ]
    return []


# --- starting, attaching, resuming, stopping ------------------------------------------------------


def _basis_points(percent: int | float) -> int:
    return percent_to_basis_points(Decimal(str(percent)), pointer="/analysis/steps")


def _event_of(release: Release) -> ReleaseEvent:
    return ReleaseEvent.objects.get(release=release, revision=release.revision)


@transaction.atomic
def canary_analysis_start(
    *,
    prompt: Prompt,
    environment: Environment,
    version: int,
    policy: object,
    actor: Actor,
    reason: str = "",
    percent: Decimal | None = None,
    expected_revision: int | None = None,
    override_gates: bool = False,
    now: datetime | None = None,
) -> CanaryAnalysis:
    """Starts the canary at the policy's first step and the analysis with it, in one transaction:
    a canary that starts is analysed, or neither happens. ``percent``, if given, must be that
    first step (it exists so that a client sending both is told, not silently overruled)."""
    validated = canary_policy_validate(policy, pointer="/analysis")
    _schedule_refuses(prompt=prompt, environment=environment)
    first = validated["steps"][0]
    if percent is not None and Decimal(str(percent)) != Decimal(str(first)):
        raise CanaryPolicyInvalid(
            [
                Problem(
                    "percent_not_first_step",
                    f"With an analysis the canary starts at the policy's first step "
                    f"({first:g} %); leave percent out or send {first:g}.",
                    "/percent",
                )
            ]
        )
    release = release_canary_start(
        prompt=prompt,
        environment=environment,
        version=version,
        percent=Decimal(str(first)),
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        override_gates=override_gates,
    )
    return CanaryAnalysis.objects.create(
        release=release,
        canary_version=version,
        canary_salt=release.canary_salt,
        policy=validated,
        step=0,
        step_started_at=now or timezone.now(),
        created_by_label=actor.label,
    )


@transaction.atomic
def canary_analysis_attach(
    *,
    prompt: Prompt,
    environment: Environment,
    policy: object,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    now: datetime | None = None,
) -> CanaryAnalysis:
    """Analyses a canary that is running already, from the first step at or above its percent:
    a canary between steps is ramped up to that step (a release event), one on a step starts
    there. Traffic is never lowered: a canary above the last judged step is refused. The window
    opens now; calls before the attach are not judged.

    A canary analysed before (an analysis stopped by hand) gets its analysis back with the new
    policy, so its verdicts stay in one history."""
    # An analysis ramps, promotes and aborts the canary for whoever sets it going: only someone
    # who may change the canary here may (releases.rights).
    release_change_check(
        actor=actor, environment=environment, action=ReleaseEvent.Action.CANARY_PERCENT
    )
    validated = canary_policy_validate(policy, pointer="/analysis")
    # Lock order: prompt, then release (the release services' order), so the ramp below cannot
    # deadlock against a person's change.
    Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
    release = (
        Release.objects.select_for_update(of=("self",))
        .select_related("prompt", "environment", "canary_version")
        .filter(prompt=prompt, environment=environment)
        .first()
    )
    if release is None or release.canary_version_id is None:
        raise CanaryNotRunning()
    ensure_revision_matches(release, expected_revision)
    _schedule_refuses(prompt=prompt, environment=environment)
    existing = CanaryAnalysis.objects.filter(
        release=release, canary_salt=release.canary_salt
    ).first()
    if existing is not None and existing.status in ACTIVE:
        raise CanaryAnalysisExists()
    judged = validated["steps"][: judged_steps(validated)]
    step = next(
        (i for i, p in enumerate(judged) if _basis_points(p) >= release.canary_weight), None
    )
    if step is None:
        raise CanaryPolicyInvalid(
            [
                Problem(
                    "canary_past_steps",
                    f"The canary is at {release.canary_weight / 100:g} %, above the policy's last "
                    f"judged step ({judged[-1]:g} %); an analysis never lowers traffic.",
                    "/analysis/steps",
                )
            ]
        )
    if _basis_points(judged[step]) != release.canary_weight:
        release = release_canary_set_percent(
            prompt=prompt,
            environment=environment,
            percent=Decimal(str(judged[step])),
            actor=actor,
            reason=reason or f"Canary analysis attached: ramped to its step of {judged[step]:g} %.",
            expected_revision=release.revision,
        )
    analysis = existing or CanaryAnalysis(release=release, canary_salt=release.canary_salt)
    analysis.canary_version = release.canary_version.number
    analysis.policy = validated
    analysis.status = CanaryAnalysis.Status.RUNNING
    analysis.step = step
    analysis.step_started_at = now or timezone.now()
    analysis.unmeasured_looks = 0
    analysis.hold_reason = ""
    analysis.created_by_label = actor.label
    analysis.save()
    return analysis


@transaction.atomic
def canary_analysis_resume(
    *, analysis_id: int, actor: Actor, now: datetime | None = None
) -> CanaryAnalysis:
    """A held analysis judges again, on a fresh window of the current step: the evidence it was
    held on is not judged a second time (each look at the same data is another chance of a false
    verdict), and the step's minimum sample applies again."""
    analysis = (
        CanaryAnalysis.objects.select_for_update(of=("self", "release"))
        .select_related("release__environment")
        .get(pk=analysis_id)
    )
    release_change_check(
        actor=actor,
        environment=analysis.release.environment,
        action=ReleaseEvent.Action.CANARY_PERCENT,
    )
    if analysis.status != CanaryAnalysis.Status.HELD:
        raise CanaryAnalysisStateInvalid(
            f"Only a held analysis resumes; this one is {analysis.get_status_display().lower()}."
        )
    if analysis.release.canary_salt != analysis.canary_salt:
        raise CanaryAnalysisStateInvalid(
            "The canary this analysis judged is no longer running; attach an analysis to the "
            "running canary instead."
        )
    analysis.status = CanaryAnalysis.Status.RUNNING
    analysis.step_started_at = now or timezone.now()
    analysis.unmeasured_looks = 0
    analysis.hold_reason = ""
    analysis.save(
        update_fields=["status", "step_started_at", "unmeasured_looks", "hold_reason", "updated_at"]
    )
    logger.info("Canary analysis resumed: analysis=%s by=%s", analysis.pk, actor.label)
    return analysis


@transaction.atomic
def canary_analysis_stop(*, analysis_id: int, actor: Actor, reason: str = "") -> CanaryAnalysis:
    """The analysis stops judging; the canary stays exactly as it is."""
    # Waits for a look in progress (it holds this lock), then sees what the look decided.
    analysis = (
        CanaryAnalysis.objects.select_for_update(of=("self",))
        .select_related("release__environment")
        .get(pk=analysis_id)
    )
    release_change_check(
        actor=actor,
        environment=analysis.release.environment,
        action=ReleaseEvent.Action.CANARY_PERCENT,
    )
    if analysis.status not in ACTIVE:
        raise CanaryAnalysisStateInvalid(
            f"The analysis has stopped already ({analysis.get_status_display().lower()})."
        )
    analysis.status = CanaryAnalysis.Status.ENDED
    analysis.hold_reason = f"Stopped by {actor.label}" + (f": {reason}" if reason.strip() else ".")
    analysis.save(update_fields=["status", "hold_reason", "updated_at"])
    return analysis


# --- the look -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Look:
    """What one look did: its outcome (a verdict's, or ``ended`` / ``skipped``) and the verdict
    it stored, if any."""

    outcome: str
    verdict: CanaryVerdict | None = None


def canary_analyses_look(*, now: datetime | None = None) -> list[Look]:
    """Beat's tick: one look at every running analysis, each in its own transaction, so one
    failing release never stops the others."""
    looks = []
    running = CanaryAnalysis.objects.filter(status=CanaryAnalysis.Status.RUNNING).order_by("id")
    for analysis_id in running.values_list("id", flat=True):
        try:
            looks.append(canary_analysis_look(analysis_id=analysis_id, now=now))
        except SoftTimeLimitExceeded:
            # The tick's time is up (CELERY_TASK_SOFT_TIME_LIMIT): the look in hand rolled back,
            # and it and the ones not reached stay running for the next tick to look at.
            raise
        except Exception:
            logger.exception("Canary analysis look failed: analysis=%s", analysis_id)
    return looks


def canary_analysis_overtaken(analysis: CanaryAnalysis) -> str:
    """Why an active analysis no longer drives its release's canary (changed by hand since its
    last look, which will end it), or ''."""
    if analysis.status not in ACTIVE:
        return ""
    release = Release.objects.select_related("canary_version").get(pk=analysis.release_id)
    return _canary_changed(analysis, release)


def _canary_changed(analysis: CanaryAnalysis, release: Release) -> str:
    """Why the release's canary is no longer the one the analysis drives, or ''."""
    if release.canary_version_id is None:
        return "The canary is no longer running (promoted, aborted or rolled back by hand)."
    if release.canary_salt != analysis.canary_salt:
        return f"Another canary is running now (version {release.canary_version.number})."
    expected = analysis.policy["steps"][analysis.step]
    if release.canary_weight != _basis_points(expected):
        return (
            f"The canary was set to {release.canary_weight / 100:g} % by hand; the analysis had "
            f"it at {expected:g} %."
        )
    return ""


def canary_analysis_look(*, analysis_id: int, now: datetime | None = None) -> Look:
    """One look at one analysis; the numbered steps are in the module docstring."""
    now = now or timezone.now()
    with transaction.atomic():
        # The race: beat queues a tick every interval, a look can outlast one, and every worker
        # takes from the queue, so two looks at the same canary can run at once. Both would judge
        # the same window and both act on it (ramp twice, or ramp while the other rolls back). The
        # row lock makes one of them the looker; skip_locked lets the other pass by at once rather
        # than wait and then judge a state that has just changed under it.
        analysis = (
            CanaryAnalysis.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related(
                "release__prompt",
                "release__environment",
                "release__canary_version",
                "release__stable_version",
            )
            .filter(pk=analysis_id, status=CanaryAnalysis.Status.RUNNING)
            .first()
        )
        if analysis is None:
            return Look("skipped")
        analysis.last_looked_at = now
        release = analysis.release
        changed = _canary_changed(analysis, release)
        if changed:
            analysis.status = CanaryAnalysis.Status.ENDED
            analysis.hold_reason = changed
            analysis.save(update_fields=["status", "hold_reason", "last_looked_at", "updated_at"])
            logger.info("Canary analysis ended: analysis=%s (%s)", analysis.pk, changed)
            return Look("ended")
        judgement = _judge(analysis, release, now)
        return _act(analysis, release, judgement, now)


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a look decided: the outcome, the figures it was decided on, and a headline."""

    outcome: str
    figures: metrics.LookFigures
    headline: str


def _judge(analysis: CanaryAnalysis, release: Release, now: datetime) -> Judgement:
    """The outcome of this look, its figures and a headline."""
    policy, step = analysis.policy, analysis.step
    minutes = (now - analysis.step_started_at).total_seconds() / 60
    figures = metrics.LookFigures(
        since=analysis.step_started_at,
        until=now,
        minutes=round(minutes, 2),
        needed_minutes=policy["min_minutes"][step],
        needed_calls_per_arm=policy["min_calls"][step],
    )
    try:
        # A savepoint: a failed query must not break the transaction the outcome is saved in.
        with transaction.atomic():
            window = metrics.window_measure(
                release=release,
                since=analysis.step_started_at,
                until=now,
                sources=policy["sources"],
            )
            figures = replace(figures, calls=(window.canary.calls, window.stable.calls))
            sampled = (
                minutes >= policy["min_minutes"][step]
                and min(window.canary.calls, window.stable.calls) >= policy["min_calls"][step]
            )
            if not sampled:
                if minutes < policy["max_minutes"][step]:
                    return Judgement(Outcome.WAIT, figures, "waiting for the minimum sample")
                return Judgement(
                    Outcome.UNMEASURED,
                    figures,
                    f"no minimum sample by the step's deadline ({policy['max_minutes'][step]} min)",
                )
            checks = _checks(window, release, policy)
            srm = metrics.srm_check(window, release=release)
            figures = replace(figures, checks=checks, srm=srm, sample_cap=window.sample_cap)
    except SoftTimeLimitExceeded:
        raise  # not a measurement that failed: the tick's time is up (canary_analyses_look)
    except Exception as exc:
        logger.exception("Canary analysis could not measure: analysis=%s", analysis.pk)
        figures = replace(figures, error=f"{type(exc).__name__}: {exc}")
        return Judgement(Outcome.UNMEASURED, figures, f"measuring failed ({type(exc).__name__})")
    statuses = {c.status for c in checks}
    if metrics.CheckStatus.FAILED in statuses:
        return Judgement(Outcome.FAILED, figures, "failed")
    if metrics.CheckStatus.UNMEASURED in statuses:
        return Judgement(Outcome.UNMEASURED, figures, "a required figure is missing")
    if srm is not None and srm.mismatch:
        return Judgement(
            Outcome.INCONCLUSIVE,
            figures,
            f"sample ratio mismatch (p={srm.p_value:.3g}): the split is not what "
            "the canary's weight says, so no figure can be trusted",
        )
    if metrics.CheckStatus.UNCLEAR in statuses:
        return Judgement(
            Outcome.INCONCLUSIVE, figures, "not every check shows the canary within its margin"
        )
    return Judgement(Outcome.PASS, figures, "every check within its margin")


def _checks(
    window: metrics.Window, release: Release, policy: dict[str, Any]
) -> tuple[metrics.Check, ...]:
    alpha = policy["alpha"]
    c, s = window.canary, window.stable
    checks = [
        metrics.rate_check(
            name="error_rate",
            label="error rate",
            canary=(c.errors, c.calls),
            stable=(s.errors, s.calls),
            margin_pp=policy["max_error_rate_increase"],
            alpha=alpha,
            optional=False,
        ),
        metrics.rate_check(
            name="schema_failure_rate",
            label="schema failure rate",
            canary=(c.schema_failed, c.schema_checked),
            stable=(s.schema_failed, s.schema_checked),
            margin_pp=policy["max_schema_failure_increase"],
            alpha=alpha,
            optional=True,
        ),
        metrics.latency_check(window, margin=policy["max_p95_latency_increase"], alpha=alpha),
        metrics.cost_check(window, margin=policy["max_cost_increase"], alpha=alpha),
        metrics.feedback_check(window, margin=policy["max_feedback_decrease"], alpha=alpha),
    ]
    shadow = metrics.shadow_check(
        release=release,
        since=window.since,
        margin=policy["min_shadow_agreement"],
        alpha=alpha,
    )
    return tuple(checks) + ((shadow,) if shadow is not None else ())


def _summary(analysis: CanaryAnalysis, figures: metrics.LookFigures, headline: str) -> str:
    policy, step = analysis.policy, analysis.step
    canary, stable = figures.calls if figures.calls is not None else ("?", "?")
    text = (
        f"Canary analysis of v{analysis.canary_version}, step {step + 1} of "
        f"{judged_steps(policy)} ({policy['steps'][step]:g} %), {figures.minutes:.0f} min, "
        f"{canary} canary / {stable} stable sticky calls: {headline}."
    )
    checks = sorted(figures.checks or (), key=lambda c: c.status != metrics.CheckStatus.FAILED)
    if checks:
        text += " " + "; ".join(metrics.check_text(c) for c in checks) + "."
    if figures.error:
        text += f" {figures.error}"
    return text


def _act(analysis: CanaryAnalysis, release: Release, judgement: Judgement, now: datetime) -> Look:
    """Applies the outcome to the release and the analysis and stores the verdict."""
    outcome, figures, detail = judgement.outcome, judgement.figures, judgement.headline
    policy, step = analysis.policy, analysis.step
    judged_step = (step, policy["steps"][step])
    event: ReleaseEvent | None = None
    target = {"prompt": release.prompt, "environment": release.environment, "actor": SYSTEM}
    if outcome != Outcome.UNMEASURED:
        analysis.unmeasured_looks = 0
    try:
        if outcome == Outcome.WAIT:
            last = analysis.verdicts.order_by("-id").first()
            analysis.save(update_fields=["last_looked_at", "unmeasured_looks", "updated_at"])
            if last is not None and (last.outcome, last.step) == (Outcome.WAIT, step):
                return Look(Outcome.WAIT)  # stored once per step, not once a minute
            summary = _summary(analysis, figures, detail)
            return Look(
                Outcome.WAIT, _verdict(analysis, Outcome.WAIT, judged_step, figures, summary)
            )
        if outcome == Outcome.FAILED:
            summary = _summary(analysis, figures, "failed: rolled back")
            release = release_canary_abort(
                **target, reason=summary, expected_revision=release.revision
            )
            event, analysis.status = _event_of(release), CanaryAnalysis.Status.ROLLED_BACK
        elif outcome == Outcome.UNMEASURED:
            analysis.unmeasured_looks += 1
            tries = f"{analysis.unmeasured_looks} of {policy['measure_retries'] + 1} looks"
            if analysis.unmeasured_looks > policy["measure_retries"]:
                summary = _summary(
                    analysis, figures, f"could not measure: {detail} ({tries}); held"
                )
                analysis.status, analysis.hold_reason = CanaryAnalysis.Status.HELD, summary
            else:
                summary = _summary(analysis, figures, f"could not measure: {detail} ({tries})")
        elif outcome == Outcome.INCONCLUSIVE:
            summary = _summary(analysis, figures, f"inconclusive, held for a person: {detail}")
            analysis.status, analysis.hold_reason = CanaryAnalysis.Status.HELD, summary
        elif step + 1 < judged_steps(policy):
            following = policy["steps"][step + 1]
            summary = _summary(analysis, figures, f"passed: ramped to {following:g} %")
            release = release_canary_set_percent(
                **target,
                percent=Decimal(str(following)),
                reason=summary,
                expected_revision=release.revision,
            )
            event = _event_of(release)
            analysis.step, analysis.step_started_at = step + 1, now
        else:
            outcome = Outcome.PROMOTE
            summary = _summary(analysis, figures, "passed the last step: promoted")
            try:
                release = release_canary_promote(
                    **target, reason=summary, expected_revision=release.revision
                )
            except PromotionBlocked as exc:
                outcome = Outcome.INCONCLUSIVE
                summary = _summary(
                    analysis,
                    figures,
                    f"passed the last step, but the {exc.gate} gate refuses the promotion "
                    f"({exc.message}); held for a person",
                )
                analysis.status, analysis.hold_reason = CanaryAnalysis.Status.HELD, summary
            else:
                event, analysis.status = _event_of(release), CanaryAnalysis.Status.PROMOTED
    except (ReleaseConflict, ReleaseStateInvalid) as exc:
        # A person changed the release between this look's read and its change (the service
        # checked the revision under its lock). Nothing is decided; the next look sees the change.
        logger.info("Canary analysis skipped a changed release: analysis=%s (%s)", analysis.pk, exc)
        analysis.save(update_fields=["last_looked_at", "updated_at"])
        return Look("skipped")
    analysis.save()
    verdict = _verdict(analysis, outcome, judged_step, figures, summary, event=event)
    logger.info(
        "Canary analysis verdict: analysis=%s outcome=%s step=%s", analysis.pk, outcome, step
    )
    return Look(outcome, verdict)


def _verdict(
    analysis: CanaryAnalysis,
    outcome: str,
    judged_step: tuple[int, int | float],
    figures: metrics.LookFigures,
    summary: str,
    *,
    event: ReleaseEvent | None = None,
) -> CanaryVerdict:
    step, percent = judged_step
    verdict = CanaryVerdict.objects.create(
        analysis=analysis,
        outcome=outcome,
        step=step,
        percent=Decimal(str(percent)),
        summary=summary,
        figures=figures.as_dict(),
        release_event=event,
    )
    release = analysis.release
    counted = CANARY_VERDICTS.labels(
        prompt=release.prompt.key, environment=release.environment.name, verdict=outcome
    )
    transaction.on_commit(counted.inc)  # a look that rolls back decided nothing
    event_emit(
        EventType.CANARY_VERDICT,
        canary_verdict_data(verdict),
        prompt_id=release.prompt_id,
        environment=release.environment.name,
    )
    return verdict


def canary_verdict_data(verdict: CanaryVerdict) -> dict[str, Any]:
    """``canary.verdict`` (docs/webhooks.md): the outcome and its summary, which names the
    figures it was decided on; the release event it caused, if it changed the release."""
    analysis = verdict.analysis
    release = analysis.release
    return {
        "prompt": release.prompt.key,
        "environment": release.environment.name,
        "analysis_id": analysis.pk,
        "verdict_id": verdict.pk,
        "outcome": verdict.outcome,
        "canary_version": analysis.canary_version,
        "step": verdict.step + 1,
        "steps": judged_steps(analysis.policy),
        "percent": float(verdict.percent),
        "summary": verdict.summary,
        "release_event_id": verdict.release_event_id,
        "analysis_status": analysis.status,
    }
