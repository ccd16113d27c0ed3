"""Scheduled changes (decision 0049): a deploy at a time and a canary's ramp, applied by beat's
tick in order with explicit times; refused when they cannot be (in the past, out of order, a
second one, a canary under analysis); a release moved meanwhile or a gate refusing skips the step
and stops the rest, with the reason on the step and a ``schedule.step_skipped`` event; cancelled
by a release manager; never applied twice by two overlapping ticks; applied by a real worker."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from config.celery import app
from evaluations.canary.services import (
    CanaryScheduled,
    canary_analysis_attach,
    canary_analysis_start,
)
from registry.actors import Actor
from registry.events import EventType, event_listener_register, event_listener_unregister
from releases.errors import (
    ReleaseInvalid,
    ReleaseStateInvalid,
    ReviewRequired,
    ScheduleEnded,
    ScheduleExists,
    ScheduleRefused,
)
from releases.models import Release, ReleaseEvent, Schedule, ScheduledStep
from releases.services import (
    CanaryPercent,
    CanaryPromote,
    CanaryStart,
    Deploy,
    PlannedStep,
    Rollback,
    release_canary_set_percent,
    release_canary_start,
    schedule_cancel,
    schedule_create,
    schedules_apply,
)
from releases.services.schedule import schedule_step_apply, steps_text
from releases.tasks import apply_due_schedules
from tests.celery_worker import wait_for, worker_on_own_queue

ALICE = Actor(label="alice", user_id=None)
POLICY = {"steps": [10, 50, 100], "min_minutes": 30, "min_calls": 100}
Step = ScheduledStep.State


@pytest.fixture
def t0():
    return timezone.now()


@pytest.fixture
def canary(released, manager):
    """v3 canaried at 10 % in staging (v2 stable there), by a person."""
    return release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(10),
        actor=manager,
    )


@pytest.fixture
def heard():
    """The events emitted through registry.events, as (type, data)."""
    events: list[tuple[str, dict]] = []

    def listen(event) -> None:
        events.append((str(event.type), dict(event.data)))

    event_listener_register(listen)
    yield events
    event_listener_unregister(listen)


def ramp(t0) -> list[PlannedStep]:
    """25 % in an hour, 50 % after five, then promote after six."""
    return [
        PlannedStep(at=t0 + timedelta(hours=1), change=CanaryPercent(percent=Decimal(25))),
        PlannedStep(at=t0 + timedelta(hours=5), change=CanaryPercent(percent=Decimal(50))),
        PlannedStep(at=t0 + timedelta(hours=6), change=CanaryPromote()),
    ]


def schedule_ramp(released, t0, **kwargs) -> Schedule:
    return schedule_create(
        prompt=released.prompt,
        environment=released.environments["staging"],
        steps=ramp(t0),
        actor=ALICE,
        reason="ramp v3 overnight",
        **kwargs,
    )


def staging(released) -> Release:
    return released.release("staging")


# --- the ramp ------------------------------------------------------------------------------------


def test_a_canary_is_ramped_on_a_schedule_by_beat(released, canary, t0):
    schedule = schedule_ramp(released, t0)
    assert steps_text(list(schedule.steps.all())).count(", then ") == 2
    assert schedules_apply(now=t0 + timedelta(minutes=59)) == []
    assert staging(released).canary_weight == 1000

    [first] = schedules_apply(now=t0 + timedelta(hours=1))
    assert (first.position, first.state) == (1, Step.APPLIED)
    assert staging(released).canary_weight == 2500
    assert schedules_apply(now=t0 + timedelta(hours=2)) == []  # the next is not due

    schedules_apply(now=t0 + timedelta(hours=5))
    assert staging(released).canary_weight == 5000
    schedules_apply(now=t0 + timedelta(hours=6))
    release = staging(released)
    assert (release.stable_version.number, release.canary_version_id) == (3, None)

    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.DONE
    assert schedule.revision == release.revision
    steps = list(schedule.steps.order_by("position"))
    assert [s.state for s in steps] == [Step.APPLIED] * 3
    events = [s.release_event for s in steps]
    assert [e.action for e in events] == ["canary_percent", "canary_percent", "canary_promote"]
    assert {e.actor_label for e in events} == {f"schedule #{schedule.pk} (by alice)"}
    assert events[0].reason == "ramp v3 overnight (scheduled step 1 of 3)"
    assert [e.revision for e in events] == [
        release.revision - 2,
        release.revision - 1,
        release.revision,
    ]


def test_steps_due_together_are_applied_in_their_order(released, canary, t0):
    schedule = schedule_ramp(released, t0)
    outcomes = schedules_apply(now=t0 + timedelta(days=1))  # beat was down all night
    assert [(o.position, o.state) for o in outcomes] == [(i, Step.APPLIED) for i in (1, 2, 3)]
    history = list(ReleaseEvent.objects.filter(release=staging(released)).order_by("revision"))
    assert [e.action for e in history[-3:]] == [
        "canary_percent",
        "canary_percent",
        "canary_promote",
    ]
    assert [e.after["canary"]["weight"] for e in history[-3:-1]] == [2500, 5000]
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.DONE


def test_a_deploy_at_a_time_is_a_schedule_of_one_step_that_starts_a_canary_too(
    released, manager, t0
):
    development = released.environments["development"]  # never released: no row yet
    schedule_create(
        prompt=released.prompt,
        environment=development,
        steps=[
            PlannedStep(at=t0 + timedelta(hours=2), change=Deploy(version=2)),
            PlannedStep(
                at=t0 + timedelta(hours=3), change=CanaryStart(version=3, percent=Decimal(5))
            ),
        ],
        actor=manager,
    )
    assert not Release.objects.filter(prompt=released.prompt, environment=development).exists()
    schedules_apply(now=t0 + timedelta(hours=2))
    release = released.release("development")
    assert (release.stable_version.number, release.canary_version_id) == (2, None)
    schedules_apply(now=t0 + timedelta(hours=3))
    release.refresh_from_db()
    assert (release.canary_version.number, release.canary_weight) == (3, 500)


# --- refused when scheduled ----------------------------------------------------------------------


def test_a_step_in_the_past_is_refused_naming_the_step(released, canary, t0):
    steps = ramp(t0)
    steps[1] = PlannedStep(at=t0 - timedelta(minutes=1), change=steps[1].change)
    with pytest.raises(ReleaseInvalid) as refused:
        schedule_create(
            prompt=released.prompt,
            environment=released.environments["staging"],
            steps=steps,
            actor=ALICE,
        )
    problems = {(p.code, p.pointer) for p in refused.value.problems}
    # In the past, and (so) no later than the step before it.
    assert problems == {("in_the_past", "/steps/1/at"), ("steps_not_in_order", "/steps/1/at")}
    assert "Step 2 (50 %)" in refused.value.problems[0].detail
    assert not Schedule.objects.exists()


def test_steps_out_of_order_are_refused(released, canary, t0):
    first, second, third = ramp(t0)
    with pytest.raises(ReleaseInvalid) as refused:
        schedule_create(
            prompt=released.prompt,
            environment=released.environments["staging"],
            steps=[first, third, second],
            actor=ALICE,
        )
    assert [(p.code, p.pointer) for p in refused.value.problems] == [
        ("steps_not_in_order", "/steps/2/at")
    ]
    assert "Step 3 is due no later than step 2" in refused.value.problems[0].detail


def test_a_step_whose_own_values_are_wrong_or_that_cannot_wait_is_refused(released, canary, t0):
    later = t0 + timedelta(hours=1)
    with pytest.raises(ReleaseInvalid) as refused:
        schedule_create(
            prompt=released.prompt,
            environment=released.environments["staging"],
            steps=[
                PlannedStep(at=later, change=CanaryPercent(percent=Decimal(101))),
                PlannedStep(at=later + timedelta(hours=1), change=Rollback()),
            ],
            actor=ALICE,
        )
    assert [(p.code, p.pointer) for p in refused.value.problems] == [
        ("invalid_percent", "/steps/0"),
        ("not_schedulable", "/steps/1/action"),
    ]


def test_a_plan_that_cannot_apply_is_refused_now_not_at_two_in_the_morning(released, t0):
    with pytest.raises(ReleaseStateInvalid) as refused:
        schedule_ramp(released, t0)  # no canary runs in staging
    assert refused.value.message.startswith("Step 1 (25 %) would not apply")
    assert not Schedule.objects.exists()


def test_a_second_schedule_on_one_canary_is_refused(released, canary, t0):
    first = schedule_ramp(released, t0)
    with pytest.raises(ScheduleExists) as refused:
        schedule_ramp(released, t0)
    assert f"#{first.pk} by alice" in refused.value.message
    assert "25 % at" in refused.value.message
    assert Schedule.objects.count() == 1


def test_a_canary_under_analysis_refuses_a_schedule_and_a_scheduled_one_refuses_analysis(
    released, manager, t0
):
    staging_env = released.environments["staging"]
    analysis = canary_analysis_start(
        prompt=released.prompt, environment=staging_env, version=3, policy=POLICY, actor=manager
    )
    with pytest.raises(ScheduleRefused) as refused:
        schedule_ramp(released, t0)
    assert f"under automatic analysis (#{analysis.pk}" in refused.value.message
    assert not Schedule.objects.exists()

    analysis.status = analysis.Status.ENDED  # stopped by hand: the canary is free to schedule
    analysis.save()
    schedule = schedule_ramp(released, t0)
    with pytest.raises(CanaryScheduled) as refused_analysis:
        canary_analysis_attach(
            prompt=released.prompt, environment=staging_env, policy=POLICY, actor=manager
        )
    assert f"schedule #{schedule.pk}" in refused_analysis.value.message


def test_an_if_match_revision_that_moved_is_refused(released, canary, t0):
    from releases.errors import ReleaseConflict

    with pytest.raises(ReleaseConflict):
        schedule_ramp(released, t0, expected_revision=canary.revision - 1)
    assert schedule_ramp(released, t0, expected_revision=canary.revision).revision == (
        canary.revision
    )


# --- skipped when applied ------------------------------------------------------------------------


def test_a_release_moved_meanwhile_skips_the_step_and_stops_the_rest(
    released, canary, manager, t0, heard
):
    schedule = schedule_ramp(released, t0)
    scheduled_at = schedule.revision
    moved = release_canary_set_percent(
        prompt=released.prompt,
        environment=released.environments["staging"],
        percent=Decimal(30),
        actor=manager,
    )
    heard.clear()
    [outcome] = schedules_apply(now=t0 + timedelta(days=1))
    assert outcome.state == Step.SKIPPED
    assert staging(released).canary_weight == 3000  # the person's change stands
    assert staging(released).revision == moved.revision

    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.STOPPED
    first, *rest = schedule.steps.order_by("position")
    assert first.state == Step.SKIPPED
    assert first.release_event is None
    assert first.outcome.startswith(
        f"The release moved: revision {scheduled_at} → {moved.revision} by release-manager's "
        "canary ramped"
    )
    assert [s.state for s in rest] == [Step.CANCELLED, Step.CANCELLED]
    assert schedule.end_reason == f"Step 1 was skipped: {first.outcome}"
    [(kind, data)] = heard
    assert kind == EventType.SCHEDULE_STEP_SKIPPED
    assert (data["schedule_id"], data["step"], data["steps"], data["action"]) == (
        schedule.pk,
        1,
        3,
        "canary_percent",
    )
    assert data["detail"] == first.outcome
    assert schedules_apply(now=t0 + timedelta(days=2)) == []  # stopped: never again


def test_a_gate_refusing_skips_the_step(released, t0, heard):
    production = released.environments["production"]
    schedule = schedule_create(
        prompt=released.prompt,
        environment=production,
        steps=[PlannedStep(at=t0 + timedelta(hours=2), change=Deploy(version=3))],
        actor=ALICE,
        reason="v3 at 02:00",
    )
    [outcome] = schedules_apply(now=t0 + timedelta(hours=2))
    assert outcome.state == Step.SKIPPED
    assert released.release("production").stable_version.number == 1
    step = schedule.steps.get()
    assert step.outcome.startswith("A promotion gate refused it: production takes only versions")
    assert "(gate: environment-order)" in step.outcome
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.STOPPED
    # The gate's own event, and the schedule's, both kept with the skip.
    assert [kind for kind, _ in heard] == ["gate.refused", "schedule.step_skipped"]
    assert heard[0][1]["actor"] == f"schedule #{schedule.pk} (by alice)"


def test_an_analysis_started_under_a_schedule_by_other_means_skips_the_step(released, canary, t0):
    """The refusals on both sides keep them apart; if an analysis is running anyway when a step
    is due (made before this check existed), the step is skipped, not fought over."""
    from evaluations.models import CanaryAnalysis

    schedule = schedule_ramp(released, t0)
    CanaryAnalysis.objects.create(
        release=staging(released),
        canary_version=3,
        canary_salt=staging(released).canary_salt,
        policy=POLICY,
        step=0,
        step_started_at=t0,
        created_by_label="someone",
    )
    [outcome] = schedules_apply(now=t0 + timedelta(hours=1))
    assert outcome.state == Step.SKIPPED
    assert outcome.detail.startswith("Something else steers the release: The canary is under")
    assert staging(released).canary_weight == 1000
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.STOPPED


# --- cancelled -----------------------------------------------------------------------------------


def test_any_release_manager_cancels_a_schedule(released, canary, manager, t0):
    schedule = schedule_ramp(released, t0)
    schedules_apply(now=t0 + timedelta(hours=1))
    schedule_cancel(schedule_id=schedule.pk, actor=manager, reason="holding for the launch")
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.CANCELLED
    assert schedule.ended_by_label == "release-manager"
    assert schedule.end_reason == "Cancelled by release-manager: holding for the launch"
    assert schedule.ended_at is not None
    assert [s.state for s in schedule.steps.order_by("position")] == [
        Step.APPLIED,
        Step.CANCELLED,
        Step.CANCELLED,
    ]
    assert schedules_apply(now=t0 + timedelta(days=1)) == []
    assert staging(released).canary_weight == 2500
    with pytest.raises(ScheduleEnded):
        schedule_cancel(schedule_id=schedule.pk, actor=manager)
    # Once it has ended, the release may be scheduled again.
    again = schedule_create(
        prompt=released.prompt,
        environment=released.environments["staging"],
        steps=[PlannedStep(at=t0 + timedelta(hours=2), change=CanaryPromote())],
        actor=manager,
    )
    assert again.state == Schedule.State.ACTIVE


# --- beat ----------------------------------------------------------------------------------------


def test_beat_applies_due_schedules_every_minute():
    entry = app.conf.beat_schedule["apply-due-schedules"]
    assert entry["task"] == "releases.apply_due_schedules" == apply_due_schedules.name
    assert entry["schedule"] == 60.0
    assert entry["options"]["expires"] == 60.0


# --- for real ------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_overlapping_ticks_apply_each_step_once(released, canary, t0):
    schedule = schedule_ramp(released, t0)
    due = t0 + timedelta(days=1)

    # A tick that finds the schedule held by another passes it by at once (skip_locked).
    held, passed = threading.Event(), threading.Event()
    seen: list = []

    def other_tick() -> None:
        held.wait(timeout=10)
        try:
            seen.append(schedule_step_apply(schedule_id=schedule.pk, now=due))
        finally:
            connection.close()
            passed.set()

    thread = threading.Thread(target=other_tick)
    thread.start()
    with transaction.atomic():
        Schedule.objects.select_for_update().get(pk=schedule.pk)
        held.set()
        assert passed.wait(timeout=10)
    thread.join(timeout=10)
    assert seen == [None]

    # Four ticks at once: every step applied exactly once, in order.
    barrier = threading.Barrier(4)
    outcomes: list = []

    def tick() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.extend(schedules_apply(now=due))
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(o.position for o in outcomes) == [1, 2, 3]
    assert {o.state for o in outcomes} == {Step.APPLIED}
    by_schedule = ReleaseEvent.objects.filter(actor_label=f"schedule #{schedule.pk} (by alice)")
    assert [e.action for e in by_schedule.order_by("revision")] == [
        "canary_percent",
        "canary_percent",
        "canary_promote",
    ]
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.DONE


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_applies_a_due_step(released, canary, settings, needs_redis, tmp_path, t0):
    schedule = schedule_ramp(released, t0)
    # Time passes: the first step falls due (moved, rather than the test waiting an hour).
    schedule.steps.filter(position=1).update(at=timezone.now() - timedelta(seconds=1))
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="schedules") as worker:
        worker.start()
        apply_due_schedules.delay()
        wait_for(
            lambda: schedule.steps.filter(position=1, state=Step.APPLIED).exists(),
            "the worker to apply the due step",
        )
    assert staging(released).canary_weight == 2500
    assert list(schedule.steps.order_by("position").values_list("state", flat=True)) == [
        Step.APPLIED,
        Step.PENDING,
        Step.PENDING,
    ]


def test_the_command_applies_what_is_due_and_exits_1_on_a_skipped_step(
    released, canary, manager, t0
):
    """``manage.py schedules apply``: beat's tick where there is no beat (``make run``)."""
    from io import StringIO

    from django.core.management import call_command

    schedule = schedule_ramp(released, t0)
    ScheduledStep.objects.filter(schedule=schedule, position=1).update(at=t0 - timedelta(minutes=1))
    out = StringIO()
    call_command("schedules", "apply", stdout=out)
    assert out.getvalue() == f"schedule #{schedule.pk} step 1: applied\n"
    assert staging(released).canary_weight == 2500
    call_command("schedules", "apply", stdout=(quiet := StringIO()))
    assert quiet.getvalue() == "No scheduled step is due.\n"

    release_canary_set_percent(
        prompt=released.prompt,
        environment=released.environments["staging"],
        percent=Decimal(30),
        actor=manager,
    )
    ScheduledStep.objects.filter(schedule=schedule, position=2).update(at=t0 - timedelta(minutes=1))
    err = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("schedules", "apply", stdout=StringIO(), stderr=err)
    assert exited.value.code == 1
    assert err.getvalue().startswith(f"schedule #{schedule.pk} step 2: skipped: The release moved")


