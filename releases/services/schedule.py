"""Scheduled changes: release changes applied later, in order, by beat (decision 0049).

A schedule is one or more steps, each a ``ReleaseChange`` (kept as ``stored.change_stored``
keeps it) and the time it is due: a deploy at 02:00 is a schedule of one step; a canary's ramp
is ``canary_percent`` steps, then ``canary_promote`` (optionally a ``canary_start`` first). A
release has at most one active schedule.

Scheduling (``schedule_create``) is the one way in. In an environment that requires review a
schedule with a held step is refused (``ReviewRequired``) unless it is made by applying an
approved change request, which called ``schedule_validate`` and ``schedule_plan_check`` when it
was proposed (``releases.services.change_requests``; the times and the plan are checked again
then).

1. check the steps' own values, before any lock: at least one, at most ``STEPS_MAX``, each in
   the future and later than the one before, each a verb that can wait (not a rollback: its
   default target depends on when it runs) that reads back from its stored form the same and
   whose ``check`` passes;
2. lock the prompt (the release services' lock order) and read the release: its revision is the
   one the first step expects (``If-Match``, if sent, must be it);
3. refuse a second active schedule (``ScheduleExists``) and a release something else steers
   (``ScheduleRefused``: a canary under automatic analysis; ``releases.steering``);
4. walk the steps through ``preview`` from the release as it is, so a plan that cannot apply (a
   ramp with no canary, a version that is a draft) is refused now, not at 02:00;
5. write the schedule and its steps; the partial unique constraint settles a race between two.

Applying (``schedules_apply``, beat's ``releases.apply_due_schedules`` every minute): each
schedule with a due step is advanced in its own transactions, one per step, in time order:

1. lock the schedule row, skipping it if another run holds it (two beat runs overlapping never
   apply a step twice); only an active one is advanced;
2. take its first pending step; if it is not due yet, stop;
3. apply it as the system actor ``schedule #7 (by alice)``, with ``expected_revision`` the
   revision the step before left (or the one at scheduling time), so the release moved by anyone
   else meanwhile refuses it (``ReleaseConflict``);
4. applied: the step keeps its release event and the schedule the new revision; the last step
   makes the schedule done. Refused (the release moved, a gate, the state, something else steering
   it): the step is skipped with the reason, the rest is cancelled, the schedule stopped, a
   ``schedule.step_skipped`` event is emitted and a warning logged; all in the step's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.actors import Actor
from registry.errors import Problem, RegistryError
from registry.events import EventType, event_emit
from registry.models import Prompt, PromptVersion

from ..errors import (
    PromotionBlocked,
    ReleaseConflict,
    ReleaseInvalid,
    ReleaseStateInvalid,
    ReviewRequired,
    ScheduleEnded,
    ScheduleExists,
    ScheduleRefused,
    VersionNotReleasable,
)
from ..models import (
    ChangeRequest,
    Environment,
    Release,
    ReleaseEvent,
    Schedule,
    ScheduledStep,
)
from ..rights import release_change_check
from ..selectors import schedule_active
from ..state import ReleaseState, release_state
from ..steering import steered_elsewhere
from .canary import CanaryAbort, CanaryPercent, CanaryPromote, CanaryStart
from .common import ReleaseChange, ensure_revision_matches
from .deploy import Deploy
from .rollback import Rollback
from .stored import change_from_stored, change_stored

logger = logging.getLogger(__name__)

STEPS_MAX = 20
LABEL_MAX = Schedule._meta.get_field("created_by_label").max_length
Action = ReleaseEvent.Action


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step as a caller plans it: the change and when it is due."""

    at: datetime
    change: ReleaseChange


# The verbs the API and the admin offer as steps, with the arguments each takes. A rollback
# cannot wait (its target depends on when it runs); experiments and shadows start by hand.
SCHEDULABLE: dict[str, tuple[type[ReleaseChange], tuple[str, ...]]] = {
    Action.DEPLOY: (Deploy, ("version", "override_gates")),
    Action.CANARY_START: (CanaryStart, ("version", "percent", "override_gates")),
    Action.CANARY_PERCENT: (CanaryPercent, ("percent",)),
    Action.CANARY_PROMOTE: (CanaryPromote, ("override_gates",)),
    Action.CANARY_ABORT: (CanaryAbort, ()),
}


