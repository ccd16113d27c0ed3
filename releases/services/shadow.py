"""Shadows: run other versions on a sample of live calls' inputs, out of users' sight, within a
budget of runs per hour; or stop them. No gate: nobody sees a shadow's answer."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from registry.actors import Actor
from registry.errors import Problem
from registry.models import Prompt

from .. import transitions
from ..errors import ReleaseInvalid
from ..models import SHADOW_BUDGET_MAX, SHADOW_BUDGET_MIN, Environment, Release, ReleaseEvent
from ..state import ReleaseState
from .common import (
    Decision,
    ReleaseChange,
    new_draw,
    new_salt,
    percent_to_basis_points,
    version_releasable,
)

Action = ReleaseEvent.Action
MAX_SHADOWS = 3


def shadow_budget_problems(
    budget_per_hour: object, *, pointer: str = "/budget_per_hour"
) -> list[Problem]:
    """What is wrong with a shadow budget (none: the server default; else a whole number of runs
    per hour in range)."""
    if budget_per_hour is None:
        return []
    # bool is an int to Python; "true runs per hour" is a caller's mistake, not 1.
    if (
        isinstance(budget_per_hour, bool)
        or not isinstance(budget_per_hour, int)
        or not SHADOW_BUDGET_MIN <= budget_per_hour <= SHADOW_BUDGET_MAX
    ):
        return [
            Problem(
                "invalid_budget",
                f"Give shadow runs per hour as a whole number from {SHADOW_BUDGET_MIN} to "
                f"{SHADOW_BUDGET_MAX:,}, or none for the server default.",
                pointer,
            )
        ]
    return []


@dataclass(frozen=True, kw_only=True)
class ShadowStart(ReleaseChange):
    """Runs ``versions`` on ``sample_percent`` of live calls' inputs, at most ``budget_per_hour``
    shadow runs an hour (None: the ``SHADOW_BUDGET_PER_HOUR`` setting).

    Also how running shadows change: the same versions and sample with another budget keep their
    salt, so the same calls stay sampled (``transitions.shadow_start``)."""

    action = Action.SHADOW_START

    versions: list[int]
    sample_percent: Decimal
    budget_per_hour: int | None = None

    def check(self, *, reason: str) -> None:
        problems: list[Problem] = []
        try:
            self.sample()
        except ReleaseInvalid as exc:
            problems = list(exc.problems)
        versions = self.versions
        if not 1 <= len(versions) <= MAX_SHADOWS or len(set(versions)) != len(versions):
            problems.append(
                Problem(
                    "invalid_versions", f"Give 1 to {MAX_SHADOWS} different versions.", "/versions"
                )
            )
        problems += shadow_budget_problems(self.budget_per_hour)
        if problems:
            raise ReleaseInvalid(problems)

    def sample(self) -> int:
        return percent_to_basis_points(self.sample_percent, pointer="/sample_percent")

    def target(self, state: ReleaseState, *, salt: str) -> ReleaseState:
        return transitions.shadow_start(
            state,
            versions=self.versions,
            sample=self.sample(),
            salt=salt,
            budget_per_hour=self.budget_per_hour,
        )

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        target = self.target(
            state, salt=new_salt(release, "shadow", "-".join(map(str, self.versions)))
        )
        for number in self.versions:
            version_releasable(release, number)
        return Decision(target)

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        # A budget-only change keeps the running salt (the transition decides), so the page
        # shows no new draw for it.
        return Decision(self.target(state, salt=new_draw("shadow")))


@dataclass(frozen=True, kw_only=True)
class ShadowStop(ReleaseChange):
    """Stops every shadow of the release."""

    action = Action.SHADOW_STOP
    held = False  # never waits for review: it only stops spending

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        return Decision(transitions.shadow_stop(state))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(transitions.shadow_stop(state))


def release_shadow_start(
    *,
    prompt: Prompt,
    environment: Environment,
    versions: list[int],
    sample_percent: Decimal,
    actor: Actor,
    budget_per_hour: int | None = None,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """``ShadowStart`` of ``versions`` on ``sample_percent`` of calls."""
    change = ShadowStart(
        versions=versions, sample_percent=sample_percent, budget_per_hour=budget_per_hour
    )
    return change.execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )


def release_shadow_stop(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """``ShadowStop``."""
    return ShadowStop().execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )
