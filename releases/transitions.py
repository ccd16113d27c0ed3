"""The rules of a release's state machine, as pure functions: a state and a change in, the target
state out, or ``ReleaseStateInvalid`` when the change does not apply to that state.

Each verb of ``releases.services`` (``Deploy``, ``CanaryStart``, ...) calls these from its
``decide``, under the row lock, next to the checks that need the database (is the version
committed, do the gates pass), and from its ``preview``, which the admin shows on its confirmation
pages before anything is applied. One set of rules, so what the page shows is what the service
does (decision 0007).

A new draw's salt is the caller's: ``decide`` makes a real one; ``preview`` passes a placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .errors import ReleaseStateInvalid
from .state import Canary, Experiment, ReleaseState, Shadow, Variant


def _no_canary_running(state: ReleaseState) -> None:
    if state.canary is not None:
        raise ReleaseStateInvalid(
            f"A canary of version {state.canary.version} is running; promote or abort it first."
        )


def _running_canary(state: ReleaseState) -> Canary:
    if state.canary is None:
        raise ReleaseStateInvalid("No canary is running.")
    return state.canary


def deploy(state: ReleaseState, *, version: int) -> ReleaseState:
    """``version`` becomes stable. Refused while a canary runs: promote or abort it first."""
    _no_canary_running(state)
    if state.stable == version:
        raise ReleaseStateInvalid(f"Version {version} is stable already.")
    return replace(state, stable=version)


def canary_start(state: ReleaseState, *, version: int, weight: int, salt: str) -> ReleaseState:
    if state.stable is None:
        raise ReleaseStateInvalid("Deploy a stable version before starting a canary.")
    _no_canary_running(state)
    if version == state.stable:
        raise ReleaseStateInvalid(f"Version {version} is the stable version already.")
    return replace(state, canary=Canary(version, weight, salt))


def canary_percent(state: ReleaseState, *, weight: int) -> ReleaseState:
    """Never re-salts: raising only adds subjects, lowering removes the highest buckets."""
    canary = _running_canary(state)
    if canary.weight == weight:
        raise ReleaseStateInvalid(f"The canary is at {weight / 100:g} % already.")
    return replace(state, canary=replace(canary, weight=weight))


def canary_promote(state: ReleaseState) -> ReleaseState:
    return replace(state, stable=_running_canary(state).version, canary=None)


def canary_abort(state: ReleaseState) -> ReleaseState:
    _running_canary(state)
    return replace(state, canary=None)


def experiment_start(
    state: ReleaseState,
    *,
    name: str,
    variants: Sequence[tuple[str, int, int]],
    salt: str,
    planned_calls: int | None = None,
) -> ReleaseState:
    """``variants`` as (name, version, weight in basis points). A running experiment's weights
    are fixed: moving one boundary would reassign people, so it must be stopped first."""
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
            name, tuple(Variant(n, v, w) for n, v, w in variants), salt, planned_calls
        ),
    )


def experiment_stop(state: ReleaseState, *, winner: str | None) -> ReleaseState:
    """Ends the experiment; the winner's version, when one is named, becomes stable."""
    if state.experiment is None:
        raise ReleaseStateInvalid("No experiment is running.")
    stable = state.stable
    if winner:
        match = [v for v in state.experiment.variants if v.name == winner]
        if not match:
            known = ", ".join(v.name for v in state.experiment.variants)
            raise ReleaseStateInvalid(f"No variant named {winner!r}; the variants are {known}.")
        stable = match[0].version
        if state.canary is not None and state.canary.version == stable:
            raise ReleaseStateInvalid("The winner is the running canary; promote it instead.")
    return replace(state, stable=stable, experiment=None)


def shadow_start(
    state: ReleaseState,
    *,
    versions: Sequence[int],
    sample: int,
    salt: str,
    budget_per_hour: int | None = None,
) -> ReleaseState:
    """Starts shadows, or restarts the running ones with new settings.

    A restart with the same versions and sample keeps the running salt: only the budget moved, and
    re-drawing would swap the sampled subjects for no reason. Any other restart draws afresh with
    ``salt``. Restarting with nothing changed is refused, as a ramp to the same percent is."""
    if state.stable is None:
        raise ReleaseStateInvalid("Deploy a stable version before shadowing others.")
    running, versions = state.shadow, tuple(versions)
    if running is not None and (running.versions, running.sample) == (versions, sample):
        if running.budget_per_hour == budget_per_hour:
            raise ReleaseStateInvalid(
                "The shadows run with these versions, sample and budget already."
            )
        salt = running.salt
    return replace(state, shadow=Shadow(versions, sample, salt, budget_per_hour))


def shadow_stop(state: ReleaseState) -> ReleaseState:
    if state.shadow is None:
        raise ReleaseStateInvalid("No shadow is running.")
    return replace(state, shadow=None)