def planned_step(*, at: datetime, action: str, **arguments: object) -> PlannedStep:
    """A step from an action's name and its arguments (those it takes; ``None`` is left out),
    or ``ReleaseInvalid`` naming what is missing or extra."""
    if action not in SCHEDULABLE:
        raise _invalid("not_schedulable", f"Name one of: {', '.join(SCHEDULABLE)}.", "/action")
    verb, takes = SCHEDULABLE[action]
    given = {name: value for name, value in arguments.items() if value is not None}
    problems = [
        Problem("arguments_of_action", f"{action} needs a {name}.", f"/{name}")
        for name in takes
        if name != "override_gates" and name not in given
    ] + [
        Problem("arguments_of_action", f"{action} takes no {name}.", f"/{name}")
        for name in given
        if name not in takes and not (name == "override_gates" and given[name] is False)
    ]
    if problems:
        raise ReleaseInvalid(problems)
    return PlannedStep(at=at, change=verb(**{k: v for k, v in given.items() if k in takes}))


# --- words --------------------------------------------------------------------------------------


def change_text(change: ReleaseChange) -> str:
    """A step's change in a few words: "deploy v3", "canary v3 at 10 %", "25 %", "promote"."""
    action = change.action
    if action == Action.DEPLOY:
        return f"deploy v{change.version}"  # type: ignore[attr-defined]
    if action == Action.CANARY_START:
        return f"canary v{change.version} at {_percent(change.percent)} %"  # type: ignore[attr-defined]
    if action == Action.CANARY_PERCENT:
        return f"{_percent(change.percent)} %"  # type: ignore[attr-defined]
    if action == Action.CANARY_PROMOTE:
        return "promote"
    if action == Action.CANARY_ABORT:
        return "abort the canary"
    return Action(action).label.lower()


def _percent(value: object) -> str:
    """25, 12.5: as a person writes it (no trailing zeros, no exponent)."""
    return f"{Decimal(str(value)).normalize():f}"


def step_change_text(step: ScheduledStep) -> str:
    try:
        return change_text(change_from_stored(step.change))
    except ReleaseInvalid:
        return str(step.change.get("action", "?"))


def steps_text(steps: Sequence[ScheduledStep]) -> str:
    """ "25 % at 2026-03-02 14:00 UTC, then 50 % at 18:00, then promote at 2026-03-03 02:00 UTC":
    the date is said when it changes."""
    parts, day = [], None
    for step in steps:
        at = step.at.astimezone(UTC)
        when = at.strftime("%H:%M") if at.date() == day else at.strftime("%Y-%m-%d %H:%M UTC")
        day = at.date()
        parts.append(f"{step_change_text(step)} at {when}")
    return ", then ".join(parts)


def schedule_actor(schedule: Schedule) -> Actor:
    """What the history says applied a step: the schedule, and who made it."""
    label = f"schedule #{schedule.pk} (by {schedule.created_by_label})"
    return Actor.system(label[:LABEL_MAX])


# --- scheduling ---------------------------------------------------------------------------------


def _invalid(code: str, detail: str, pointer: str) -> ReleaseInvalid:
    return ReleaseInvalid([Problem(code, detail, pointer)])


def schedule_validate(
    *, steps: Sequence[PlannedStep], reason: str, now: datetime | None = None
) -> None:
    """Step 1 of scheduling: the steps' own values, every problem named with its step."""
    now = now or timezone.now()
    if not steps:
        raise _invalid("no_steps", "A schedule has at least one step.", "/steps")
    if len(steps) > STEPS_MAX:
        raise _invalid("too_many_steps", f"A schedule has at most {STEPS_MAX} steps.", "/steps")
    problems: list[Problem] = []
    for index, step in enumerate(steps):
        pointer, name = f"/steps/{index}", f"Step {index + 1}"
        if step.at <= now:
            problems.append(
                Problem(
                    "in_the_past",
                    f"{name} ({change_text(step.change)}) is due at "
                    f"{step.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, which has passed; "
                    "a schedule's steps are in the future.",
                    f"{pointer}/at",
                )
            )
        if index and step.at <= steps[index - 1].at:
            problems.append(
                Problem(
                    "steps_not_in_order",
                    f"{name} is due no later than step {index}; steps follow each other in time.",
                    f"{pointer}/at",
                )
            )
        if isinstance(step.change, Rollback):
            problems.append(
                Problem(
                    "not_schedulable",
                    f"{name}: a rollback cannot be scheduled (what it undoes depends on when it "
                    "runs); roll back by hand, or schedule the change itself.",
                    f"{pointer}/action",
                )
            )
            continue
        try:
            # Kept as JSON and read back when due: a change that does not read back the same
            # is refused now, not when it is due.
            if change_from_stored(change_stored(step.change)) != step.change:
                raise _invalid("invalid_change", "The change cannot be kept.", "")
            step.change.check(reason=reason)
        except ReleaseInvalid as exc:
            problems += [
                p if p.pointer == "/reason" else Problem(p.code, f"{name}: {p.detail}", pointer)
                for p in exc.problems
            ]
    if problems:
        raise ReleaseInvalid(problems)


