"""Change requests (decision 0048): a release change proposed for an environment that requires
review, approved by other people, then applied as any change is (``ReleaseChange.execute``, which
re-checks the revision it was proposed against and the promotion gates).

Steps, each its own transaction and audited where it happens: ``change_request_propose`` (the
request with the state before and after), ``change_request_review`` (a reviewer's verdict with a
comment; enough approvals approve the request, one rejection rejects it), ``change_request_apply``
(the release event, whose reason names the request), ``change_request_withdraw`` (by its
proposer), ``change_requests_expire`` (the periodic sweep; a request past its time is refused as
expired before the sweep marks it). Every step that decides the request sends
``change_request.decided``; a proposal sends ``change_request.opened``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.actors import Actor
from registry.errors import Problem, VersionNotFound
from registry.models import Prompt, PromptVersion

from ..errors import (
    ChangeRequestClosed,
    ChangeRequestNotFound,
    ChangeRequestOutdated,
    OwnChangeRequest,
    ReleaseConflict,
    ReleaseInvalid,
    ReviewForbidden,
    ReviewNotRequired,
    VersionNotReleasable,
)
from ..models import ChangeRequest, ChangeRequestReview, Environment, Release, ReleaseEvent
from ..rights import release_change_check
from ..state import ReleaseState, release_state
from .announce import change_request_decided_announce, change_request_opened_announce
from .common import ReleaseChange
from .review import change_request_lock_approved, change_request_record_applied
from .schedule import (
    PlannedStep,
    change_text,
    schedule_create,
    schedule_plan_check,
    schedule_refusals_check,
    schedule_validate,
)
from .stored import change_from_stored, change_stored

logger = logging.getLogger(__name__)

State = ChangeRequest.State
Verdict = ChangeRequestReview.Verdict


def _now(now: datetime | None) -> datetime:
    return now or timezone.now()


def _state_label(state: str) -> str:
    return State(state).label.lower()


# --- proposing ------------------------------------------------------------------------------------


def change_request_propose(
    *,
    prompt: Prompt,
    environment: Environment,
    change: ReleaseChange | None = None,
    steps: Sequence[PlannedStep] = (),
    actor: Actor,
    reason: str,
    expected_revision: int | None = None,
    now: datetime | None = None,
) -> ChangeRequest:
    """Proposes ``change``, or the schedule ``steps`` (decision 0049), for the release of
    ``prompt`` in ``environment`` as it is now.

    1. Refuse what review does not hold: an environment that does not require review, a way
       back (``ReviewNotRequired``: apply those directly), and a proposal without a reason.
    2. Check the change's own values, and its target against the release now (``preview``: the
       service's state rules; the versions it puts in front of traffic exist and are committed).
       A schedule: the proposer may make every step (``releases.rights``), its steps pass
       ``schedule_validate`` and the plan check scheduling makes, and the release has no active
       schedule and nothing else steering it.
    3. Keep the change (a schedule's first step, its steps in ``steps``), the revision and state it
       was proposed against and the state it would leave (after the last step); it expires after
       the environment's ``change_request_hours``.
    """
    if steps:
        change = steps[0].change
    if change is None:
        raise ValueError("change_request_propose takes a change or steps")
    if not environment.requires_review:
        raise ReviewNotRequired(
            f"{environment.name} does not require review: apply the change directly."
        )
    if not any(step.change.held for step in steps) if steps else not change.held:
        raise ReviewNotRequired(
            "A schedule of ways back only is never held for review: schedule it directly."
            if steps
            else f"{ReleaseEvent.Action(change.action).label} is never held for review (a way "
            "back never waits): apply it directly."
        )
    if not reason.strip():
        raise ReleaseInvalid(
            [
                Problem(
                    "reason_required",
                    "Say why: reviewers read it, and the release history keeps it.",
                    "/reason",
                )
            ]
        )
    now = _now(now)
    if steps:
        for step in steps:
            release_change_check(actor=actor, environment=environment, action=step.change.action)
        schedule_validate(steps=steps, reason=reason, now=now)
    else:
        change.check(reason=reason)
    with transaction.atomic():
        release = (
            Release.objects.select_related("prompt", "environment")
            .filter(prompt=prompt, environment=environment)
            .first()
        )
        revision = release.revision if release is not None else 0
        if expected_revision is not None and expected_revision != revision:
            raise ReleaseConflict(current_revision=revision)
        before = release_state(release) if release is not None else ReleaseState()
        if steps:
            schedule_refusals_check(prompt=prompt, environment=environment, release=release)
            after = schedule_plan_check(release, prompt, steps)
        else:
            after = change.preview(release, before).target
            for number in change.gated_versions(before, after):
                _committed_version(prompt, number)
        change_request = ChangeRequest.objects.create(
            prompt=prompt,
            environment=environment,
            action=change.action,
            change=change_stored(change),
            steps=[
                {"at": step.at.astimezone(UTC).isoformat(), "change": change_stored(step.change)}
                for step in steps
            ],
            reason=reason,
            proposed_by_id=actor.user_id,
            proposed_by_label=actor.label,
            base_revision=revision,
            before=before.as_dict(),
            after=after.as_dict(),
            expires_at=now + timedelta(hours=environment.change_request_hours),
        )
        change_request_opened_announce(change_request)
    logger.info(
        "Change request opened: id=%s prompt=%s env=%s action=%s steps=%d",
        change_request.pk,
        prompt.pk,
        environment.name,
        change.action,
        len(steps),
    )
    return change_request


def change_request_planned_steps(change_request: ChangeRequest) -> list[PlannedStep]:
    """A proposed schedule's steps as ``schedule_create`` takes them."""
    return [
        PlannedStep(
            at=datetime.fromisoformat(step["at"]), change=change_from_stored(step["change"])
        )
        for step in change_request.steps
    ]


def _committed_version(prompt: Prompt, number: int) -> None:
    version = PromptVersion.objects.filter(prompt=prompt, number=number).only("status").first()
    if version is None:
        raise VersionNotFound(f"{prompt.key} has no version {number}.")
    if not version.is_committed:
        raise VersionNotReleasable(
            f"Version {number} of {prompt.key} is a draft; commit it before releasing it."
        )


# --- who may do what ------------------------------------------------------------------------------


def change_request_is_proposer(change_request: ChangeRequest, actor: Actor) -> bool:
    """A person by their user (whether through the admin or a key they own), a key by its
    label."""
    if change_request.proposed_by_id is not None:
        return change_request.proposed_by_id == actor.user_id
    return change_request.proposed_by_label == actor.label


def change_request_may_review(change_request: ChangeRequest, actor: Actor) -> bool:
    """An active member of the environment's review group (a key acts for its owner)."""
    environment = change_request.environment
    if actor.user_id is None or environment.review_group_id is None:
        return False
    return environment.review_group.user_set.filter(pk=actor.user_id, is_active=True).exists()


def _reviewer_check(change_request: ChangeRequest, actor: Actor, verdict: str) -> None:
    environment = change_request.environment
    if actor.user_id is None:
        raise ReviewForbidden(
            "A change request is reviewed by a person: in the admin, or with an API key that "
            "acts for its owner (manage.py apikey create --owner)."
        )
    if change_request_is_proposer(change_request, actor):
        if verdict == Verdict.APPROVE:
            raise OwnChangeRequest(
                f"You proposed change request #{change_request.pk}: someone else in "
                f"{environment.review_group} approves it."
            )
        raise OwnChangeRequest(
            f"You proposed change request #{change_request.pk}: withdraw it instead."
        )
    if not change_request_may_review(change_request, actor):
        group = environment.review_group
        raise ReviewForbidden(
            f"Change requests in {environment.name} are reviewed by the {group} group; "
            f"{actor.label} is not in it."
        )


def _locked(change_request_id: int) -> ChangeRequest:
    change_request = (
        ChangeRequest.objects.select_for_update(of=("self",))
        .select_related("prompt", "environment", "environment__review_group")
        .filter(pk=change_request_id)
        .first()
    )
    if change_request is None:
        raise ChangeRequestNotFound()
    return change_request


# --- reviewing ------------------------------------------------------------------------------------


@transaction.atomic
def change_request_review(
    *,
    change_request_id: int,
    actor: Actor,
    verdict: str,
    comment: str = "",
    now: datetime | None = None,
) -> ChangeRequest:
    """A reviewer's verdict on an open request: ``approve`` (the request is approved once it
    has ``approvals_required`` approvals) or ``reject`` (one rejection rejects it). Refused: a
    request no longer open, a reviewer outside the review group or an API key acting for no one,
    the proposer, and a second verdict by the same reviewer."""
    now = _now(now)
    change_request = _locked(change_request_id)
    state = change_request.state_at(now)
    if state != State.OPEN:
        raise ChangeRequestClosed(
            f"Change request #{change_request.pk} is {_state_label(state)}; only an open "
            "request is reviewed."
        )
    _reviewer_check(change_request, actor, verdict)
    already = change_request.reviews.filter(reviewer_id=actor.user_id).first()
    if already is not None:
        raise ChangeRequestClosed(
            f"You reviewed change request #{change_request.pk} already "
            f"({already.get_verdict_display().lower()})."
        )
    try:
        with transaction.atomic():
            ChangeRequestReview.objects.create(
                change_request=change_request,
                reviewer_id=actor.user_id,
                reviewer_label=actor.label,
                verdict=verdict,
                comment=comment,
            )
    except IntegrityError as exc:  # the same reviewer twice at once: the constraint settles it
        raise ChangeRequestClosed(
            f"You reviewed change request #{change_request.pk} already."
        ) from exc
    approvals = change_request.reviews.filter(verdict=Verdict.APPROVE).count()
    if verdict == Verdict.REJECT:
        change_request.state, change_request.closed_by_label = State.REJECTED, actor.label
    elif approvals >= change_request.environment.approvals_required:
        change_request.state = State.APPROVED
    else:
        return change_request  # open, waiting for more approvals
    change_request.decided_at = now
    change_request.save(update_fields=["state", "decided_at", "closed_by_label"])
    change_request_decided_announce(change_request, by=actor.label, comment=comment)
    return change_request


# --- applying -------------------------------------------------------------------------------------


def change_request_apply(
    *, change_request_id: int, actor: Actor, now: datetime | None = None
) -> ChangeRequest:
    """Applies an approved request, by its proposer or a reviewer: the proposed change, executed
    under the revision it was proposed against (a release that moved since is refused with
    ``ChangeRequestOutdated``, naming the changes that moved it) and through the promotion gates
    as they stand now. The release event's reason names the request and its approvers."""
    change_request = (
        ChangeRequest.objects.select_related("prompt", "environment", "environment__review_group")
        .filter(pk=change_request_id)
        .first()
    )
    if change_request is None:
        raise ChangeRequestNotFound()
    state = change_request.state_at(_now(now))
    if state != State.APPROVED:
        raise ChangeRequestClosed(_not_applicable(change_request, state))
    if not (
        change_request_is_proposer(change_request, actor)
        or change_request_may_review(change_request, actor)
    ):
        raise ReviewForbidden(
            f"Change request #{change_request.pk} is applied by its proposer or a member of "
            f"{change_request.environment.review_group}."
        )
    if change_request.steps:
        return _schedule_apply(change_request, actor, _now(now))
    change = change_from_stored(change_request.change)
    try:
        change.execute(
            prompt=change_request.prompt,
            environment=change_request.environment,
            actor=actor,
            reason=change_request_applied_reason(change_request),
            expected_revision=change_request.base_revision,
            change_request=change_request,
        )
    except ReleaseConflict as exc:
        raise change_request_outdated(change_request, exc.current_revision) from exc
    change_request.refresh_from_db()
    logger.info(
        "Change request applied: id=%s event=%s", change_request.pk, change_request.release_event_id
    )
    return change_request


def _schedule_apply(change_request: ChangeRequest, actor: Actor, now: datetime) -> ChangeRequest:
    """A proposed schedule: made by ``schedule_create`` as it was approved (the applier may make
    every step, the release still at the revision proposed against, the plan still applies),
    and the request marked applied with it in the same transaction. A step whose time has
    passed refuses it: reviewers approved those times, so new ones are proposed again."""
    steps = change_request_planned_steps(change_request)
    passed = [(n, step) for n, step in enumerate(steps, 1) if step.at <= now]
    if passed:
        n, step = passed[0]
        release = Release.objects.filter(
            prompt_id=change_request.prompt_id, environment_id=change_request.environment_id
        ).first()
        raise ChangeRequestOutdated(
            f"Step {n} of change request #{change_request.pk} ({change_text(step.change)}) was "
            f"due at {step.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, which has passed: the "
            "schedule reviewers approved can no longer be kept. Propose it again with new times.",
            proposed_revision=change_request.base_revision,
            current_revision=release.revision if release is not None else 0,
        )
    try:
        with transaction.atomic():
            schedule = schedule_create(
                prompt=change_request.prompt,
                environment=change_request.environment,
                steps=steps,
                actor=actor,
                reason=change_request_applied_reason(change_request),
                expected_revision=change_request.base_revision,
                now=now,
                change_request=change_request,
            )
            # Locked after the prompt (schedule_create's lock), as a change's apply does.
            locked = change_request_lock_approved(change_request, now=now)
            change_request_record_applied(locked, schedule=schedule, actor=actor)
    except ReleaseConflict as exc:
        raise change_request_outdated(change_request, exc.current_revision) from exc
    change_request.refresh_from_db()
    logger.info(
        "Change request applied: id=%s schedule=%s", change_request.pk, change_request.schedule_id
    )
    return change_request


def _not_applicable(change_request: ChangeRequest, state: str) -> str:
    if state == State.OPEN:
        approvals = change_request.reviews.filter(verdict=Verdict.APPROVE).count()
        required = change_request.environment.approvals_required
        return (
            f"Change request #{change_request.pk} has {approvals} of the {required} "
            f"approval{'s' if required > 1 else ''} it needs; it is applied once approved."
        )
    return (
        f"Change request #{change_request.pk} is {_state_label(state)}; only an approved "
        "request is applied."
    )


def change_request_applied_reason(change_request: ChangeRequest) -> str:
    """The release event's reason: the request, who approved it, and the proposer's reason."""
    approvers = [
        review.reviewer_label
        for review in change_request.reviews.all()
        if review.verdict == Verdict.APPROVE
    ]
    return (
        f"change request #{change_request.pk} (approved by {', '.join(approvers)}): "
        f"{change_request.reason}"
    )


def change_request_moves(change_request: ChangeRequest) -> list[ReleaseEvent]:
    """The release events since the revision the request was proposed against, oldest first."""
    return list(
        ReleaseEvent.objects.filter(
            release__prompt_id=change_request.prompt_id,
            release__environment_id=change_request.environment_id,
            revision__gt=change_request.base_revision,
        ).order_by("revision")[:20]
    )


def change_request_outdated(
    change_request: ChangeRequest, current_revision: int
) -> ChangeRequestOutdated:
    moves = "; ".join(
        f"revision {e.revision}: {e.get_action_display().lower()} by {e.actor_label}"
        for e in change_request_moves(change_request)
    )
    return ChangeRequestOutdated(
        f"The release moved since change request #{change_request.pk} was proposed at revision "
        f"{change_request.base_revision}: it is at revision {current_revision} ({moves}). What "
        "was approved is not what would be applied; propose the change again.",
        proposed_revision=change_request.base_revision,
        current_revision=current_revision,
    )


# --- withdrawing and expiring ---------------------------------------------------------------------


@transaction.atomic
def change_request_withdraw(
    *, change_request_id: int, actor: Actor, reason: str = "", now: datetime | None = None
) -> ChangeRequest:
    """The proposer takes back an open or approved request."""
    now = _now(now)
    change_request = _locked(change_request_id)
    state = change_request.state_at(now)
    if state not in (State.OPEN, State.APPROVED):
        raise ChangeRequestClosed(
            f"Change request #{change_request.pk} is {_state_label(state)}; only an open or "
            "approved request is withdrawn."
        )
    if not change_request_is_proposer(change_request, actor):
        raise ReviewForbidden(
            f"Change request #{change_request.pk} is withdrawn by its proposer, "
            f"{change_request.proposed_by_label}; a reviewer rejects it instead."
        )
    change_request.state, change_request.decided_at = State.WITHDRAWN, now
    change_request.closed_by_label = actor.label
    change_request.save(update_fields=["state", "decided_at", "closed_by_label"])
    change_request_decided_announce(change_request, by=actor.label, comment=reason)
    return change_request


def change_requests_expire(*, now: datetime | None = None) -> int:
    """Marks every open or approved request past its time expired (each a compare-and-swap, so
    a concurrent apply or a second sweep never races it), and tells about each one. Refusing an
    expired request does not wait for this: ``state_at`` already reads it expired."""
    now = _now(now)
    live = (State.OPEN, State.APPROVED)
    due = ChangeRequest.objects.filter(state__in=live, expires_at__lte=now).values_list(
        "pk", flat=True
    )
    expired = 0
    for pk in list(due[:500]):
        with transaction.atomic():
            swapped = ChangeRequest.objects.filter(
                pk=pk, state__in=live, expires_at__lte=now
            ).update(state=State.EXPIRED, decided_at=now)
            if swapped != 1:
                continue  # applied, withdrawn or swept meanwhile
            change_request = ChangeRequest.objects.select_related("prompt", "environment").get(
                pk=pk
            )
            change_request_decided_announce(change_request, by="system")
            expired += 1
    if expired:
        logger.info("Change requests expired: %d", expired)
    return expired
