"""The state a change would leave, for the confirmation pages: ``releases.transitions`` with a
placeholder salt, since a new draw's real salt exists only once the service makes it.

The service stays the judge on apply (versions committed, gates, the revision under the row lock).
Rollback has no function here: its target is ``ReleaseState.from_dict(event.before)`` of the event
``releases.services.rollback_target`` picks, the same read the service makes.
"""

from __future__ import annotations

from collections.abc import Sequence

from releases import transitions
from releases.state import ReleaseState

NEW_DRAW = "(new {} draw)"  # never a real salt: real ones are "<prompt>/<env>/<purpose>/..."

deploy = transitions.deploy
canary_percent = transitions.canary_percent
canary_promote = transitions.canary_promote
canary_abort = transitions.canary_abort
experiment_stop = transitions.experiment_stop
shadow_stop = transitions.shadow_stop


def canary_start(state: ReleaseState, *, version: int, weight: int) -> ReleaseState:
    return transitions.canary_start(
        state, version=version, weight=weight, salt=NEW_DRAW.format("canary")
    )


def experiment_start(
    state: ReleaseState,
    *,
    name: str,
    variants: Sequence[tuple[str, int, int]],
    planned_calls: int | None = None,
) -> ReleaseState:
    return transitions.experiment_start(
        state,
        name=name,
        variants=variants,
        salt=NEW_DRAW.format("experiment"),
        planned_calls=planned_calls,
    )


def shadow_start(
    state: ReleaseState, *, versions: Sequence[int], sample: int, budget_per_hour: int | None
) -> ReleaseState:
    # A budget-only change keeps the running salt (the transition decides), so the page shows
    # no new draw for it.
    return transitions.shadow_start(
        state,
        versions=versions,
        sample=sample,
        salt=NEW_DRAW.format("shadow"),
        budget_per_hour=budget_per_hour,
    )