def schedule_plan_check(
    release: Release | None, prompt: Prompt, steps: Sequence[PlannedStep]
) -> ReleaseState:
    """Step 4: every step previewed from the release as it is, each on the one before; the
    versions named exist and are committed. Gates are judged when a step applies."""
    state = release_state(release) if release is not None else ReleaseState()
    for index, step in enumerate(steps):
        name = f"Step {index + 1} ({change_text(step.change)})"
        version = getattr(step.change, "version", None)
        if version is not None:
            found = PromptVersion.objects.filter(prompt=prompt, number=version).first()
            if found is None:
                raise _invalid(
                    "unknown_version",
                    f"{name}: {prompt.key} has no version {version}.",
                    f"/steps/{index}/version",
                )
            if not found.is_committed:
                raise VersionNotReleasable(
                    f"{name}: version {version} is a draft; commit it before scheduling it."
                )
        try:
            state = step.change.preview(release, state).target
        except ReleaseStateInvalid as exc:
            raise ReleaseStateInvalid(
                f"{name} would not apply to the release as the steps before leave it: {exc.message}"
            ) from exc
    return state


def schedule_refusals_check(
    *, prompt: Prompt, environment: Environment, release: Release | None
) -> None:
    """Step 3: what refuses any schedule on the release, whatever its steps."""
    existing = schedule_active(prompt=prompt, environment=environment)
    if existing is not None:
        raise _exists(existing)
    refusals = steered_elsewhere(release_id=release.pk if release else None)
    if refusals:
        raise ScheduleRefused(" ".join(refusals))


def schedule_review_hold(
    *,
    environment: Environment,
    steps: Sequence[PlannedStep],
    change_request: ChangeRequest | None,
) -> None:
    """``ReviewRequired`` for a schedule with a held step in an environment that requires
    review, made other than by applying a change request; a schedule of ways back only (a
    canary abort) never waits, as those changes never do."""
    if not environment.requires_review or change_request is not None:
        return
    held = [step.change.action for step in steps if step.change.held]
    if held:
        raise ReviewRequired(environment=environment.name, action=f"scheduling {held[0]}")


def schedule_create(
    *,
    prompt: Prompt,
    environment: Environment,
    steps: Sequence[PlannedStep],
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    now: datetime | None = None,
    change_request: ChangeRequest | None = None,
) -> Schedule:
    """Schedules ``steps`` on the release (the numbered steps are in the module docstring).

    The one way a schedule is made (API, admin, code). The author must be one who may make every
    step's change now (``releases.rights``): the steps are applied later by the system. In an
    environment that requires review the schedule itself is what is reviewed: one with a held
    step is made only by applying its approved ``change_request`` (decision 0048), since beat
    applies the steps as the system, which review does not hold."""
    for step in steps:
        release_change_check(actor=actor, environment=environment, action=step.change.action)
    schedule_review_hold(environment=environment, steps=steps, change_request=change_request)
    schedule_validate(steps=steps, reason=reason, now=now)
    try:
        with transaction.atomic():
            Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
            release = (
                Release.objects.select_related("prompt", "environment", "canary_version")
                .filter(prompt=prompt, environment=environment)
                .first()
            )
            revision = release.revision if release is not None else 0
            if release is not None:
                ensure_revision_matches(release, expected_revision)
            elif expected_revision not in (None, 0):
                raise ReleaseConflict(current_revision=0)
            schedule_refusals_check(prompt=prompt, environment=environment, release=release)
            schedule_plan_check(release, prompt, steps)
            schedule = Schedule.objects.create(
                prompt=prompt,
                environment=environment,
                revision=revision,
                created_by_id=actor.user_id,
                created_by_label=actor.label,
                reason=reason,
            )
            ScheduledStep.objects.bulk_create(
                ScheduledStep(
                    schedule=schedule,
                    position=index + 1,
                    change=change_stored(step.change),
                    at=step.at,
                )
                for index, step in enumerate(steps)
            )
    except IntegrityError as exc:
        # Another schedule was made between our read and our insert (the partial unique
        # constraint): the same refusal as if we had seen it.
        existing = schedule_active(prompt=prompt, environment=environment)
        if existing is None:
            raise
        raise _exists(existing) from exc
    logger.info(
        "Schedule created: schedule=%s prompt=%s env=%s steps=%d by=%s",
        schedule.pk,
        prompt.key,
        environment.name,
        len(steps),
        actor.label,
    )
    return schedule


