"""Change requests (releases.services.change_requests, decision 0048): in an environment that
requires review, a held change is proposed, approved by someone else in the review group, and
applied under the revision it was proposed against; the way back never waits."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from registry.actors import Actor
from releases.errors import (
    ChangeRequestClosed,
    ChangeRequestOutdated,
    OwnChangeRequest,
    PromotionBlocked,
    ReleaseInvalid,
    ReleaseStateInvalid,
    ReviewForbidden,
    ReviewNotRequired,
    ReviewRequired,
)
from releases.models import ChangeRequest, ReleaseEvent, Schedule, ScheduledStep
from releases.selectors import change_request_conflicts, change_request_list
from releases.services import (
    CanaryAbort,
    CanaryPercent,
    CanaryPromote,
    CanaryStart,
    Deploy,
    PlannedStep,
    Rollback,
    release_canary_abort,
    release_canary_start,
    release_deploy,
    release_rollback,
    schedules_apply,
)
from releases.services.change_requests import (
    change_request_apply,
    change_request_propose,
    change_request_review,
    change_request_withdraw,
    change_requests_expire,
)
from releases.services.review import WAY_BACK_NOTE

pytestmark = pytest.mark.django_db

State = ChangeRequest.State


def propose(reviewed, change=None, *, by=None, reason="v2 is ready", **kwargs) -> ChangeRequest:
    return change_request_propose(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        change=change or CanaryStart(version=2, percent=Decimal(10)),
        actor=reviewed.actor(by or reviewed.alice),
        reason=reason,
        **kwargs,
    )


def review(reviewed, request, user, verdict="approve", comment="looks right", **kwargs):
    return change_request_review(
        change_request_id=request.pk,
        actor=reviewed.actor(user),
        verdict=verdict,
        comment=comment,
        **kwargs,
    )


def production_release(reviewed):
    return reviewed.released.release("production")


def test_a_canary_is_proposed_approved_by_a_second_person_and_applied(reviewed):
    request = propose(reviewed)
    assert request.state == State.OPEN
    assert request.base_revision == production_release(reviewed).revision
    assert request.before["stable"] == 1
    assert request.before["canary"] is None
    assert request.after["canary"]["version"] == 2
    assert request.after["canary"]["weight"] == 1000
    assert production_release(reviewed).canary_version is None  # nothing applied yet

    approved = review(reviewed, request, reviewed.bob)
    assert approved.state == State.APPROVED

    applied = change_request_apply(
        change_request_id=request.pk, actor=reviewed.actor(reviewed.alice)
    )
    assert applied.state == State.APPLIED
    release = production_release(reviewed)
    assert release.canary_version.number == 2
    assert release.canary_weight == 1000
    event = applied.release_event
    assert event.action == ReleaseEvent.Action.CANARY_START
    assert event.actor_label == "alice"
    assert event.reason == f"change request #{request.pk} (approved by bob): v2 is ready"
    assert event.revision == release.revision


def test_a_direct_change_in_a_protected_environment_is_refused_and_changes_nothing(reviewed):
    before = production_release(reviewed).revision
    with pytest.raises(ReviewRequired, match="production requires review"):
        release_canary_start(
            prompt=reviewed.released.prompt,
            environment=reviewed.production,
            version=2,
            percent=Decimal(10),
            actor=reviewed.actor(reviewed.bob),
        )
    assert production_release(reviewed).revision == before


def test_the_proposer_cannot_approve_their_own_request(reviewed):
    request = propose(reviewed, by=reviewed.bob)  # bob reviews, but not his own
    with pytest.raises(OwnChangeRequest, match="someone else"):
        review(reviewed, request, reviewed.bob)
    request.refresh_from_db()
    assert request.state == State.OPEN
    assert not request.reviews.exists()


def test_only_the_review_group_reviews_and_a_key_acting_for_no_one_never_does(reviewed):
    request = propose(reviewed)
    with pytest.raises(ReviewForbidden, match="Release reviewers"):
        review(reviewed, request, reviewed.dave)
    with pytest.raises(ReviewForbidden, match="reviewed by a person"):
        change_request_review(
            change_request_id=request.pk,
            actor=Actor.for_api_key(name="ci", key_id=1),
            verdict="approve",
        )
    # A key a reviewer owns acts as them.
    as_bob = Actor.for_api_key(name="laptop", key_id=2, owner=reviewed.bob)
    assert (
        change_request_review(change_request_id=request.pk, actor=as_bob, verdict="approve").state
        == State.APPROVED
    )


def test_applying_after_the_release_moved_is_refused_naming_what_moved(reviewed):
    request = propose(reviewed)
    review(reviewed, request, reviewed.bob)
    # The way back moves the release meanwhile (never held): what was approved is stale.
    release_rollback(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        actor=reviewed.actor(reviewed.carol),
        reason="incident",
    )
    moved_to = production_release(reviewed).revision
    with pytest.raises(ChangeRequestOutdated) as refused:
        change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.alice))
    assert refused.value.proposed_revision == request.base_revision
    assert refused.value.current_revision == moved_to
    assert f"revision {moved_to}: rollback by carol" in refused.value.message
    request.refresh_from_db()
    assert request.state == State.APPROVED
    assert request.release_event is None
    assert production_release(reviewed).canary_version is None


def test_the_gates_are_checked_again_on_apply(reviewed):
    # v3 has never been stable in staging: the environment order refuses it on apply, as it
    # would a direct change; the request stays approved, nothing changes.
    request = propose(reviewed, Deploy(version=3))
    review(reviewed, request, reviewed.bob)
    with pytest.raises(PromotionBlocked):
        change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.bob))
    request.refresh_from_db()
    assert request.state == State.APPROVED


def test_a_request_needs_every_approval_the_environment_asks_for(reviewed):
    reviewed.production.approvals_required = 2
    reviewed.production.save()
    request = propose(reviewed)
    assert review(reviewed, request, reviewed.bob).state == State.OPEN
    with pytest.raises(ChangeRequestClosed, match="1 of the 2 approvals"):
        change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.alice))
    with pytest.raises(ChangeRequestClosed, match="already"):
        review(reviewed, request, reviewed.bob)
    assert review(reviewed, request, reviewed.carol).state == State.APPROVED
    applied = change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.bob))
    assert "approved by bob, carol" in applied.release_event.reason


def test_one_rejection_rejects_and_a_rejected_request_is_never_applied(reviewed):
    request = propose(reviewed)
    rejected = review(reviewed, request, reviewed.carol, verdict="reject", comment="not on Friday")
    assert rejected.state == State.REJECTED
    assert rejected.closed_by_label == "carol"
    assert rejected.reviews.get().comment == "not on Friday"
    with pytest.raises(ChangeRequestClosed, match="rejected"):
        change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.alice))
    with pytest.raises(ChangeRequestClosed, match="rejected"):
        review(reviewed, request, reviewed.bob)


def test_an_expired_request_is_neither_approved_nor_applied_and_the_sweep_marks_it(reviewed):
    proposed_at = timezone.now()
    request = propose(reviewed, now=proposed_at)
    assert request.expires_at == proposed_at + timedelta(hours=72)  # the environment's default
    later = request.expires_at + timedelta(seconds=1)
    with pytest.raises(ChangeRequestClosed, match="expired"):
        review(reviewed, request, reviewed.bob, now=later)
    approved = propose(reviewed, CanaryStart(version=2, percent=Decimal(5)))
    review(reviewed, approved, reviewed.bob)
    with pytest.raises(ChangeRequestClosed, match="expired"):
        change_request_apply(
            change_request_id=approved.pk, actor=reviewed.actor(reviewed.alice), now=later
        )
    assert [r.pk for r in change_request_list(state="expired", now=later)] == [
        approved.pk,
        request.pk,
    ]
    assert change_requests_expire(now=later) == 2
    assert change_requests_expire(now=later) == 0  # once
    assert set(ChangeRequest.objects.values_list("state", flat=True)) == {State.EXPIRED}


def test_several_open_requests_on_one_release_conflict(reviewed):
    first = propose(reviewed)
    second = propose(reviewed, Deploy(version=2))
    other = propose(reviewed, CanaryStart(version=2, percent=Decimal(5)))
    change_request_withdraw(change_request_id=other.pk, actor=reviewed.actor(reviewed.alice))
    conflicts = change_request_conflicts(list(ChangeRequest.objects.all()))
    assert conflicts == {first.pk: [second.pk], second.pk: [first.pk]}
    # Applying one moves the release the other was proposed against.
    review(reviewed, first, reviewed.bob)
    review(reviewed, second, reviewed.carol)
    change_request_apply(change_request_id=first.pk, actor=reviewed.actor(reviewed.alice))
    with pytest.raises(ChangeRequestOutdated):
        change_request_apply(change_request_id=second.pk, actor=reviewed.actor(reviewed.alice))


def test_the_way_back_is_never_held_and_says_so(reviewed):
    request = propose(reviewed)
    review(reviewed, request, reviewed.bob)
    change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.alice))
    aborted = release_canary_abort(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        actor=reviewed.actor(reviewed.dave),
        reason="errors",
    )
    assert aborted.canary_version is None
    rolled = release_rollback(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        actor=reviewed.actor(reviewed.dave),
    )
    abort_event, rollback_event = ReleaseEvent.objects.filter(release=rolled).order_by("-id")[:2][
        ::-1
    ]
    assert abort_event.reason == f"errors ({WAY_BACK_NOTE})"
    assert rollback_event.reason == WAY_BACK_NOTE
    # ... and proposing one is refused: there is nothing to wait for.
    for way_back in (Rollback(), CanaryAbort()):
        with pytest.raises(ReviewNotRequired, match="never held"):
            propose(reviewed, way_back)


def test_the_registry_itself_is_not_held(reviewed):
    request = propose(reviewed)
    review(reviewed, request, reviewed.bob)
    change_request_apply(change_request_id=request.pk, actor=reviewed.actor(reviewed.alice))
    ramped = CanaryPercent(percent=Decimal(50)).execute(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        actor=Actor.system("canary-analysis"),
        reason="step passed",
    )
    assert ramped.canary_weight == 5000


def test_withdraw_is_the_proposers(reviewed):
    request = propose(reviewed)
    with pytest.raises(ReviewForbidden, match="withdrawn by its proposer"):
        change_request_withdraw(change_request_id=request.pk, actor=reviewed.actor(reviewed.bob))
    withdrawn = change_request_withdraw(
        change_request_id=request.pk, actor=reviewed.actor(reviewed.alice)
    )
    assert withdrawn.state == State.WITHDRAWN
    with pytest.raises(ChangeRequestClosed, match="withdrawn"):
        review(reviewed, request, reviewed.bob)


def test_what_cannot_be_proposed(reviewed):
    staging = reviewed.released.environments["staging"]
    with pytest.raises(ReviewNotRequired, match="staging does not require review"):
        change_request_propose(
            prompt=reviewed.released.prompt,
            environment=staging,
            change=Deploy(version=2),
            actor=reviewed.actor(reviewed.alice),
            reason="x",
        )
    with pytest.raises(ReleaseInvalid):
        propose(reviewed, reason=" ")
    with pytest.raises(ReleaseInvalid):
        propose(reviewed, CanaryStart(version=2, percent=Decimal(101)))
    assert not ChangeRequest.objects.exists()


def test_unprotected_environments_are_unchanged(reviewed):
    release = release_deploy(
        prompt=reviewed.released.prompt,
        environment=reviewed.released.environments["staging"],
        version=1,
        actor=reviewed.actor(reviewed.dave),
        reason="plain",
    )
    assert release.events.order_by("-id").first().reason == "plain"


# --- a proposed schedule (decisions 0048, 0049): the schedule itself is what is reviewed ----------


def ramp_steps(t0) -> list[PlannedStep]:
    """A canary of v2 at 10 % in an hour, 50 % after two, promoted after three."""
    return [
        PlannedStep(at=t0 + timedelta(hours=1), change=CanaryStart(version=2, percent=Decimal(10))),
        PlannedStep(at=t0 + timedelta(hours=2), change=CanaryPercent(percent=Decimal(50))),
        PlannedStep(at=t0 + timedelta(hours=3), change=CanaryPromote()),
    ]


def propose_schedule(reviewed, t0, *, by=None) -> ChangeRequest:
    return change_request_propose(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        steps=ramp_steps(t0),
        actor=reviewed.actor(by or reviewed.alice),
        reason="ramp v2 overnight",
        now=t0,
    )


def test_a_ramp_is_proposed_approved_applied_as_a_schedule_and_beat_applies_it(reviewed):
    t0 = timezone.now()
    revision = production_release(reviewed).revision
    request = propose_schedule(reviewed, t0)
    assert request.state == State.OPEN
    assert request.action == ReleaseEvent.Action.CANARY_START  # the first step
    assert [step["change"]["action"] for step in request.steps] == [
        "canary_start",
        "canary_percent",
        "canary_promote",
    ]
    assert request.after["stable"] == 2
    assert request.after["canary"] is None
    assert not Schedule.objects.exists()

    with pytest.raises(OwnChangeRequest):
        review(reviewed, request, reviewed.alice)
    review(reviewed, request, reviewed.bob)
    applied = change_request_apply(
        change_request_id=request.pk, actor=reviewed.actor(reviewed.alice), now=t0
    )
    assert applied.state == State.APPLIED
    assert applied.release_event is None
    schedule = applied.schedule
    assert schedule.state == Schedule.State.ACTIVE
    assert schedule.revision == revision
    assert schedule.created_by_label == "alice"
    assert schedule.reason == f"change request #{request.pk} (approved by bob): ramp v2 overnight"
    assert production_release(reviewed).revision == revision  # nothing applied yet

    outcomes = schedules_apply(now=t0 + timedelta(hours=3, minutes=1))
    assert [o.state for o in outcomes] == [ScheduledStep.State.APPLIED] * 3
    release = production_release(reviewed)
    assert release.stable_version.number == 2
    assert release.canary_version is None
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.DONE


def test_a_proposed_schedule_whose_first_step_has_passed_is_refused_on_apply(reviewed):
    t0 = timezone.now()
    request = propose_schedule(reviewed, t0)
    review(reviewed, request, reviewed.bob)
    with pytest.raises(ChangeRequestOutdated) as refused:
        change_request_apply(
            change_request_id=request.pk,
            actor=reviewed.actor(reviewed.alice),
            now=t0 + timedelta(hours=1, minutes=1),
        )
    assert "Step 1" in refused.value.message
    assert "has passed" in refused.value.message
    assert "Propose it again" in refused.value.message
    request.refresh_from_db()
    assert request.state == State.APPROVED
    assert request.schedule is None
    assert not Schedule.objects.exists()


def test_a_proposed_schedule_is_checked_when_proposed(reviewed):
    t0 = timezone.now()
    steps = ramp_steps(t0)
    # A ramp with no canary: the plan check scheduling makes, at proposal.
    with pytest.raises(ReleaseStateInvalid):
        change_request_propose(
            prompt=reviewed.released.prompt,
            environment=reviewed.production,
            steps=steps[1:],
            actor=reviewed.actor(reviewed.alice),
            reason="ramp",
            now=t0,
        )
    with pytest.raises(ReleaseInvalid):  # out of order
        change_request_propose(
            prompt=reviewed.released.prompt,
            environment=reviewed.production,
            steps=[steps[1], steps[0]],
            actor=reviewed.actor(reviewed.alice),
            reason="ramp",
            now=t0,
        )
    assert not ChangeRequest.objects.exists()


def test_a_proposed_schedule_applied_on_a_moved_release_is_outdated(reviewed):
    t0 = timezone.now()
    request = propose_schedule(reviewed, t0)
    review(reviewed, request, reviewed.bob)
    release_rollback(
        prompt=reviewed.released.prompt,
        environment=reviewed.production,
        actor=reviewed.actor(reviewed.carol),
    )
    with pytest.raises(ChangeRequestOutdated):
        change_request_apply(
            change_request_id=request.pk, actor=reviewed.actor(reviewed.alice), now=t0
        )
    assert not Schedule.objects.exists()
