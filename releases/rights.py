"""Who may change releases in an environment: the one object-level check (decision 0047).

Three kinds of actor reach a release change (``registry.actors.Actor``):

- a person (``user_id``): a superuser always may. Anyone else needs the release permission for
  the verb (``releases.deploy_release`` for every verb but rollback, ``releases.rollback_release``
  for rollback; the "Release managers" group has both) and, where the environment names groups
  or users (``Environment.release_groups``, ``release_users``), to be one of them. The lists
  narrow who may; they never grant a permission.
- an API key (``Actor.environments`` set): only in the environments the key is limited to, as its
  reads are. The lists name people, not keys.
- the system (the canary analysis's looks, management commands): always; whoever set it going
  was checked when they did.

``ReleaseChange.execute`` calls ``release_change_check`` before anything else, so every verb goes
through here, from the API, the admin or code alike; the admin asks ``user_release_rights`` to
offer only what the user may do, and ``who_may_change`` to say who may.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from registry.actors import Actor

from .errors import ReleaseChangeForbidden
from .models import Environment, ReleaseEvent

logger = logging.getLogger(__name__)

DEPLOY_PERMISSION = "releases.deploy_release"
ROLLBACK_PERMISSION = "releases.rollback_release"
NO_DEPLOY = (
    "{name} may not change releases: that takes the deploy_release permission (the Release "
    "managers group has it)."
)
NO_ROLLBACK = (
    "{name} may not roll releases back: that takes the rollback_release permission (the Release "
    "managers group has it)."
)
NO_ACCOUNT = "{name} has no active account; only an active account may change releases."
KEY_LIMITED = "The key is limited to {limits}; it may not change releases in {environment}."


@dataclass(frozen=True, slots=True)
class ReleaseRights:
    """What an actor may do to the releases of one environment: each refusal is a sentence a
    person can act on, '' where the actor may."""

    environment: str
    deploy_refusal: str = ""  # every verb but rollback: deploys, canaries, experiments, shadows
    rollback_refusal: str = ""

    @property
    def deploy(self) -> bool:
        return not self.deploy_refusal

    @property
    def rollback(self) -> bool:
        return not self.rollback_refusal

    def refusal(self, action: ReleaseEvent.Action | str) -> str:
        """Why the actor may not take ``action`` here, or ''."""
        if action == ReleaseEvent.Action.ROLLBACK:
            return self.rollback_refusal
        return self.deploy_refusal


def either(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True, slots=True)
class Releasers:
    """The people an environment names as the ones who may change its releases."""

    environment: str
    groups: tuple[str, ...]
    users: tuple[str, ...]

    @property
    def limited(self) -> bool:
        return bool(self.groups or self.users)

    def sentence(self) -> str:
        """Who may change releases here, as the board and a refusal say it."""
        if not self.limited:
            return (
                f"Everyone with the release permissions may change releases in {self.environment}."
            )
        who = []
        if self.groups:
            who.append(f"members of {either(list(self.groups))}")
        if self.users:
            who.append(either(list(self.users)))
        # "Only members of Production releasers, or alice, may …": the commas keep the people
        # apart from the last group's name.
        rest = "".join(f", or {names}," for names in who[1:])
        return f"Only {who[0]}{rest} may change releases in {self.environment}."


def environment_releasers(environment: Environment) -> Releasers:
    """The groups and users ``environment`` names (two small queries, or none if prefetched)."""
    return Releasers(
        environment=environment.name,
        groups=tuple(sorted(g.name for g in environment.release_groups.all())),
        users=tuple(sorted(u.get_username() for u in environment.release_users.all())),
    )


def who_may_change(environment: Environment) -> str:
    """Who may change releases in ``environment``, for a page to show; superusers always may."""
    return environment_releasers(environment).sentence()


def user_release_rights(*, user: Any, environment: Environment) -> ReleaseRights:
    """What ``user`` (a ``User``; the admin's ``request.user``) may do in ``environment``."""
    name = user.get_username()
    if not user.is_active:
        refusal = NO_ACCOUNT.format(name=name)
        return ReleaseRights(environment.name, refusal, refusal)
    if user.is_superuser:
        return ReleaseRights(environment.name)
    deploy = "" if user.has_perm(DEPLOY_PERMISSION) else NO_DEPLOY.format(name=name)
    rollback = "" if user.has_perm(ROLLBACK_PERMISSION) else NO_ROLLBACK.format(name=name)
    releasers = environment_releasers(environment)
    if releasers.limited and not listed(user, releasers):
        # A missing permission is the first thing to fix: being listed would not be enough.
        deploy, rollback = deploy or releasers.sentence(), rollback or releasers.sentence()
    return ReleaseRights(environment.name, deploy, rollback)


def listed(user: Any, releasers: Releasers) -> bool:
    return user.get_username() in releasers.users or bool(group_names(user) & set(releasers.groups))


def group_names(user: Any) -> frozenset[str]:
    """The user's groups, read once per user object: a page asks for every environment it
    shows with the same ``request.user`` (as Django caches permissions on it)."""
    names = getattr(user, "_release_group_names", None)
    if names is None:
        names = frozenset(user.groups.values_list("name", flat=True))
        user._release_group_names = names
    return names


def release_rights(*, actor: Actor, environment: Environment) -> ReleaseRights:
    """What ``actor`` may do in ``environment``: a person by their account, a key by its
    environment limits, the system always; a key a person owns by both."""
    if actor.environments and environment.name not in actor.environments:
        refusal = KEY_LIMITED.format(
            limits=", ".join(actor.environments), environment=environment.name
        )
        return ReleaseRights(environment.name, refusal, refusal)
    if actor.user_id is not None:
        user = get_user_model().objects.filter(pk=actor.user_id).first()
        if user is None:  # deleted since the actor was made
            refusal = NO_ACCOUNT.format(name=actor.label)
            return ReleaseRights(environment.name, refusal, refusal)
        return user_release_rights(user=user, environment=environment)
    return ReleaseRights(environment.name)


def release_change_check(
    *, actor: Actor, environment: Environment, action: ReleaseEvent.Action | str
) -> None:
    """Refuses (``ReleaseChangeForbidden``) an actor who may not take ``action`` in
    ``environment``. Nothing is changed or recorded as an event: a refusal has no revision to
    write, so the log line below is its trace."""
    refusal = release_rights(actor=actor, environment=environment).refusal(action)
    if refusal:
        logger.warning(
            "Release change refused: actor=%s environment=%s action=%s",
            actor.label,
            environment.name,
            action,
        )
        raise ReleaseChangeForbidden(refusal, environment=environment.name)
