"""Rollback (releases.services.release_rollback): restores an earlier state as a new event.

By default it undoes the last change no rollback has undone yet, so repeated clicks walk further
back and a rollback never undoes a rollback; ``to_event`` jumps to the state before any earlier
change. Salts come back exactly, so every subject lands where it did."""

from __future__ import annotations

from decimal import Decimal

import pytest

from registry.actors import Actor
from releases import services
from releases.errors import NothingToRollBack, ReleaseConflict, ReleaseStateInvalid
from releases.models import Release, ReleaseEvent
from releases.resolution import resolve
from releases.selectors import served_releases
from releases.state import ReleaseState, release_state

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")


def on(released, service, environment: str = "staging", **kwargs) -> Release:
    return service(
        prompt=released.prompt,
        environment=released.environments[environment],
        actor=MANAGER,
        **kwargs,
    )


def rollback(released, environment: str = "staging", **kwargs) -> Release:
    return on(released, services.release_rollback, environment, **kwargs)


def last_event(release: Release) -> ReleaseEvent:
    return ReleaseEvent.objects.filter(release=release).latest("id")


def canary_weight(release: Release) -> int | None:
    canary = release_state(release).canary
    return canary.weight if canary else None


@pytest.fixture
def ramped(released) -> dict[int, ReleaseEvent]:
    """A canary of v3 in staging ramped 5 % -> 25 % -> 50 %; the events by percent."""
    ramp = {}
    release = on(released, services.release_canary_start, version=3, percent=Decimal(5))
    ramp[5] = last_event(release)
    for percent in (25, 50):
        release = on(released, services.release_canary_set_percent, percent=Decimal(percent))
        ramp[percent] = last_event(release)
    return ramp


def test_repeated_rollbacks_walk_back_through_the_ramp(released, ramped):
    release = rollback(released, reason="Error rate up.")
    assert (release_state(release).stable, canary_weight(release)) == (2, 2500)
    assert last_event(release).restores == ramped[50]

    release = rollback(released)
    assert canary_weight(release) == 500
    assert last_event(release).restores == ramped[25]

    release = rollback(released)
    assert (release_state(release).stable, canary_weight(release)) == (2, None)
    assert last_event(release).restores == ramped[5]


def test_a_rollback_is_an_event_with_the_state_before_and_after(released, ramped):
    before = released.release("staging")

    release = rollback(released, reason="Error rate up.")

    event = last_event(release)
    assert event.action == ReleaseEvent.Action.ROLLBACK
    assert event.revision == before.revision + 1 == release.revision
    assert event.reason == "Error rate up."
    assert event.actor_label == "release-manager"
    assert event.before == release_state(before).as_dict()
    assert event.after == ramped[50].before
    # History is never rewritten: every earlier event is still there, unchanged.
    assert ReleaseEvent.objects.get(pk=ramped[50].pk).after == ramped[50].after


def test_a_rollback_never_undoes_a_rollback(released):
    on(released, services.release_deploy, "development", version=1)
    on(released, services.release_canary_start, "development", version=2, percent=Decimal(5))

    release = rollback(released, "development")
    assert release_state(release) == ReleaseState(stable=1)

    # The next click goes further back, to before the deploy, not forward to the canary again.
    release = rollback(released, "development")
    assert release_state(release) == ReleaseState()

    with pytest.raises(NothingToRollBack):
        rollback(released, "development")


def test_a_change_after_a_rollback_is_the_next_one_rolled_back(released, ramped):
    rollback(released)  # 50 -> 25
    on(released, services.release_canary_set_percent, percent=Decimal(10))

    release = rollback(released)

    assert canary_weight(release) == 2500


def test_to_event_jumps_to_the_state_before_any_earlier_change(released, ramped):
    on(released, services.release_canary_promote)

    release = rollback(released, to_event=ramped[5].pk, reason="Back to before the canary.")

    assert release_state(release) == ReleaseState(stable=2)
    assert last_event(release).restores == ramped[5]


def test_after_a_jump_the_default_rollback_continues_below_it(released, ramped):
    rollback(released, to_event=ramped[25].pk)  # back to 5 %; 25 and 50 are undone

    release = rollback(released)

    assert canary_weight(release) is None
    assert last_event(release).restores == ramped[5]


def test_to_event_may_name_a_change_that_was_already_undone(released, ramped):
    rollback(released)  # undoes the 50 % ramp

    release = rollback(released, to_event=ramped[50].pk)

    assert canary_weight(release) == 2500


def test_to_event_of_a_rollback_is_refused(released, ramped):
    undo = last_event(rollback(released))
    before = released.release("staging").revision

    with pytest.raises(ReleaseStateInvalid, match=str(undo.pk)):
        rollback(released, to_event=undo.pk)

    assert released.release("staging").revision == before


def test_to_event_of_another_release_is_refused(released, ramped):
    production_event = last_event(released.release("production"))
    before = released.release("staging").revision

    with pytest.raises(ReleaseStateInvalid):
        rollback(released, to_event=production_event.pk)

    assert released.release("staging").revision == before


def test_to_event_of_no_event_is_refused(released):
    with pytest.raises(ReleaseStateInvalid):
        rollback(released, to_event=10**9)


def test_nothing_to_roll_back_on_an_empty_history(released):
    with pytest.raises(NothingToRollBack):
        rollback(released, "development")

    assert not Release.objects.filter(environment__name="development").exists()


def test_everything_rolled_back_leaves_nothing_to_roll_back(released):
    rollback(released, "production")  # before v1's deploy: nothing released

    with pytest.raises(NothingToRollBack):
        rollback(released, "production")


def test_a_rollback_checks_the_revision_too(released, ramped):
    release = released.release("staging")

    with pytest.raises(ReleaseConflict) as refused:
        rollback(released, expected_revision=release.revision - 1)

    assert refused.value.current_revision == release.revision
    assert canary_weight(released.release("staging")) == 5000


def test_a_rollback_ignores_the_environment_order(released):
    """The way back is always open: production returns to v3 although v3 was never stable in
    staging (it shipped before production started requiring that)."""
    production = released.environments["production"]
    production.requires_previous_stable = False
    production.save(update_fields=["requires_previous_stable"])
    on(released, services.release_deploy, "production", version=3)
    production.requires_previous_stable = True
    production.save(update_fields=["requires_previous_stable"])
    on(released, services.release_deploy, "production", version=2)

    release = rollback(released, "production")

    assert release_state(release).stable == 3


def assignments(released, subjects: list[str]) -> dict[str, str]:
    """Who gets what in staging, through the runtime's own snapshot and resolution."""
    [served] = served_releases(environment="staging", prompt=released.prompt.key)
    return {s: resolve(served, subject=s, locale=None).assignment.label for s in subjects}


def test_a_rollback_restores_salts_exactly_so_everyone_lands_where_they_did(released):
    subjects = [f"user-{i}" for i in range(2000)]
    on(released, services.release_canary_start, version=3, percent=Decimal(20))
    on(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", 1, Decimal(30)), ("brief", 2, Decimal(30))],
    )
    original = released.release("staging")
    served_then = assignments(released, subjects)
    # Start both over: new salts, so many subjects move.
    on(released, services.release_canary_abort)
    on(released, services.release_experiment_stop, winner=None)
    on(released, services.release_canary_start, version=3, percent=Decimal(20))
    on(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", 1, Decimal(30)), ("brief", 2, Decimal(30))],
    )
    assert assignments(released, subjects) != served_then

    for _ in range(4):
        release = rollback(released)

    assert release.canary_salt == original.canary_salt
    assert release.experiment_salt == original.experiment_salt
    assert release_state(release) == release_state(original)
    assert assignments(released, subjects) == served_then


# --- shadow budgets ------------------------------------------------------------------------------


def shadow_on(released, budget: int | None) -> Release:
    return on(
        released,
        services.release_shadow_start,
        versions=[3],
        sample_percent=Decimal(10),
        budget_per_hour=budget,
    )


def test_rolling_back_a_budget_change_restores_the_budget_and_the_same_sample(released):
    first = release_state(shadow_on(released, 120)).shadow
    shadow_on(released, 30)

    release = rollback(released)

    assert release_state(release).shadow == first
    release.refresh_from_db()
    assert release.shadow_budget_per_hour == 120
    [served] = served_releases(environment="staging", prompt=released.prompt.key)
    assert served.state.shadow == first  # what the runtime cache serves carries it too


def legacy_event(release: Release, *, before: dict, action: str) -> ReleaseEvent:
    """An event as stored before shadow budgets existed: its snapshots have no budget key.

    Events are append-only, so it is inserted as the release's next change, the way the service
    wrote it then (revision bumped on the row in the same step)."""
    revision = release.revision + 1
    event = ReleaseEvent.objects.create(
        release=release,
        action=action,
        revision=revision,
        actor_label="release-manager",
        before=before,
        after={**before, "shadow": None},
    )
    Release.objects.filter(pk=release.pk).update(revision=revision)
    return event


def test_a_snapshot_from_before_budgets_still_rolls_back(released):
    release = shadow_on(released, 120)
    old_state = {
        "schema_version": 1,
        "stable": 2,
        "canary": None,
        "experiment": None,
        "shadow": {"versions": [3], "sample": 500, "salt": "legacy-shadow-salt"},
    }
    event = legacy_event(release, before=old_state, action=ReleaseEvent.Action.SHADOW_STOP)

    release = rollback(released, to_event=event.pk, reason="Back to the old shadow.")

    shadow = release_state(release).shadow
    assert (shadow.versions, shadow.sample, shadow.salt) == ((3,), 500, "legacy-shadow-salt")
    assert shadow.budget_per_hour is None  # the server default, as it ran then
    release.refresh_from_db()
    assert release.shadow_budget_per_hour is None
    after = last_event(release).after
    assert after["shadow"]["budget_per_hour"] is None
    assert after["schema_version"] == 1
    # The restored state serves: every subject of the sample gets version 3 as a shadow.
    [served] = served_releases(environment="staging", prompt=released.prompt.key)
    sampled = [resolve(served, subject=f"user-{i}", locale=None).shadow for i in range(2000)]
    assert {s for s in sampled if s} == {(3,)}
    assert 0 < sum(1 for s in sampled if s) < 2000
