"""Release changes: deploy, canary, experiment, shadow, rollback (STYLE R1, R3, R5, R6).

Every change follows the same steps, in one transaction:

1. lock the release row (creating it on first use), in the project's lock order: prompt first;
2. compare the caller's revision *inside* the lock (a revision read outside it is stale by the
   time we write) and refuse a stale one with ``ReleaseConflict``;
3. compute the new state from the locked row, validating versions, percents and gates;
4. save with ``update_fields``, bump the revision, write the ``ReleaseEvent`` with the full state
   before and after;
5. after commit, tell every web node (``releases.cache``): never from inside the transaction.
"""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from functools import partial

from django.db import IntegrityError, transaction

from registry.actors import Actor
from registry.errors import Problem, VersionNotFound
from registry.models import Prompt, PromptVersion

from . import transitions
from .errors import (
    NothingToRollBack,
    PromotionBlocked,
    ReleaseConflict,
    ReleaseInvalid,
    ReleaseStateInvalid,
    VersionNotReleasable,
    percent_problem,
)
from .gates import promotion_checks
from .models import BASIS_POINTS, Environment, Release, ReleaseEvent
from .state import Canary, Experiment, ReleaseState, Shadow, Variant

Action = ReleaseEvent.Action
MAX_VARIANTS = 10
MAX_SHADOWS = 3


def percent_to_basis_points(percent: Decimal | int | float | str, *, pointer: str) -> int:
    """0–100 with at most two decimals -> 0–10000 basis points, or ``ReleaseInvalid``."""
    try:
        value = Decimal(str(percent))
    except InvalidOperation as exc:
        raise ReleaseInvalid(
            [percent_problem(pointer, "Give a percentage from 0 to 100.")]
        ) from exc
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(100):
        raise ReleaseInvalid([percent_problem(pointer, "Give a percentage from 0 to 100.")])
    points = value * 100
    if points != points.to_integral_value():
        raise ReleaseInvalid(
            [percent_problem(pointer, "A percentage has at most two decimals (0.01 % steps).")]
        )
    return int(points)


SALT_MAX_CHARS = Release._meta.get_field("canary_salt").max_length


def _new_salt(release: Release, purpose: str, detail: str) -> str:
    # Readable for "why did user X get version 7?", and unique per start: a random suffix means
    # restarting the same canary re-draws its subjects instead of silently reusing the old ones.
    # The readable part is cut to fit the column (a 150-character key and a 100-character
    # experiment name would not); the random suffix alone keeps salts apart.
    suffix = "/" + secrets.token_hex(4)
    readable = f"{release.prompt.key}/{release.environment.name}/{purpose}/{detail}"
    return readable[: SALT_MAX_CHARS - len(suffix)] + suffix


def release_state(release: Release) -> ReleaseState:
    """The release's state as a value (one query for the version numbers if not selected)."""
    canary = None
    if release.canary_version_id is not None:
        canary = Canary(release.canary_version.number, release.canary_weight, release.canary_salt)
    experiment = None
    if release.experiment_name:
        experiment = Experiment(
            release.experiment_name,
            tuple(
                Variant(v["name"], v["version"], v["weight"]) for v in release.experiment_variants
            ),
            release.experiment_salt,
        )
    shadow = None
    if release.shadow_versions:
        shadow = Shadow(tuple(release.shadow_versions), release.shadow_sample, release.shadow_salt)
    return ReleaseState(
        stable=release.stable_version.number if release.stable_version_id else None,
        canary=canary,
        experiment=experiment,
        shadow=shadow,
    )


STATE_FIELDS = [
    "stable_version",
    "canary_version",
    "canary_weight",
    "canary_salt",
    "experiment_name",
    "experiment_variants",
    "experiment_salt",
    "shadow_versions",
    "shadow_sample",
    "shadow_salt",
]


