"""A/B experiments: split subjects between named variants, then stop, naming a winner or not."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from registry import labels
from registry.actors import Actor
from registry.errors import Problem
from registry.models import Prompt

from .. import transitions
from ..errors import ReleaseInvalid
from ..models import BASIS_POINTS, Environment, Release, ReleaseEvent
from ..state import ReleaseState
from .common import (
    Decision,
    PromotingChange,
    new_draw,
    new_salt,
    percent_to_basis_points,
    version_releasable,
)

Action = ReleaseEvent.Action
MAX_VARIANTS = 10
# An experiment's planned sample: below ~30 calls per variant no test means anything.
PLANNED_CALLS_MIN_PER_VARIANT = 30
PLANNED_CALLS_MAX = 1_000_000_000
# The fewest an experiment can plan for: its fewest variants (2), 30 each.
PLANNED_CALLS_MIN = 2 * PLANNED_CALLS_MIN_PER_VARIANT


def label_valid(name: str) -> bool:
    """A name is a label in answers, call records and metrics: "control\\n" or " control" would be
    a second variant that looks like the first. The rule the API's schema publishes
    (``registry.labels.LABEL_PATTERN``)."""
    return labels.label_valid(name)


@dataclass(frozen=True, kw_only=True)
class ExperimentStart(PromotingChange):
    """Splits subjects between named ``variants`` (name, version, percent); the rest stay on
    stable. A new salt draws the subjects.

    A running experiment's weights are fixed: moving one boundary would reassign people, so a
    change means stopping it and starting another (with a new salt)."""

    action = Action.EXPERIMENT_START

    name: str
    variants: list[tuple[str, int, Decimal]]
    planned_calls: int | None = None
    override_gates: bool = False

    def check(self, *, reason: str) -> None:
        super().check(reason=reason)
        problems: list[Problem] = []
        if not self.name.strip() or len(self.name) > 100:
            problems.append(
                Problem("invalid_name", "Name the experiment (1 to 100 characters).", "/name")
            )
        if not 2 <= len(self.variants) <= MAX_VARIANTS:
            problems.append(
                Problem("invalid_variants", f"Give 2 to {MAX_VARIANTS} variants.", "/variants")
            )
        names = [v[0] for v in self.variants]
        if len(set(names)) != len(names):
            problems.append(
                Problem("duplicate_variant", "Variant names must be unique.", "/variants")
            )
        for i, n in enumerate(names):
            if n in {"stable", "canary"} or not n.strip() or len(n) > 50 or not label_valid(n):
                problems.append(
                    Problem(
                        "invalid_name",
                        "Variant names are 1 to 50 printable characters, not stable or canary, "
                        "with no space at either end.",
                        f"/variants/{i}/name",
                    )
                )
        weights = []
        for i, (_, _, percent) in enumerate(self.variants):
            try:
                weights.append(percent_to_basis_points(percent, pointer=f"/variants/{i}/percent"))
            except ReleaseInvalid as exc:
                problems += exc.problems
        if len(weights) == len(self.variants) and sum(weights) > BASIS_POINTS:
            problems.append(
                Problem(
                    "weights_over_100",
                    "The variants' percentages add up to over 100.",
                    "/variants",
                )
            )
        planned = self.planned_calls
        if planned is not None and (
            isinstance(planned, bool)
            or not isinstance(planned, int)
            or not PLANNED_CALLS_MIN <= planned <= PLANNED_CALLS_MAX
        ):
            problems.append(
                Problem(
                    "invalid_planned_calls",
                    f"Plan from {PLANNED_CALLS_MIN_PER_VARIANT} sticky calls per variant to "
                    f"{PLANNED_CALLS_MAX:,}, or leave it empty.",
                    "/planned_calls",
                )
            )
        elif planned is not None and planned < len(self.variants) * PLANNED_CALLS_MIN_PER_VARIANT:
            # Across fields (the schema states only the bounds for the fewest variants).
            problems.append(
                Problem(
                    "planned_calls_below_variants",
                    f"Plan at least {PLANNED_CALLS_MIN_PER_VARIANT} sticky calls per variant "
                    f"({len(self.variants) * PLANNED_CALLS_MIN_PER_VARIANT} for "
                    f"{len(self.variants)}).",
                    "/planned_calls",
                )
            )
        if problems:
            raise ReleaseInvalid(problems)

    def target(self, state: ReleaseState, *, salt: str) -> ReleaseState:
        """Call after ``check``: the variants' weights are valid."""
        return transitions.experiment_start(
            state,
            name=self.name,
            variants=[
                (n, v, percent_to_basis_points(p, pointer=f"/variants/{i}/percent"))
                for i, (n, v, p) in enumerate(self.variants)
            ],
            salt=salt,
            planned_calls=self.planned_calls,
        )

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        target = self.target(state, salt=new_salt(release, "experiment", self.name))
        for _, number, _ in self.variants:
            version_releasable(release, number)
        return Decision(target, overridden=self.gates(release, self.gated_versions(state, target)))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(self.target(state, salt=new_draw("experiment")))

    def gated_versions(self, before: ReleaseState, after: ReleaseState) -> tuple[int, ...]:
        # A variant serves real traffic, as a canary does: a version that could not be deployed
        # here (environment order, gates) cannot take a share of it either. Stable already can.
        return tuple(dict.fromkeys(n for _, n, _ in self.variants if n != before.stable))


@dataclass(frozen=True, kw_only=True)
class ExperimentStop(PromotingChange):
    """Ends the experiment; the ``winner``'s version (if one is named) becomes stable, and only
    then are the gates asked."""

    action = Action.EXPERIMENT_STOP

    winner: str | None = None
    override_gates: bool = False

    def decide(self, release: Release, state: ReleaseState) -> Decision:
        target = transitions.experiment_stop(state, winner=self.winner)
        return Decision(target, overridden=self.gates(release, self.gated_versions(state, target)))

    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        return Decision(transitions.experiment_stop(state, winner=self.winner))

    def gated_versions(self, before: ReleaseState, after: ReleaseState) -> tuple[int, ...]:
        if after.stable is None or after.stable == before.stable:
            return ()
        return (after.stable,)


def release_experiment_start(
    *,
    prompt: Prompt,
    environment: Environment,
    name: str,
    variants: list[tuple[str, int, Decimal]],
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    override_gates: bool = False,
    planned_calls: int | None = None,
) -> Release:
    """``ExperimentStart`` named ``name`` over ``variants`` (name, version, percent)."""
    change = ExperimentStart(
        name=name, variants=variants, planned_calls=planned_calls, override_gates=override_gates
    )
    return change.execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )


def release_experiment_stop(
    *,
    prompt: Prompt,
    environment: Environment,
    winner: str | None,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    override_gates: bool = False,
) -> Release:
    """``ExperimentStop``, naming ``winner`` or not."""
    return ExperimentStop(winner=winner, override_gates=override_gates).execute(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
    )
