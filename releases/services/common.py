"""What every release change shares: the ``ReleaseChange`` each verb is, the ``Decision`` it
returns, and the public helpers the verbs use (percent parsing, salts, the row lock and revision
check, version and promotion checks, recording the event). See the package docstring for the
steps one change takes."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import ClassVar

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
from ..models import ChangeRequest, Environment, Release, ReleaseEvent
from ..rights import release_change_check
from ..state import ReleaseState, release_state
from .announce import gate_refusal_announce, release_change_announce
from .review import change_request_lock_approved, change_request_record_applied, review_hold

# --- what a change decides ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateFailure:
    """A promotion gate (or the environment order) that refused ``version``."""

    gate: str
    detail: str
    version: int

    def as_dict(self) -> dict[str, object]:
        """As the event's ``overridden_gates`` keeps it."""
        return {"gate": self.gate, "detail": self.detail, "version": self.version}


@dataclass(frozen=True, slots=True)
class Decision:
    """What a change decided about the release as it is: the state it leaves, the failing gates
    it was released past (an override; empty without one), and, for a rollback, the event whose
    ``before`` it restores."""

    target: ReleaseState
    overridden: tuple[GateFailure, ...] = ()
    restores: ReleaseEvent | None = None


class ReleaseChange(ABC):
    """One release verb with its inputs, as Wagtail's actions are: built from the caller's values,
    then ``execute``d on a prompt in an environment. The admin builds one from its form to preview
    it and to apply it; the API and code call the ``release_<verb>`` function beside each class.

    A verb writes ``check`` (its own values, before any lock), ``decide`` (under the lock: the
    target state, the checks that need the database, the gates) and ``preview`` (the target for a
    confirmation page, before anything is applied)."""

    action: ClassVar[ReleaseEvent.Action]  # the event it writes
    # Puts a version in front of traffic: the promotion gates are consulted (``gated_versions``).
    gated: ClassVar[bool] = False
    # Waits for review in an environment that requires it (``review.review_hold``); the way back
    # (rollback, canary abort, stopping shadows) never does.
    held: ClassVar[bool] = True

    def check(self, *, reason: str) -> None:
        """Refuses the change's own values (``ReleaseInvalid`` naming every problem); called
        before the lock, and by the admin's preview. Nothing to check by default."""
        return None

    @abstractmethod
    def decide(self, release: Release, state: ReleaseState) -> Decision:
        """The decision about the locked ``release`` in ``state``, or the domain error that
        refuses it (state rules, versions, gates)."""

    @abstractmethod
    def preview(self, release: Release | None, state: ReleaseState) -> Decision:
        """``decide`` as a confirmation page shows it: a new draw's salt is a placeholder
        (``new_draw``), no gate is consulted (the page lists them), and the release may not
        exist yet. The service stays the judge on apply."""

    def confirmed(self, decision: Decision) -> ReleaseChange:
        """The change to apply once a person confirmed ``decision`` (the page's preview): itself,
        unless the preview resolved a default the service would look up again (rollback)."""
        return self

    def gated_versions(self, before: ReleaseState, after: ReleaseState) -> tuple[int, ...]:
        """The versions whose promotion gates the change meets, going from ``before`` to
        ``after``; none for a change that puts no new version in front of traffic."""
        return ()

    def execute(
        self,
        *,
        prompt: Prompt,
        environment: Environment,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
        change_request: ChangeRequest | None = None,
    ) -> Release:
        """The change in one transaction: check the actor's rights, hold a change that needs
        review, check the values, lock the row, compare the revision inside the lock, decide, save
        and record the event; every web node hears after commit. A promotion gate's refusal is
        announced once the change's transaction has rolled back (``gate.refused``), then raised.

        In an environment that requires review, a held change is refused (``ReviewRequired``)
        unless it applies ``change_request``, approved (``change_request_apply`` passes it; it
        is re-checked under the lock and marked applied by this event)."""
        try:
            with transaction.atomic():
                # First: someone who may not change this environment learns that, not what
                # else is wrong with a change they may not make (releases.rights).
                release_change_check(actor=actor, environment=environment, action=self.action)
                recorded_reason = review_hold(
                    held=self.held,
                    action=str(self.action),
                    environment=environment,
                    actor=actor,
                    reason=reason,
                    change_request=change_request,
                )
                self.check(reason=reason)
                release = release_lock(prompt=prompt, environment=environment)
                if change_request is not None:
                    change_request = change_request_lock_approved(change_request)
                ensure_revision_matches(release, expected_revision)
                before = release_state(release)
                decision = self.decide(release, before)
                event = change_record(
                    release=release,
                    action=self.action,
                    actor=actor,
                    reason=recorded_reason,
                    before=before,
                    decision=decision,
                )
                if change_request is not None:
                    change_request_record_applied(change_request, event=event, actor=actor)
                return release
        except PromotionBlocked as refusal:
            gate_refusal_announce(
                refusal,
                prompt=prompt,
                environment=environment,
                action=self.action,
                actor=actor,
                reason=reason,
            )
            raise