def _exists(existing: Schedule) -> ScheduleExists:
    pending = [s for s in existing.steps.all() if s.state == ScheduledStep.State.PENDING]
    return ScheduleExists(
        f"The release has an active schedule already (#{existing.pk} by "
        f"{existing.created_by_label}: {steps_text(pending) or 'no step left'}); cancel it "
        "before scheduling again."
    )


# --- cancelling ---------------------------------------------------------------------------------


def schedule_cancel(*, schedule_id: int, actor: Actor, reason: str = "") -> Schedule:
    """Any release manager cancels an active schedule: its pending steps are never applied. Waits
    for a step being applied (it holds the row), then cancels what is left. Cancelling is a way
    back: those who may roll the environment back may cancel (``releases.rights``)."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(of=("self",))
            .select_related("prompt", "environment")
            .get(pk=schedule_id)
        )
        release_change_check(
            actor=actor, environment=schedule.environment, action=ReleaseEvent.Action.ROLLBACK
        )
        if schedule.state != Schedule.State.ACTIVE:
            raise ScheduleEnded(
                f"Schedule #{schedule.pk} has ended already "
                f"({schedule.get_state_display().lower()}); there is nothing left to cancel."
            )
        now = timezone.now()
        words = f"Cancelled by {actor.label}" + (f": {reason}" if reason.strip() else ".")
        _end(schedule, Schedule.State.CANCELLED, actor.label, words, now)
    logger.info("Schedule cancelled: schedule=%s by=%s", schedule.pk, actor.label)
    return schedule


def _end(schedule: Schedule, state: Schedule.State, by: str, why: str, now: datetime) -> None:
    schedule.steps.filter(state=ScheduledStep.State.PENDING).update(
        state=ScheduledStep.State.CANCELLED, outcome=why, settled_at=now
    )
    schedule.state, schedule.ended_at = state, now
    schedule.ended_by_label, schedule.end_reason = by[:LABEL_MAX], why
    schedule.save(update_fields=["state", "ended_at", "ended_by_label", "end_reason"])


# --- applying -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one step did: ``applied`` or ``skipped``, with the step."""

    schedule_id: int
    position: int
    state: ScheduledStep.State
    detail: str = ""


def schedules_apply(*, now: datetime | None = None) -> list[StepOutcome]:
    """Beat's tick: every due step of every active schedule, in order; each schedule on its own,
    so one failing never stops the others."""
    now = now or timezone.now()
    due = (
        ScheduledStep.objects.filter(
            state=ScheduledStep.State.PENDING, at__lte=now, schedule__state=Schedule.State.ACTIVE
        )
        .order_by("schedule_id")
        .values_list("schedule_id", flat=True)
        .distinct()
    )
    outcomes: list[StepOutcome] = []
    for schedule_id in list(due):
        try:
            while (outcome := schedule_step_apply(schedule_id=schedule_id, now=now)) is not None:
                outcomes.append(outcome)
                if outcome.state != ScheduledStep.State.APPLIED:
                    break
        except SoftTimeLimitExceeded:
            raise  # the tick's time is up: what is left stays pending for the next one
        except Exception:
            logger.exception("Scheduled step failed: schedule=%s", schedule_id)
    return outcomes