def _apply_state(release: Release, state: ReleaseState) -> None:
    numbers = state.versions()
    by_number = {
        v.number: v for v in PromptVersion.objects.filter(prompt=release.prompt, number__in=numbers)
    }
    release.stable_version = by_number[state.stable] if state.stable is not None else None
    release.canary_version = by_number[state.canary.version] if state.canary else None
    release.canary_weight = state.canary.weight if state.canary else 0
    release.canary_salt = state.canary.salt if state.canary else ""
    release.experiment_name = state.experiment.name if state.experiment else ""
    release.experiment_variants = (
        [
            {"name": v.name, "version": v.version, "weight": v.weight}
            for v in state.experiment.variants
        ]
        if state.experiment
        else []
    )
    release.experiment_salt = state.experiment.salt if state.experiment else ""
    release.shadow_versions = list(state.shadow.versions) if state.shadow else []
    release.shadow_sample = state.shadow.sample if state.shadow else 0
    release.shadow_salt = state.shadow.salt if state.shadow else ""


def _locked_release(*, prompt: Prompt, environment: Environment) -> Release:
    """The release row, locked; created on first use (the unique constraint settles a race)."""
    Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
    try:
        with transaction.atomic():
            Release.objects.get_or_create(prompt=prompt, environment=environment)
    except IntegrityError:
        pass  # created by a concurrent first change; the lock below waits for it
    return (
        Release.objects.select_for_update(of=("self",))
        .select_related("prompt", "environment", "stable_version", "canary_version")
        .get(prompt=prompt, environment=environment)
    )


def ensure_revision_matches(release: Release, expected_revision: int | None) -> None:
    if expected_revision is not None and expected_revision != release.revision:
        raise ReleaseConflict(current_revision=release.revision)


def _releasable(release: Release, number: int, *, pointer: str = "/version") -> PromptVersion:
    version = PromptVersion.objects.filter(prompt=release.prompt, number=number).first()
    if version is None:
        raise VersionNotFound(f"{release.prompt.key} has no version {number}.")
    if not version.is_committed:
        raise VersionNotReleasable(
            f"Version {number} of {release.prompt.key} is a draft; commit it before releasing it."
        )
    return version


def _ensure_promotable(release: Release, number: int) -> None:
    """The environment order and the registered promotion gates (not consulted by rollback)."""
    environment = release.environment
    if environment.requires_previous_stable:
        previous = (
            Environment.objects.filter(position__lt=environment.position)
            .order_by("-position")
            .first()
        )
        if (
            previous is not None
            and not ReleaseEvent.objects.filter(
                release__prompt=release.prompt, release__environment=previous, after__stable=number
            ).exists()
        ):
            raise PromotionBlocked(
                f"{environment.name} takes only versions that have been stable in "
                f"{previous.name}; version {number} has not.",
                gate="environment-order",
            )
    for check in promotion_checks():
        verdict = check(prompt_id=release.prompt_id, environment=environment.name, version=number)
        if not verdict.passed:
            raise PromotionBlocked(
                verdict.detail or f"The {verdict.gate} gate failed.", gate=verdict.gate
            )


def _record(
    *,
    release: Release,
    action: str,
    actor: Actor,
    reason: str,
    before: ReleaseState,
    after: ReleaseState,
    restores: ReleaseEvent | None = None,
) -> ReleaseEvent:
    _apply_state(release, after)
    release.revision += 1
    release.save(update_fields=[*STATE_FIELDS, "revision", "updated_at"])
    event = ReleaseEvent.objects.create(
        release=release,
        action=action,
        revision=release.revision,
        actor_id=actor.user_id,
        actor_label=actor.label,
        reason=reason,
        before=before.as_dict(),
        after=after.as_dict(),
        restores=restores,
    )
    _publish_on_commit(release)
    return event


def _publish_on_commit(release: Release) -> None:
    from .cache import release_changed  # the cache imports services' selectors; keep it lazy

    transaction.on_commit(
        partial(
            release_changed,
            environment=release.environment.name,
            prompt=release.prompt.key,
            revision=release.revision,
        )
    )


def _change(
    *,
    prompt: Prompt,
    environment: Environment,
    actor: Actor,
    reason: str,
    expected_revision: int | None,
    action: str,
    decide,
) -> Release:
    release = _locked_release(prompt=prompt, environment=environment)
    ensure_revision_matches(release, expected_revision)
    before = release_state(release)
    after = decide(release, before)
    _record(release=release, action=action, actor=actor, reason=reason, before=before, after=after)
    return release


@transaction.atomic
def release_deploy(
    *,
    prompt: Prompt,
    environment: Environment,
    version: int,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """Makes ``version`` the stable version. Refused while a canary runs: promote or abort it."""

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.deploy(state, version=version)
        _releasable(release, version)
        _ensure_promotable(release, version)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.DEPLOY,
        decide=decide,
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
) -> Release:
    """Sends ``percent`` of subjects to ``version``, with a new salt."""
    weight = percent_to_basis_points(percent, pointer="/percent")

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        salt = _new_salt(release, "canary", str(version))
        target = transitions.canary_start(state, version=version, weight=weight, salt=salt)
        _releasable(release, version)
        _ensure_promotable(release, version)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.CANARY_START,
        decide=decide,
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
) -> Release:
    """The canary's version becomes stable for everyone."""

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.canary_promote(state)
        _ensure_promotable(release, target.stable)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.CANARY_PROMOTE,
        decide=decide,
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
) -> Release:
    """Splits subjects between named variants (name, version, percent); the rest stay on stable.

    A running experiment's weights are fixed: moving one boundary would reassign people, so a
    change means stopping it and starting another (with a new salt)."""
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
        if n in {"stable", "canary"} or not n.strip() or len(n) > 50:
            problems.append(
                Problem(
                    "invalid_name",
                    "Variant names are 1 to 50 characters, not stable or canary.",
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
    if problems:
        raise ReleaseInvalid(problems)

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.experiment_start(
            state,
            name=name,
            variants=[(n, v, w) for (n, v, _), w in zip(variants, weights, strict=True)],
            salt=_new_salt(release, "experiment", name),
        )
        for i, (_, number, _) in enumerate(variants):
            _releasable(release, number, pointer=f"/variants/{i}/version")
        # A variant serves real traffic, as a canary does: a version that could not be deployed
        # here (environment order, gates) cannot take a share of it either.
        for number in dict.fromkeys(n for _, n, _ in variants):
            if number != state.stable:
                _ensure_promotable(release, number)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.EXPERIMENT_START,
        decide=decide,
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
) -> Release:
    """Ends the experiment; the winner's version (if one is named) becomes stable."""

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        target = transitions.experiment_stop(state, winner=winner)
        if target.stable != state.stable:
            _ensure_promotable(release, target.stable)
        return target

    return _change(
        prompt=prompt,
        environment=environment,
        actor=actor,
        reason=reason,
        expected_revision=expected_revision,
        action=Action.EXPERIMENT_STOP,
        decide=decide,
    )


@transaction.atomic
def release_shadow_start(
    *,
    prompt: Prompt,
    environment: Environment,
    versions: list[int],
    sample_percent: Decimal,
    actor: Actor,
    reason: str = "",
    expected_revision: int | None = None,
) -> Release:
    """Runs ``versions`` on a sample of live calls' inputs, out of users' sight (runs issue)."""
    sample = percent_to_basis_points(sample_percent, pointer="/sample_percent")
    if not 1 <= len(versions) <= MAX_SHADOWS or len(set(versions)) != len(versions):
        raise ReleaseInvalid(
            [
                Problem(
                    "invalid_versions", f"Give 1 to {MAX_SHADOWS} different versions.", "/versions"
                )
            ]
        )

    def decide(release: Release, state: ReleaseState) -> ReleaseState:
        salt = _new_salt(release, "shadow", "-".join(map(str, versions)))
        target = transitions.shadow_start(state, versions=versions, sample=sample, salt=salt)
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
