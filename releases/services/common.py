"""What every release change shares: percent parsing, salts, the state <-> row mapping, the row
lock and revision check, version and promotion checks, and recording the event (see the package
docstring for the steps)."""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from functools import partial

from django.db import IntegrityError, transaction

from registry.actors import Actor
from registry.errors import Problem, VersionNotFound
from registry.models import Prompt, PromptVersion

from ..cache import release_changed
from ..errors import (
    PromotionBlocked,
    ReleaseConflict,
    ReleaseInvalid,
    VersionNotReleasable,
    percent_problem,
)
from ..gates import promotion_checks, verdicts_of
from ..models import Environment, Release, ReleaseEvent
from ..state import ReleaseState, release_state


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


STATE_FIELDS = [
    "stable_version",
    "canary_version",
    "canary_weight",
    "canary_salt",
    "experiment_name",
    "experiment_variants",
    "experiment_salt",
    "experiment_planned_calls",
    "shadow_versions",
    "shadow_sample",
    "shadow_salt",
    "shadow_budget_per_hour",
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
    release.experiment_planned_calls = state.experiment.planned_calls if state.experiment else None
    release.shadow_versions = list(state.shadow.versions) if state.shadow else []
    release.shadow_sample = state.shadow.sample if state.shadow else 0
    release.shadow_salt = state.shadow.salt if state.shadow else ""
    release.shadow_budget_per_hour = state.shadow.budget_per_hour if state.shadow else None


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


def environment_order_refusal(*, prompt: Prompt, environment: Environment, number: int) -> str:
    """Why the environment order refuses ``number`` in ``environment``, or '' when it does not
    (the environment does not require it, or the version has been stable in the one before)."""
    if not environment.requires_previous_stable:
        return ""
    previous = (
        Environment.objects.filter(position__lt=environment.position).order_by("-position").first()
    )
    if (
        previous is None
        or ReleaseEvent.objects.filter(
            release__prompt=prompt, release__environment=previous, after__stable=number
        ).exists()
    ):
        return ""
    return (
        f"{environment.name} takes only versions that have been stable in {previous.name}; "
        f"version {number} has not."
    )


def _ensure_promotable(
    release: Release, number: int, *, override: bool = False, overridden: list[dict] | None = None
) -> None:
    """The environment order and the registered promotion gates (not consulted by rollback).

    Every failing gate is collected. Without ``override`` the first refuses the change (and the
    problem lists them all); with it they are appended to ``overridden`` for the event to record.
    """
    failed: list[dict] = []
    environment = release.environment
    order = environment_order_refusal(prompt=release.prompt, environment=environment, number=number)
    if order:
        failed.append({"gate": "environment-order", "detail": order})
    for check in promotion_checks():
        # A check may stand for several gates (evaluations: every gate of the environment).
        answer = check(prompt_id=release.prompt_id, environment=environment.name, version=number)
        for verdict in verdicts_of(answer):
            if not verdict.passed:
                failed.append(
                    {
                        "gate": verdict.gate,
                        "detail": verdict.detail or f"The {verdict.gate} gate failed.",
                    }
                )
    if not failed:
        return
    if not override:
        first = failed[0]
        raise PromotionBlocked(first["detail"], gate=first["gate"], failed=tuple(failed))
    if overridden is not None:
        overridden.extend({**f, "version": number} for f in failed)


def override_check(*, override_gates: bool, reason: str) -> None:
    """An override is audited by its reason: refused without one."""
    if override_gates and not reason.strip():
        raise ReleaseInvalid(
            [
                Problem(
                    "reason_required",
                    "Say why the gates are overridden: the reason is kept in the release history.",
                    "/reason",
                )
            ]
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
    overridden_gates: list[dict] | None = None,
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
        overridden_gates=overridden_gates or None,
    )
    _publish_on_commit(release)
    return event


def _publish_on_commit(release: Release) -> None:

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
    overridden_gates: list[dict] | None = None,
) -> Release:
    """``overridden_gates``: the list ``decide`` fills through ``_ensure_promotable``."""
    release = _locked_release(prompt=prompt, environment=environment)
    ensure_revision_matches(release, expected_revision)
    before = release_state(release)
    after = decide(release, before)
    _record(
        release=release,
        action=action,
        actor=actor,
        reason=reason,
        before=before,
        after=after,
        overridden_gates=overridden_gates,
    )
    return release