def schedule_step_apply(*, schedule_id: int, now: datetime | None = None) -> StepOutcome | None:
    """Applies the schedule's next step if it is due (the numbered steps are in the module
    docstring); None when there is nothing to do, or another run holds the schedule."""
    now = now or timezone.now()
    with transaction.atomic():
        # Two beat runs can overlap (a slow tick, two beats by mistake): the row lock makes one
        # the applier; skip_locked lets the other pass at once rather than wait and apply the
        # same step again on a schedule that has moved on.
        schedule = (
            Schedule.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("prompt", "environment")
            .filter(pk=schedule_id, state=Schedule.State.ACTIVE)
            .first()
        )
        if schedule is None:
            return None
        steps = list(schedule.steps.filter(state=ScheduledStep.State.PENDING).order_by("position"))
        if not steps:  # all settled (a schedule is closed with its last step; kept for safety)
            _end(schedule, Schedule.State.DONE, "", "", now)
            return None
        step = steps[0]
        if step.at > now:
            return None
        total = schedule.steps.count()
        try:
            release = _apply(schedule, step, total)
        except RegistryError as exc:
            detail = _skip_reason(schedule, exc)
            _skip(schedule, step, total, detail, now)
            return StepOutcome(schedule.pk, step.position, ScheduledStep.State.SKIPPED, detail)
        step.state, step.settled_at = ScheduledStep.State.APPLIED, now
        step.release_event = ReleaseEvent.objects.get(release=release, revision=release.revision)
        step.save(update_fields=["state", "settled_at", "release_event"])
        schedule.revision = release.revision
        schedule.save(update_fields=["revision"])
        if len(steps) == 1:
            _end(schedule, Schedule.State.DONE, "", "Every step applied.", now)
    logger.info(
        "Scheduled step applied: schedule=%s step=%d revision=%d",
        schedule.pk,
        step.position,
        release.revision,
    )
    return StepOutcome(schedule.pk, step.position, ScheduledStep.State.APPLIED)


def _apply(schedule: Schedule, step: ScheduledStep, total: int) -> Release:
    change = change_from_stored(step.change)
    with transaction.atomic():  # a savepoint: a refused change leaves the skip to be written
        release = Release.objects.filter(
            prompt=schedule.prompt, environment=schedule.environment
        ).first()
        refusals = steered_elsewhere(release_id=release.pk if release else None)
        if refusals:
            raise ScheduleRefused(" ".join(refusals))
        note = f"scheduled step {step.position} of {total}"
        reason = f"{schedule.reason} ({note})" if schedule.reason.strip() else note.capitalize()
        return change.execute(
            prompt=schedule.prompt,
            environment=schedule.environment,
            actor=schedule_actor(schedule),
            reason=reason,
            expected_revision=schedule.revision,
        )


def _skip_reason(schedule: Schedule, exc: Exception) -> str:
    """Why the step was refused, in the history's words: who moved the release, which gate."""
    if isinstance(exc, ReleaseConflict):
        latest = (
            ReleaseEvent.objects.filter(
                release__prompt=schedule.prompt, release__environment=schedule.environment
            )
            .order_by("-revision")
            .first()
        )
        by = f" by {latest.actor_label}'s {latest.get_action_display().lower()}" if latest else ""
        return (
            f"The release moved: revision {schedule.revision} → {exc.current_revision}{by}; "
            "the schedule stopped rather than apply a step planned on a state that is gone."
        )
    if isinstance(exc, PromotionBlocked):
        gates = "; ".join(f"{f['detail']} (gate: {f['gate']})" for f in exc.failed)
        return f"A promotion gate refused it: {gates}"
    if isinstance(exc, ScheduleRefused):
        return f"Something else steers the release: {exc.message}"
    return str(getattr(exc, "message", exc))


def _skip(schedule: Schedule, step: ScheduledStep, total: int, detail: str, now: datetime) -> None:
    step.state, step.outcome, step.settled_at = ScheduledStep.State.SKIPPED, detail, now
    step.save(update_fields=["state", "outcome", "settled_at"])
    why = f"Step {step.position} was skipped: {detail}"
    _end(schedule, Schedule.State.STOPPED, "", why, now)
    logger.warning(
        "Scheduled step skipped: schedule=%s step=%d prompt=%s env=%s reason=%s",
        schedule.pk,
        step.position,
        schedule.prompt.key,
        schedule.environment.name,
        detail,
    )
    event_emit(
        EventType.SCHEDULE_STEP_SKIPPED,
        {
            "prompt": schedule.prompt.key,
            "environment": schedule.environment.name,
            "schedule_id": schedule.pk,
            "step": step.position,
            "steps": total,
            "action": step.change.get("action"),
            "at": step.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "scheduled_by": schedule.created_by_label,
            "detail": detail,
            "expected_revision": schedule.revision,
        },
        prompt_id=schedule.prompt_id,
        environment=schedule.environment.name,
    )