class PromotingChange(ReleaseChange):
    """A change that may put versions in front of traffic: the environment order and the
    promotion gates are asked about each one, and a failure refuses the change unless
    ``override_gates`` (with a reason, kept in the event with every gate overridden; 0012)."""

    gated = True
    override_gates: bool

    def check(self, *, reason: str) -> None:
        override_reason_check(override_gates=self.override_gates, reason=reason)

    def gates(self, release: Release, numbers: tuple[int, ...]) -> tuple[GateFailure, ...]:
        """The gate failures of ``numbers`` this change overrides, or ``PromotionBlocked``."""
        return tuple(
            failure
            for number in numbers
            for failure in promotion_gates_check(release, number, override=self.override_gates)
        )


# --- values -------------------------------------------------------------------------------------


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


def override_reason_check(*, override_gates: bool, reason: str) -> None:
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


SALT_MAX_CHARS = Release._meta.get_field("canary_salt").max_length
NEW_DRAW = "(new {} draw)"  # a preview's salt: never a real one, "<prompt>/<env>/<purpose>/..."


def new_salt(release: Release, purpose: str, detail: str) -> str:
    """A salt for a new draw of subjects (canary, experiment, shadow).

    Readable for "why did user X get version 7?", and unique per start: a random suffix means
    restarting the same canary re-draws its subjects instead of silently reusing the old ones.
    The readable part is cut to fit the column (a 150-character key and a 100-character
    experiment name would not); the random suffix alone keeps salts apart."""
    suffix = "/" + secrets.token_hex(4)
    readable = f"{release.prompt.key}/{release.environment.name}/{purpose}/{detail}"
    return readable[: SALT_MAX_CHARS - len(suffix)] + suffix


def new_draw(purpose: str) -> str:
    """The placeholder salt a preview shows for a new draw (the real one exists on apply)."""
    return NEW_DRAW.format(purpose)


# --- the row ------------------------------------------------------------------------------------


def release_lock(*, prompt: Prompt, environment: Environment) -> Release:
    """The release row, locked; created on first use (the unique constraint settles a race).
    Lock order: the prompt first, then its release."""
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
    """Call under the lock: a revision compared outside it is stale by the time we write."""
    if expected_revision is not None and expected_revision != release.revision:
        raise ReleaseConflict(current_revision=release.revision)


# --- versions and gates -------------------------------------------------------------------------


def version_releasable(release: Release, number: int) -> PromptVersion:
    """The release's prompt's version ``number``, if it exists and is committed."""
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


def promotion_gates_check(
    release: Release, number: int, *, override: bool
) -> tuple[GateFailure, ...]:
    """The environment order and the registered promotion gates for ``number`` (rollback never
    asks). Every failing gate is collected: without ``override`` they refuse the change
    (``PromotionBlocked``, naming them all); with it they are returned, for the event to keep."""
    failed: list[GateFailure] = []
    environment = release.environment
    order = environment_order_refusal(prompt=release.prompt, environment=environment, number=number)
    if order:
        failed.append(GateFailure("environment-order", order, number))
    for check in promotion_checks():
        # A check may stand for several gates (evaluations: every gate of the environment).
        answer = check(prompt_id=release.prompt_id, environment=environment.name, version=number)
        for verdict in verdicts_of(answer):
            if not verdict.passed:
                detail = verdict.detail or f"The {verdict.gate} gate failed."
                failed.append(GateFailure(verdict.gate, detail, number))
    if failed and not override:
        raise PromotionBlocked(
            failed[0].detail,
            gate=failed[0].gate,
            failed=tuple({"gate": f.gate, "detail": f.detail} for f in failed),
            version=number,
        )
    return tuple(failed)


# --- recording ----------------------------------------------------------------------------------

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


def state_apply(release: Release, state: ReleaseState) -> None:
    """Writes ``state`` onto the row's fields (``STATE_FIELDS``), unsaved."""
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


def change_record(
    *,
    release: Release,
    action: ReleaseEvent.Action,
    actor: Actor,
    reason: str,
    before: ReleaseState,
    decision: Decision,
) -> ReleaseEvent:
    """Saves the decided state on the locked row, bumps the revision, writes the event with the
    full state before and after (and the gates overridden), and tells every web node after
    commit (STYLE R3, R5, R6)."""
    state_apply(release, decision.target)
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
        after=decision.target.as_dict(),
        restores=decision.restores,
        overridden_gates=[f.as_dict() for f in decision.overridden] or None,
    )
    release_change_announce(release=release, event=event)
    transaction.on_commit(
        partial(
            release_changed,
            environment=release.environment.name,
            prompt=release.prompt.key,
            revision=release.revision,
        )
    )
    return event
