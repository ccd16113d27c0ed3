"""Deploy, canary, experiment and shadow: each one transaction through ``common._change``."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from registry.actors import Actor
from registry.errors import Problem
from registry.labels import label_valid
from registry.models import Prompt

from .. import transitions
from ..errors import (
    ReleaseInvalid,
)
from ..models import (
    BASIS_POINTS,
    SHADOW_BUDGET_MAX,
    SHADOW_BUDGET_MIN,
    Environment,
    Release,
    ReleaseEvent,
)
from ..state import ReleaseState
from .common import (
    _change,
    _ensure_promotable,
    _new_salt,
    _releasable,
    override_check,
    percent_to_basis_points,
)

Action = ReleaseEvent.Action
MAX_VARIANTS = 10
# An experiment's planned sample: below ~30 calls per variant no test means anything.
PLANNED_CALLS_MIN_PER_VARIANT = 30
PLANNED_CALLS_MAX = 1_000_000_000
# The fewest an experiment can plan for: its fewest variants (2), 30 each.
PLANNED_CALLS_MIN = 2 * PLANNED_CALLS_MIN_PER_VARIANT
MAX_SHADOWS = 3


def _label_valid(name: str) -> bool:
    # The rule the API's schema publishes (registry.labels.LABEL_PATTERN).
    return label_valid(name)


def shadow_budget_problems(
    budget_per_hour: object, *, pointer: str = "/budget_per_hour"
) -> list[Problem]:
    """What is wrong with a shadow budget (none: the server default; else a whole number of runs
    per hour in range), for the service and the admin's preview alike."""
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


@transaction.atomic
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
    """Makes ``version`` the stable version. Refused while a canary runs: promote or abort it."""
    override_check(override_gates=override_gates, reason=reason)
    overridden: list[dict] = []

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.deploy(state, version=version)
        _releasable(release, version)
        _ensure_promotable(release, version, override=override_gates, overridden=overridden)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.DEPLOY,
        decide=decide,
        overridden_gates=overridden,
    )


@transaction.atomic
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
    """Sends ``percent`` of subjects to ``version``, with a new salt."""
    override_check(override_gates=override_gates, reason=reason)
    overridden: list[dict] = []
    weight = percent_to_basis_points(percent, pointer="/percent")

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        salt = _new_salt(release, "canary", str(version))
        target = transitions.canary_start(state, version=version, weight=weight, salt=salt)
        _releasable(release, version)
        _ensure_promotable(release, version, override=override_gates, overridden=overridden)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.CANARY_START,
        decide=decide,
        overridden_gates=overridden,
    )


@transaction.atomic
def release_canary_set_percent(
    *,
    prompt: Prompt,
    environment: Environment,
    percent: Decimal,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """Ramps the running canary. Never re-salts: raising only adds subjects, lowering removes the
    highest buckets."""
    weight = percent_to_basis_points(percent, pointer="/percent")

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        return transitions.canary_percent(state, weight=weight)

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.CANARY_PERCENT,
        decide=decide,
    )


@transaction.atomic
def release_canary_promote(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
    override_gates: bool = False,
) -> Release:
    """The canary's version becomes stable for everyone."""
    override_check(override_gates=override_gates, reason=reason)
    overridden: list[dict] = []

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.canary_promote(state)
        _ensure_promotable(release, target.stable, override=override_gates, overridden=overridden)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.CANARY_PROMOTE,
        decide=decide,
        overridden_gates=overridden,
    )


@transaction.atomic
def release_canary_abort(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """Everyone goes back to the stable version."""

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        return transitions.canary_abort(state)

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.CANARY_ABORT,
        decide=decide,
    )