# --- review (decision 0048): the schedule itself is what is reviewed --------------------------


def test_a_schedule_in_an_environment_that_requires_review_is_refused_and_nothing_written(
    reviewed, t0
):
    production = reviewed.production
    revision = reviewed.released.release("production").revision
    events = ReleaseEvent.objects.count()
    with pytest.raises(ReviewRequired) as refused:
        schedule_create(
            prompt=reviewed.released.prompt,
            environment=production,
            steps=[
                PlannedStep(at=t0 + timedelta(hours=1), change=CanaryStart(version=2, percent=10)),
                PlannedStep(at=t0 + timedelta(hours=2), change=CanaryPromote()),
            ],
            actor=reviewed.actor(reviewed.alice),
            reason="overnight",
        )
    assert refused.value.environment == "production"
    assert "change request" in refused.value.message
    assert not Schedule.objects.exists()
    assert ReleaseEvent.objects.count() == events
    assert reviewed.released.release("production").revision == revision
    # Beat would have applied it as the system, which review lets through: nothing is due.
    assert schedules_apply(now=t0 + timedelta(hours=3)) == []


def test_a_schedule_elsewhere_is_not_held(reviewed, t0):
    schedule = schedule_create(
        prompt=reviewed.released.prompt,
        environment=reviewed.released.environments["staging"],
        steps=[PlannedStep(at=t0 + timedelta(hours=1), change=Deploy(version=3))],
        actor=reviewed.actor(reviewed.alice),
    )
    assert schedule.state == Schedule.State.ACTIVE


def test_who_may_not_change_the_environment_may_neither_schedule_nor_cancel(released, canary, t0):
    """The author must be one who may make every step (the steps are applied later by the
    system), and cancelling takes the right to roll back (releases.rights): a key limited to
    development is refused in staging, and nothing is written."""
    from releases.errors import ReleaseChangeForbidden

    outsider = Actor.for_api_key(name="dev-ci", key_id=7, environments=["development"])
    with pytest.raises(ReleaseChangeForbidden):
        schedule_create(
            prompt=released.prompt,
            environment=released.environments["staging"],
            steps=ramp(t0),
            actor=outsider,
            reason="ramp",
        )
    assert not Schedule.objects.exists()

    schedule = schedule_ramp(released, t0)
    with pytest.raises(ReleaseChangeForbidden):
        schedule_cancel(schedule_id=schedule.pk, actor=outsider, reason="no")
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.ACTIVE
    assert schedule.ended_by_label == ""
