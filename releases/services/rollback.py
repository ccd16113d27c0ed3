"""Rollback: restores the full state before an earlier event, as a new event; history is never
rewritten and no gate is consulted."""

from __future__ import annotations

from django.db import transaction

from registry.actors import Actor
from registry.models import Prompt

from ..errors import (
    NothingToRollBack,
    ReleaseStateInvalid,
)
from ..models import Environment, Release, ReleaseEvent
from ..state import ReleaseState, release_state
from .common import (
    _locked_release,
    _record,
    ensure_revision_matches,
)

Action = ReleaseEvent.Action
MAX_VARIANTS = 10
MAX_SHADOWS = 3


def rollback_target(release: Release, to_event: int | None = None) -> ReleaseEvent:
    """The event whose ``before`` a rollback restores.

    By default, the last change that no rollback has undone yet: a rollback restoring event E
    undoes every change from E up to itself, so repeated rollbacks walk further back and never
    undo a rollback. ``to_event`` names any earlier change of this release directly.

    1. Walk the events newest first, keeping ``floor``: the oldest event any rollback seen so far
       restored. Every change at or above the floor has been undone.
    2. A rollback lowers the floor to the event it restored (even one that was itself undone:
       its own undoing still stands).
    3. The first change below the floor is the target; none left means nothing to roll back.

    The walk stops at the target, so a long history is not read whole.
    """
    if to_event is not None:
        target = (
            ReleaseEvent.objects.filter(pk=to_event, release=release)
            .exclude(action=Action.ROLLBACK)
            .first()
        )
        if target is None:
            raise ReleaseStateInvalid(
                f"Event {to_event} is not a change of this release that can be rolled back to."
            )
        return target
    floor: int | None = None
    events = (
        ReleaseEvent.objects.filter(release=release)
        .order_by("-id")
        .values_list("id", "action", "restores_id")
    )
    for pk, action, restores_id in events.iterator(chunk_size=100):
        if action == Action.ROLLBACK:
            floor = restores_id if floor is None else min(floor, restores_id)
        elif floor is None or pk < floor:
            return ReleaseEvent.objects.get(pk=pk)
    raise NothingToRollBack()


@transaction.atomic
def release_rollback(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    to_event: int | None = None,
    expected_revision: int | None = None,
) -> Release:
    """Restores the state before the last change (or before ``to_event``), as a new event.

    Never consults gates or the environment order: the way back is always open."""
    release = _locked_release(prompt=prompt, environment=environment)
    ensure_revision_matches(release, expected_revision)
    target = rollback_target(release, to_event)
    before = release_state(release)
    after = ReleaseState.from_dict(target.before)
    _record(
        release=release,
        action=Action.ROLLBACK,
        actor=actor,
        reason=reason,
        before=before,
        after=after,
        restores=target,
    )
    return release