@transaction.atomic
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
    """Splits subjects between named variants (name, version, percent); the rest stay on stable.

    A running experiment's weights are fixed: moving one boundary would reassign people, so a
    change means stopping it and starting another (with a new salt)."""
    override_check(override_gates=override_gates, reason=reason)
    overridden: list[dict] = []
    problems: list[Problem] = []
    if not name.strip() or len(name) > 100:
        problems.append(
            Problem("invalid_name", "Name the experiment (1 to 100 characters).", "/name")
        )
    if not 2 <= len(variants) <= MAX_VARIANTS:
        problems.append(
            Problem("invalid_variants", f"Give 2 to {MAX_VARIANTS} variants.", "/variants")
        )
    names = [v[0] for v in variants]
    if len(set(names)) != len(names):
        problems.append(Problem("duplicate_variant", "Variant names must be unique.", "/variants"))
    for i, n in enumerate(names):
        # A name is a label in answers, call records and metrics: "control\n" or " control"
        # would be a second variant that looks like the first.
        if n in {"stable", "canary"} or not n.strip() or len(n) > 50 or not _label_valid(n):
            problems.append(
                Problem(
                    "invalid_name",
                    "Variant names are 1 to 50 printable characters, not stable or canary, "
                    "with no space at either end.",
                    f"/variants/{i}/name",
                )
            )
    weights = []
    for i, (_, _, percent) in enumerate(variants):
        try:
            weights.append(percent_to_basis_points(percent, pointer=f"/variants/{i}/percent"))
        except ReleaseInvalid as exc:
            problems += exc.problems
    if len(weights) == len(variants) and sum(weights) > BASIS_POINTS:
        problems.append(
            Problem(
                "weights_over_100", "The variants' percentages add up to over 100.", "/variants"
            )
        )
    if planned_calls is not None and (
        isinstance(planned_calls, bool)
        or not isinstance(planned_calls, int)
        or not PLANNED_CALLS_MIN <= planned_calls <= PLANNED_CALLS_MAX
    ):
        problems.append(
            Problem(
                "invalid_planned_calls",
                f"Plan from {PLANNED_CALLS_MIN_PER_VARIANT} sticky calls per variant to "
                f"{PLANNED_CALLS_MAX:,}, or leave it empty.",
                "/planned_calls",
            )
        )
    elif (
        planned_calls is not None and planned_calls < len(variants) * PLANNED_CALLS_MIN_PER_VARIANT
    ):
        # Across fields (the schema states only the bounds for the fewest variants).
        problems.append(
            Problem(
                "planned_calls_below_variants",
                f"Plan at least {PLANNED_CALLS_MIN_PER_VARIANT} sticky calls per variant "
                f"({len(variants) * PLANNED_CALLS_MIN_PER_VARIANT} for {len(variants)}).",
                "/planned_calls",
            )
        )
    if problems:
        raise ReleaseInvalid(problems)

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.experiment_start(
            state,
            name=name,
            variants=[(n, v, w) for (n, v, _), w in zip(variants, weights, strict=True)],
            salt=_new_salt(release, "experiment", name),
            planned_calls=planned_calls,
        )
        for i, (_, number, _) in enumerate(variants):
            _releasable(release, number, pointer=f"/variants/{i}/version")
        # A variant serves real traffic, as a canary does: a version that could not be deployed
        # here (environment order, gates) cannot take a share of it either.
        for number in dict.fromkeys(n for _, n, _ in variants):
            if number != state.stable:
                _ensure_promotable(release, number, override=override_gates, overridden=overridden)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.EXPERIMENT_START,
        decide=decide,
        overridden_gates=overridden,
    )


@transaction.atomic
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
    """Ends the experiment; the winner's version (if one is named) becomes stable."""
    override_check(override_gates=override_gates, reason=reason)
    overridden: list[dict] = []

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.experiment_stop(state, winner=winner)
        if target.stable != state.stable:
            _ensure_promotable(
                release, target.stable, override=override_gates, overridden=overridden
            )
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.EXPERIMENT_STOP,
        decide=decide,
        overridden_gates=overridden,
    )


@transaction.atomic
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
    """Runs ``versions`` on a sample of live calls' inputs, out of users' sight, at most
    ``budget_per_hour`` shadow runs an hour (None: the ``SHADOW_BUDGET_PER_HOUR`` setting).

    Also how a running shadow changes: the same versions and sample with another budget keep
    their salt, so the same calls stay sampled (``transitions.shadow_start``)."""
    problems: list[Problem] = []
    try:
        sample = percent_to_basis_points(sample_percent, pointer="/sample_percent")
    except ReleaseInvalid as exc:
        problems, sample = list(exc.problems), 0
    if not 1 <= len(versions) <= MAX_SHADOWS or len(set(versions)) != len(versions):
        problems.append(
            Problem("invalid_versions", f"Give 1 to {MAX_SHADOWS} different versions.", "/versions")
        )
    problems += shadow_budget_problems(budget_per_hour)
    if problems:
        raise ReleaseInvalid(problems)

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        salt = _new_salt(release, "shadow", "-".join(map(str, versions)))
        target = transitions.shadow_start(
            state, versions=versions, sample=sample, salt=salt, budget_per_hour=budget_per_hour
        )
        for i, number in enumerate(versions):
            _releasable(release, number, pointer=f"/versions/{i}")
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.SHADOW_START,
        decide=decide,
    )


@transaction.atomic
def release_shadow_stop(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        return transitions.shadow_stop(state)

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.SHADOW_STOP,
        decide=decide,
    )
