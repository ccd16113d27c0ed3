"""Deploy: a committed version becomes the stable version, for everyone."""

from __future__ import annotations

from dataclasses import dataclass

from registry.actors import Actor
from registry.models import Prompt

from .. import transitions
from ..models import Environment, Release, ReleaseEvent
from ..state import ReleaseState
from .common import Decision, PromotingChange, version_releasable


@dataclass(frozen=True, kw_only=True)
class Deploy(PromotingChange):
    """Makes ``version`` the stable version. Refused while a canary runs: promote or abort it."""

    action = ReleaseEvent.Action.DEPLOY

    version: int
    override_gates: bool = False

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        target = transitions.deploy(state, version=self.version)
        version_releasable(release, self.version)
        return Decision(target, overridden=self.gates(release, self.gated_versions(state, target)))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(transitions.deploy(state, version=self.version))

    def gated_versions(self, before: ReleaseState, after: ReleaseState) -> tuple[int, ...]:
        return (self.version,)


def release_deploy(
    *,
    prompt: Prompt,
    environment: Environment,
    version: int,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    override_gates: bool = False,
) -> Release:
    """``Deploy`` of ``version`` to ``prompt`` in ``environment``."""
    return Deploy(version=version, override_gates=override_gates).execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )
