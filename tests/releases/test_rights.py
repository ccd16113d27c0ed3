"""Who may change releases in an environment (releases.rights): every persona against every verb,
through the services, which every door (the API, the admin, code) goes through.

Staging names who may change its releases: the group "Staging releasers" and the user nora.
Personas (each with what it may do in staging):
- ``gina``: a release manager in "Staging releasers": may.
- ``nora``: a release manager named by staging: may.
- ``omar``: a release manager, neither named nor in the group: may not; told who may.
- ``lena``: in "Staging releasers" but no release manager: may not; told the permission she lacks.
- ``root``: a superuser in no group: may, always.
- ``prod-bot``: a ``releases:write`` key limited to production: may not.
- ``staging-bot``: a ``releases:write`` key limited to staging: may.
Production names nobody: every release manager may change it, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group

from registry.actors import Actor
from releases import services
from releases.errors import ReleaseChangeForbidden
from releases.models import Release, ReleaseEvent
from releases.rights import release_rights, who_may_change
from releases.state import release_state
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor(label="release-manager")  # sets the scene: a system actor, never refused
WHO = "Only members of Staging releasers, or nora, may change releases in staging."
NO_DEPLOY = (
    "lena may not change releases: that takes the deploy_release permission (the Release "
    "managers group has it)."
)
NO_ROLLBACK = (
    "lena may not roll releases back: that takes the rollback_release permission (the Release "
    "managers group has it)."
)
KEY_ELSEWHERE = "The key is limited to production; it may not change releases in staging."


def on(released, service: Callable[..., Release], actor: Actor, **kwargs: Any) -> Release:
    return service(
        prompt=released.prompt, environment=released.environments["staging"], actor=actor, **kwargs
    )


def canary(released) -> None:
    on(released, services.release_canary_start, SYSTEM, version=3, percent=Decimal(10))


def experiment(released) -> None:
    on(
        released,
        services.release_experiment_start,
        SYSTEM,
        name="tone",
        variants=[("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))],
    )


def shadow(released) -> None:
    on(released, services.release_shadow_start, SYSTEM, versions=[3], sample_percent=Decimal(5))


def nothing(released) -> None:
    pass


# Every verb: the state it needs, its service with arguments that work, and the event it writes.
VERBS: dict[str, tuple[Callable[[Any], None], Callable[..., Release], dict[str, Any]]] = {
    "deploy": (nothing, services.release_deploy, {"version": 3}),
    "canary_start": (
        nothing,
        services.release_canary_start,
        {"version": 3, "percent": Decimal(10)},
    ),
    "canary_percent": (canary, services.release_canary_set_percent, {"percent": Decimal(25)}),
    "canary_promote": (canary, services.release_canary_promote, {}),
    "canary_abort": (canary, services.release_canary_abort, {}),
    "experiment_start": (
        nothing,
        services.release_experiment_start,
        {"name": "tone", "variants": [("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))]},
    ),
    "experiment_stop": (experiment, services.release_experiment_stop, {"winner": "brief"}),
    "shadow_start": (
        nothing,
        services.release_shadow_start,
        {"versions": [3], "sample_percent": Decimal(5)},
    ),
    "shadow_stop": (shadow, services.release_shadow_stop, {}),
    "rollback": (nothing, services.release_rollback, {}),
}


@pytest.fixture
def staging_limited(released):
    """Staging names "Staging releasers" and nora; production names nobody."""
    managers = Group.objects.get(name="Release managers")
    releasers = Group.objects.create(name="Staging releasers")

    def person(username: str, *groups: Group, **flags: Any):
        user = UserFactory(username=username, is_staff=True, **flags)
        user.groups.add(*groups)
        return user

    people = {
        "gina": person("gina", managers, releasers),
        "nora": person("nora", managers),
        "omar": person("omar", managers),
        "lena": person("lena", releasers),
        "root": person("root", is_superuser=True),
    }
    staging = released.environments["staging"]
    staging.release_groups.add(releasers)
    staging.release_users.add(people["nora"])
    return people


def persona(name: str, people: dict) -> Actor:
    if name == "prod-bot":
        return Actor.for_api_key(name="prod-bot", key_id=1, environments=("production",))
    if name == "staging-bot":
        return Actor.for_api_key(name="staging-bot", key_id=2, environments=("staging",))
    return Actor.for_user(people[name])


def refusal(name: str, verb: str) -> str:
    """What each persona that may not is told, '' for those who may."""
    return {
        "omar": WHO,
        "lena": NO_ROLLBACK if verb == "rollback" else NO_DEPLOY,
        "prod-bot": KEY_ELSEWHERE,
    }.get(name, "")


def snapshot(released) -> tuple[int, dict[str, Any], list[int]]:
    """What must not move when a change is refused: revision, state and the event log."""
    release = released.release("staging")
    return (
        release.revision,
        release_state(release).as_dict(),
        list(release.events.values_list("id", flat=True)),
    )


PERSONAS = ["gina", "nora", "omar", "lena", "root", "prod-bot", "staging-bot"]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("name", PERSONAS)
def test_each_persona_may_or_may_not_use_each_verb(released, staging_limited, caplog, name, verb):
    setup, service, arguments = VERBS[verb]
    setup(released)
    actor = persona(name, staging_limited)
    before = snapshot(released)
    expected = refusal(name, verb)

    if expected:
        with (
            caplog.at_level(logging.WARNING, logger="releases.rights"),
            pytest.raises(ReleaseChangeForbidden) as refused,
        ):
            on(released, service, actor, reason="Trying.", **arguments)
        assert refused.value.message == expected
        assert refused.value.environment == "staging"
        # A refusal changes nothing and writes no event; the log line is its trace.
        assert snapshot(released) == before
        assert f"actor={actor.label} environment=staging action={verb}" in caplog.text
    else:
        release = on(released, service, actor, reason="Ticket 42.", **arguments)
        assert release.revision == before[0] + 1
        event = release.events.latest("id")
        assert (event.action, event.actor_label, event.reason) == (verb, actor.label, "Ticket 42.")
        assert event.actor_id == actor.user_id


def test_an_environment_that_names_nobody_keeps_the_release_managers_rule(
    released, staging_limited
):
    """Production names nobody: omar, a release manager, may; lena, who is not one, may not."""
    omar, lena = (Actor.for_user(staging_limited[n]) for n in ("omar", "lena"))
    production = released.environments["production"]

    release = services.release_rollback(prompt=released.prompt, environment=production, actor=omar)

    assert release.events.latest("id").actor_label == "omar"
    with pytest.raises(ReleaseChangeForbidden, match="lena may not change releases"):
        services.release_deploy(
            prompt=released.prompt, environment=production, version=1, actor=lena
        )


def test_the_audit_log_tells_who_was_refused_nothing_and_who_changed_what(
    released, staging_limited
):
    omar, nora = (Actor.for_user(staging_limited[n]) for n in ("omar", "nora"))
    ids = list(released.release("staging").events.values_list("id", flat=True))

    with pytest.raises(ReleaseChangeForbidden):
        on(released, services.release_deploy, omar, version=3, reason="Mine.")
    on(released, services.release_deploy, nora, version=3, reason="Hers.")

    new = ReleaseEvent.objects.filter(release__environment__name="staging").exclude(id__in=ids)
    assert [(e.actor_label, e.reason, e.after["stable"]) for e in new] == [("nora", "Hers.", 3)]


def test_a_refusal_comes_before_any_other_problem_with_the_change(released, staging_limited):
    """Someone who may not change staging learns that, not that version 99 does not exist."""
    omar = Actor.for_user(staging_limited["omar"])

    with pytest.raises(ReleaseChangeForbidden, match="Only members of Staging releasers"):
        on(released, services.release_deploy, omar, version=99)


def test_an_inactive_or_deleted_account_may_not_change_releases(released, staging_limited):
    nora = staging_limited["nora"]
    actor = Actor.for_user(nora)
    nora.is_active = False
    nora.save()

    with pytest.raises(ReleaseChangeForbidden, match="nora has no active account"):
        on(released, services.release_deploy, actor, version=3)
    nora.delete()
    with pytest.raises(ReleaseChangeForbidden, match="nora has no active account"):
        on(released, services.release_deploy, actor, version=3)


def test_a_key_with_no_environment_limit_is_not_named_by_the_lists(released, staging_limited):
    """The lists name people; a key is limited by its own environments (decision 0047)."""
    release = on(
        released,
        services.release_deploy,
        Actor.for_api_key(name="release-bot", key_id=3),
        version=3,
    )

    assert release_state(release).stable == 3


def test_the_canary_analysis_acts_as_the_system_in_a_limited_environment(released, staging_limited):
    """The analysis's looks ramp, promote and abort as ``canary-analysis``: never refused."""
    from evaluations.canary.services import SYSTEM as ANALYSIS

    canary(released)
    release = on(released, services.release_canary_promote, ANALYSIS)

    assert release.events.latest("id").actor_label == "canary-analysis"


def test_steering_a_canary_analysis_takes_the_same_right(released, staging_limited):
    """Attaching an analysis hands the canary to it: someone left out of staging may not."""
    from evaluations.canary.services import canary_analysis_attach

    canary(released)
    before = snapshot(released)

    with pytest.raises(ReleaseChangeForbidden, match="Only members of Staging releasers"):
        canary_analysis_attach(
            prompt=released.prompt,
            environment=released.environments["staging"],
            policy={"steps": [25, 50]},
            actor=Actor.for_user(staging_limited["omar"]),
        )
    assert snapshot(released) == before


# --- the sentences ------------------------------------------------------------------------------


def test_who_may_change_says_who_or_that_the_release_managers_may(released, staging_limited):
    assert who_may_change(released.environments["staging"]) == WHO
    assert who_may_change(released.environments["production"]) == (
        "Everyone with the release permissions may change releases in production."
    )


@pytest.mark.parametrize(
    ("groups", "users", "sentence"),
    [
        (["Oncall"], [], "Only members of Oncall may change releases in staging."),
        ([], ["bob", "ann"], "Only ann or bob may change releases in staging."),
        (
            ["B team", "A team", "C team"],
            ["zoe"],
            "Only members of A team, B team or C team, or zoe, may change releases in staging.",
        ),
    ],
)
def test_who_may_change_names_groups_then_people(released, groups, users, sentence):
    staging = released.environments["staging"]
    staging.release_groups.add(*(Group.objects.create(name=g) for g in groups))
    staging.release_users.add(*(UserFactory(username=u) for u in users))

    assert who_may_change(staging) == sentence


def test_rights_tell_deploy_and_rollback_apart(released):
    """A person with the rollback permission alone may roll back, and is told why not more."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="ron")
    user.user_permissions.add(Permission.objects.get(codename="rollback_release"))

    rights = release_rights(
        actor=Actor.for_user(user), environment=released.environments["staging"]
    )

    assert (rights.deploy, rights.rollback) == (False, True)
    assert rights.refusal(ReleaseEvent.Action.CANARY_ABORT).startswith("ron may not change")
    assert rights.refusal(ReleaseEvent.Action.ROLLBACK) == ""
