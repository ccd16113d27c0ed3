"""The canary: start it on a share of subjects, ramp it, promote it to stable, or abort it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from registry.actors import Actor
from registry.models import Prompt

from .. import transitions
from ..models import Environment, Release, ReleaseEvent
from ..state import ReleaseState
from .common import (
    Decision,
    PromotingChange,
    ReleaseChange,
    new_draw,
    new_salt,
    percent_to_basis_points,
    version_releasable,
)

Action = ReleaseEvent.Action


@dataclass(frozen=True, kw_only=True)
class CanaryStart(PromotingChange):
    """Sends ``percent`` of subjects to ``version``, with a new salt (a new draw of subjects)."""

    action = Action.CANARY_START

    version: int
    percent: Decimal
    override_gates: bool = False

    def check(self, *, reason: str) -> None:
        super().check(reason=reason)
        self.weight()

    def weight(self) -> int:
        return percent_to_basis_points(self.percent, pointer="/percent")

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        salt = new_salt(release, "canary", str(self.version))
        target = transitions.canary_start(
            state, version=self.version, weight=self.weight(), salt=salt
        )
        version_releasable(release, self.version)
        return Decision(target, overridden=self.gates(release, self.gated_versions(state, target)))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(
            transitions.canary_start(
                state, version=self.version, weight=self.weight(), salt=new_draw("canary")
            )
        )

    def gated_versions(self, before: ReleaseState, after: ReleaseState) -> tuple[int, ...]:
        return (self.version,)


@dataclass(frozen=True, kw_only=True)
class CanaryPercent(ReleaseChange):
    """Ramps the running canary. Never re-salts: raising only adds subjects, lowering removes the
    highest buckets."""

    action = Action.CANARY_PERCENT

    percent: Decimal

    def check(self, *, reason: str) -> None:
        self.weight()

    def weight(self) -> int:
        return percent_to_basis_points(self.percent, pointer="/percent")

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        return Decision(transitions.canary_percent(state, weight=self.weight()))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(transitions.canary_percent(state, weight=self.weight()))


@dataclass(frozen=True, kw_only=True)
class CanaryPromote(PromotingChange):
    """The canary's version becomes stable for everyone."""

    action = Action.CANARY_PROMOTE

    override_gates: bool = False

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        target = transitions.canary_promote(state)
        return Decision(target, overridden=self.gates(release, self.gated_versions(state, target)))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(transitions.canary_promote(state))

    def gated_versions(self, before: ReleaseState, after: ReleaseState) -> tuple[int, ...]:
        return (after.stable,) if after.stable is not None else ()


@dataclass(frozen=True, kw_only=True)
class CanaryAbort(ReleaseChange):
    """Everyone goes back to the stable version. No gate: the way back is always open."""

    action = Action.CANARY_ABORT
    held = False  # never waits for review

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        return Decision(transitions.canary_abort(state))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(transitions.canary_abort(state))


def release_canary_start(
    *,
    prompt: Prompt,
    environment: Environment,
    version: int,
    percent: Decimal,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    override_gates: bool = False,
) -> Release:
    """``CanaryStart`` of ``version`` at ``percent``."""
    return CanaryStart(version=version, percent=percent, override_gates=override_gates).execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )


def release_canary_set_percent(
    *,
    prompt: Prompt,
    environment: Environment,
    percent: Decimal,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """``CanaryPercent``: the running canary to ``percent``."""
    return CanaryPercent(percent=percent).execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )


def release_canary_promote(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    override_gates: bool = False,
) -> Release:
    """``CanaryPromote``."""
    return CanaryPromote(override_gates=override_gates).execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )


def release_canary_abort(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """``CanaryAbort``."""
    return CanaryAbort().execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )
