"""Where review holds a release change (decision 0048): the one check every change passes
(``ReleaseChange.execute`` calls ``review_hold``), and the approved change request's part in the
change that applies it.

In an environment that ``requires_review``, a change that puts something new in front of traffic
(``ReleaseChange.held``) is applied only through an approved change request. Never held: the way
back (rollback, canary abort, stopping shadows), whose event says it was not held, and the
registry's own changes (``Actor.is_system``: canary analysis following its policy).
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from registry.actors import Actor

from ..errors import ChangeRequestClosed, ReviewRequired
from ..models import ChangeRequest, Environment, ReleaseEvent, Schedule
from .announce import change_request_decided_announce

WAY_BACK_NOTE = "Not held for review: a way back never waits."


def review_hold(
    *,
    held: bool,
    action: str,
    environment: Environment,
    actor: Actor,
    reason: str,
    change_request: ChangeRequest | None,
) -> str:
    """The reason the event records, or ``ReviewRequired`` for a held change made directly.

    A change that is not held says so in its reason, so the history shows that the way back
    was taken in a protected environment without review, by design."""
    if not environment.requires_review:
        return reason
    if not held:
        return f"{reason} ({WAY_BACK_NOTE})" if reason.strip() else WAY_BACK_NOTE
    if actor.is_system or change_request is not None:
        return reason
    raise ReviewRequired(environment=environment.name, action=action)


def change_request_lock_approved(
    change_request: ChangeRequest, *, now: datetime | None = None
) -> ChangeRequest:
    """The request's row, locked (after the release's: prompt, release, request), once it is
    still approved and unexpired: a request withdrawn or applied by a concurrent call between
    the caller's check and this lock is refused here."""
    locked = ChangeRequest.objects.select_for_update().get(pk=change_request.pk)
    state = locked.state_at(now or timezone.now())
    if state != ChangeRequest.State.APPROVED:
        raise ChangeRequestClosed(
            f"Change request #{locked.pk} is {ChangeRequest.State(state).label.lower()}; "
            "only an approved request is applied."
        )
    return locked


def change_request_record_applied(
    change_request: ChangeRequest,
    *,
    actor: Actor,
    event: ReleaseEvent | None = None,
    schedule: Schedule | None = None,
) -> None:
    """Marks the locked request applied by ``event`` (a change) or ``schedule`` (a proposed
    schedule, decision 0049), in the transaction that made it."""
    change_request.state = ChangeRequest.State.APPLIED
    change_request.applied_at = change_request.decided_at = timezone.now()
    change_request.closed_by_label = actor.label
    change_request.release_event, change_request.schedule = event, schedule
    change_request.save(
        update_fields=[
            "state",
            "applied_at",
            "decided_at",
            "closed_by_label",
            "release_event",
            "schedule",
        ]
    )
    change_request_decided_announce(change_request, by=actor.label)
