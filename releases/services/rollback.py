"""Rollback: restores the full state before an earlier event, as a new event; history is never
rewritten and no gate is consulted: the way back is always open."""

from __future__ import annotations

from dataclasses import dataclass, replace

from registry.actors import Actor
from registry.models import Prompt

from ..errors import NothingToRollBack, ReleaseStateInvalid
from ..models import Environment, Release, ReleaseEvent
from ..state import ReleaseState
from .common import Decision, ReleaseChange

Action = ReleaseEvent.Action


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


@dataclass(frozen=True, kw_only=True)
class Rollback(ReleaseChange):
    """Restores the state before the last change not rolled back yet (or before ``to_event``),
    as a new event that names the event it restores. Never consults gates or the environment
    order, and its reason may be empty: the way back never waits."""

    action = Action.ROLLBACK
    held = False  # never waits for review

    to_event: int | None = None

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        event = rollback_target(release, self.to_event)
        return Decision(ReleaseState.from_dict(event.before), restores=event)

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        # Not pure: the target is the event's ``before``, the same read ``decide`` makes.
        if release is None:
            raise NothingToRollBack()
        return self.decide(release, state)

    def confirmed(self, decision: Decision) -> Rollback:
        # The event the page showed, not "the default": under the revision check they are the
        # same, and this applies exactly what was confirmed.
        return replace(self, to_event=decision.restores.pk if decision.restores else None)


def release_rollback(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    to_event: int | None = None,
    expected_revision: int | None = None,
) -> Release:
    """``Rollback`` to before the last change, or before ``to_event``."""
    return Rollback(to_event=to_event).execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )
