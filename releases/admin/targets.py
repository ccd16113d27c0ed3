"""The state a change would leave, computed without applying it: what the confirmation pages show.

Pure: a ``ReleaseState`` and the change's inputs in, the target ``ReleaseState`` out. The service
stays the judge on apply (versions committed, gates, the revision under the row lock); these
functions only refuse what has no target at all (ramping a canary that does not run), with the
service's words. A new draw's salt is not known until the service makes it, so the target carries
a placeholder, which ``traffic`` reads as a fresh, independent draw.

Rollback has no function here: its target is ``ReleaseState.from_dict(event.before)`` of the event
``releases.services.rollback_target`` picks, the same read the service makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from releases.errors import ReleaseStateInvalid
from releases.state import Canary, Experiment, ReleaseState, Shadow, Variant

NEW_DRAW = "(new {} draw)"  # never a real salt: real ones are "<prompt>/<env>/<purpose>/..."


def _new_salt(purpose: str) -> str:
    return NEW_DRAW.format(purpose)


def _running_canary(state: ReleaseState) -> Canary:
    if state.canary is None:
        raise ReleaseStateInvalid("No canary is running.")
    return state.canary


def deploy(state: ReleaseState, *, version: int) -> ReleaseState:
    if state.canary is not None:
        raise ReleaseStateInvalid(
            f"A canary of version {state.canary.version} is running; promote or abort it first."
        )
    return replace(state, stable=version)


def canary_start(state: ReleaseState, *, version: int, weight: int) -> ReleaseState:
    if state.stable is None:
        raise ReleaseStateInvalid("Deploy a stable version before starting a canary.")
    if state.canary is not None:
        raise ReleaseStateInvalid(
            f"A canary of version {state.canary.version} is running; promote or abort it first."
        )
    return replace(state, canary=Canary(version, weight, _new_salt("canary")))


def canary_percent(state: ReleaseState, *, weight: int) -> ReleaseState:
    # The same salt: raising only adds subjects, lowering removes the highest buckets.
    return replace(state, canary=replace(_running_canary(state), weight=weight))


def canary_promote(state: ReleaseState) -> ReleaseState:
    return replace(state, stable=_running_canary(state).version, canary=None)


def canary_abort(state: ReleaseState) -> ReleaseState:
    _running_canary(state)
    return replace(state, canary=None)


def experiment_start(
    state: ReleaseState, *, name: str, variants: Sequence[tuple[str, int, int]]
) -> ReleaseState:
    """``variants`` as (name, version, weight in basis points)."""
    if state.experiment is not None:
        raise ReleaseStateInvalid(
            f"The experiment {state.experiment.name!r} is running; its weights are fixed. "
            "Stop it before starting another."
        )
    if state.stable is None:
        raise ReleaseStateInvalid("Deploy a stable version before starting an experiment.")
    return replace(
        state,
        experiment=Experiment(
            name, tuple(Variant(n, v, w) for n, v, w in variants), _new_salt("experiment")
        ),
    )


def experiment_stop(state: ReleaseState, *, winner: str | None) -> ReleaseState:
    if state.experiment is None:
        raise ReleaseStateInvalid("No experiment is running.")
    stable = state.stable
    if winner:
        match = [v for v in state.experiment.variants if v.name == winner]
        if not match:
            known = ", ".join(v.name for v in state.experiment.variants)
            raise ReleaseStateInvalid(f"No variant named {winner!r}; the variants are {known}.")
        stable = match[0].version
    return replace(state, stable=stable, experiment=None)


def shadow_start(state: ReleaseState, *, versions: Sequence[int], sample: int) -> ReleaseState:
    if state.stable is None:
        raise ReleaseStateInvalid("Deploy a stable version before shadowing others.")
    return replace(state, shadow=Shadow(tuple(versions), sample, _new_salt("shadow")))


def shadow_stop(state: ReleaseState) -> ReleaseState:
    if state.shadow is None:
        raise ReleaseStateInvalid("No shadow is running.")
    return replace(state, shadow=None)
