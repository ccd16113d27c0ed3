"""The release services (releases.services): every change locks the release, checks the revision,
refuses what cannot be released, and writes one event with the state before and after."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.test import override_settings

from registry.actors import Actor
from registry.errors import VersionNotFound
from releases import services
from releases.errors import (
    PromotionBlocked,
    ReleaseConflict,
    ReleaseInvalid,
    ReleaseStateInvalid,
    VersionNotReleasable,
)
from releases.gates import GateVerdict, promotion_check_register, promotion_check_unregister
from releases.models import Release, ReleaseEvent
from releases.state import ReleaseState, release_state, shadow_budget
from tests.factories import PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db


def change(released, service: Callable[..., Release], environment: str = "staging", **kwargs):
    """Calls ``service`` on the released prompt in ``environment`` as the release manager."""
    kwargs.setdefault("actor", Actor(label="release-manager"))
    return service(prompt=released.prompt, environment=released.environments[environment], **kwargs)


def events(release: Release) -> list[ReleaseEvent]:
    return list(ReleaseEvent.objects.filter(release=release).order_by("id"))


def snapshot(release: Release) -> tuple[int, dict[str, Any], int]:
    """What must not move when a change is refused: revision, state and the number of events."""
    release.refresh_from_db()
    return release.revision, release_state(release).as_dict(), release.events.count()


def canary_running(released, percent: str = "10", version: int = 3) -> Release:
    return change(
        released, services.release_canary_start, version=version, percent=Decimal(percent)
    )


def experiment_running(released, a: int = 2, b: int = 3) -> Release:
    return change(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", a, Decimal(30)), ("brief", b, Decimal(20))],
    )


# --- happy paths: one event per change, with who, why, before and after ---------------------------


def test_deploy_makes_the_version_stable_and_records_who_why_before_and_after(released):
    user = UserFactory(username="robin")
    user.groups.add(Group.objects.get(name="Release managers"))  # may change releases
    before = released.release("staging")

    release = change(
        released,
        services.release_deploy,
        version=3,
        actor=Actor.for_user(user),
        reason="Fixes the refund tone.",
    )

    assert release.stable_version == released.versions[3]
    assert release.revision == before.revision + 1
    event = events(release)[-1]
    assert event.action == ReleaseEvent.Action.DEPLOY
    assert event.revision == release.revision
    assert event.actor == user
    assert event.actor_label == "robin"
    assert event.reason == "Fixes the refund tone."
    assert event.before == release_state(before).as_dict()
    assert ReleaseState.from_dict(event.before).stable == 2
    assert ReleaseState.from_dict(event.after).stable == 3
    assert event.after == release_state(release).as_dict()
    assert event.restores is None


def test_the_first_change_creates_the_release_at_revision_one(released, manager):
    release = change(released, services.release_deploy, "development", version=1)

    assert release.revision == 1
    [event] = events(release)
    assert event.before == ReleaseState().as_dict()
    assert event.after["stable"] == 1
    assert event.actor is None
    assert event.actor_label == "release-manager"


def test_canary_start_sends_a_share_to_the_version_with_a_salt_of_its_own(released):
    release = canary_running(released, percent="12.5")

    state = release_state(release)
    assert state.stable == 2
    assert state.canary.version == 3
    assert state.canary.weight == 1250
    assert state.canary.salt.startswith("support.refund-reply/staging/canary/3/")
    event = events(release)[-1]
    assert event.action == ReleaseEvent.Action.CANARY_START
    assert event.before["canary"] is None
    assert event.after["canary"] == {"version": 3, "weight": 1250, "salt": state.canary.salt}


def test_a_percent_change_ramps_the_canary_and_keeps_its_salt(released):
    salt = release_state(canary_running(released, percent="5")).canary.salt

    release = change(released, services.release_canary_set_percent, percent=Decimal("25"))

    state = release_state(release)
    assert (state.canary.weight, state.canary.salt) == (2500, salt)
    event = events(release)[-1]
    assert event.action == ReleaseEvent.Action.CANARY_PERCENT
    assert event.before["canary"]["weight"] == 500
    assert event.after["canary"]["weight"] == 2500


def test_a_new_canary_gets_a_new_salt_even_for_the_same_version(released):
    first = release_state(canary_running(released)).canary.salt
    change(released, services.release_canary_abort)
    second = release_state(canary_running(released)).canary.salt
    change(released, services.release_canary_abort)
    make_version(released.prompt)  # v4
    third = release_state(canary_running(released, version=4)).canary.salt

    assert len({first, second, third}) == 3


def test_promote_makes_the_canary_stable_for_everyone(released):
    canary_running(released)

    release = change(released, services.release_canary_promote, reason="Metrics are fine.")

    state = release_state(release)
    assert (state.stable, state.canary) == (3, None)
    assert events(release)[-1].action == ReleaseEvent.Action.CANARY_PROMOTE


def test_abort_sends_everyone_back_to_stable(released):
    canary_running(released)

    release = change(released, services.release_canary_abort, reason="Complaints.")

    state = release_state(release)
    assert (state.stable, state.canary) == (2, None)
    assert events(release)[-1].action == ReleaseEvent.Action.CANARY_ABORT


def test_an_experiment_splits_named_variants_with_its_own_salt(released):
    release = experiment_running(released)

    experiment = release_state(release).experiment
    assert experiment.name == "tone"
    assert [(v.name, v.version, v.weight) for v in experiment.variants] == [
        ("warm", 2, 3000),
        ("brief", 3, 2000),
    ]
    assert experiment.salt.startswith("support.refund-reply/staging/experiment/tone/")
    assert events(release)[-1].action == ReleaseEvent.Action.EXPERIMENT_START


def test_stopping_an_experiment_with_a_winner_makes_the_winner_stable(released):
    experiment_running(released)

    release = change(released, services.release_experiment_stop, winner="brief")

    state = release_state(release)
    assert (state.stable, state.experiment) == (3, None)
    event = events(release)[-1]
    assert event.action == ReleaseEvent.Action.EXPERIMENT_STOP
    assert event.before["experiment"]["name"] == "tone"


def test_stopping_an_experiment_without_a_winner_keeps_the_stable_version(released):
    experiment_running(released)

    release = change(released, services.release_experiment_stop, winner=None)

    assert (release_state(release).stable, release_state(release).experiment) == (2, None)


def test_a_new_experiment_gets_a_new_salt(released):
    first = release_state(experiment_running(released)).experiment.salt
    change(released, services.release_experiment_stop, winner=None)
    second = release_state(experiment_running(released)).experiment.salt

    assert first != second


def test_a_shadow_runs_versions_on_a_sample_and_stops(released):
    release = change(
        released, services.release_shadow_start, versions=[3], sample_percent=Decimal("5")
    )

    shadow = release_state(release).shadow
    assert (shadow.versions, shadow.sample) == ((3,), 500)
    assert shadow.salt.startswith("support.refund-reply/staging/shadow/3/")
    assert events(release)[-1].action == ReleaseEvent.Action.SHADOW_START

    release = change(released, services.release_shadow_stop)

    assert release_state(release).shadow is None
    assert events(release)[-1].action == ReleaseEvent.Action.SHADOW_STOP


def test_salts_fit_their_column_whatever_the_key_and_experiment_name(environments, manager):
    prompt = PromptFactory(key="k" * 150)
    make_version(prompt)
    make_version(prompt)
    staging = environments["staging"]
    services.release_deploy(prompt=prompt, environment=staging, version=1, actor=manager)

    release = services.release_experiment_start(
        prompt=prompt,
        environment=staging,
        name="n" * 100,
        variants=[("a", 1, Decimal(50)), ("b", 2, Decimal(50))],
        actor=manager,
    )

    release.refresh_from_db()
    assert len(release.experiment_salt) <= Release._meta.get_field("experiment_salt").max_length
    assert release.experiment_salt.startswith("k" * 20)


# --- If-Match: a stale revision changes nothing --------------------------------------------------

# Each service with arguments that would succeed on the state its setup leaves.
SERVICES: dict[str, tuple[Callable[..., Any], Callable[..., Any], dict[str, Any]]] = {
    "deploy": (lambda r: None, services.release_deploy, {"version": 1}),
    "canary start": (
        lambda r: None,
        services.release_canary_start,
        {"version": 3, "percent": Decimal(10)},
    ),
    "canary percent": (canary_running, services.release_canary_set_percent, {"percent": 50}),
    "canary promote": (canary_running, services.release_canary_promote, {}),
    "canary abort": (canary_running, services.release_canary_abort, {}),
    "experiment start": (
        lambda r: None,
        services.release_experiment_start,
        {"name": "tone", "variants": [("a", 2, Decimal(50)), ("b", 3, Decimal(50))]},
    ),
    "experiment stop": (experiment_running, services.release_experiment_stop, {"winner": "warm"}),
    "shadow start": (
        lambda r: None,
        services.release_shadow_start,
        {"versions": [3], "sample_percent": Decimal(10)},
    ),
    "shadow stop": (
        lambda r: change(
            r, services.release_shadow_start, versions=[3], sample_percent=Decimal(10)
        ),
        services.release_shadow_stop,
        {},
    ),
    "rollback": (lambda r: None, services.release_rollback, {}),
}


@pytest.mark.parametrize("name", SERVICES)
def test_each_change_applies_with_the_current_revision(released, name):
    setup, service, kwargs = SERVICES[name]
    setup(released)
    current = released.release("staging").revision

    release = change(released, service, expected_revision=current, **kwargs)

    assert release.revision == current + 1
    assert events(release)[-1].revision == current + 1


@pytest.mark.parametrize("name", SERVICES)
def test_each_change_refuses_a_stale_revision_and_changes_nothing(released, name):
    setup, service, kwargs = SERVICES[name]
    setup(released)
    release = released.release("staging")
    before = snapshot(release)

    with pytest.raises(ReleaseConflict) as refused:
        change(released, service, expected_revision=release.revision - 1, **kwargs)

    assert refused.value.current_revision == release.revision
    assert str(release.revision) in refused.value.message
    assert snapshot(release) == before


# --- what can be released ------------------------------------------------------------------------

VERSION_SERVICES: dict[str, Callable[[Any, int], Release]] = {
    "deploy": lambda r, n: change(r, services.release_deploy, version=n),
    "canary start": lambda r, n: change(
        r, services.release_canary_start, version=n, percent=Decimal(10)
    ),
    "experiment start": lambda r, n: change(
        r,
        services.release_experiment_start,
        name="tone",
        variants=[("a", 1, Decimal(50)), ("b", n, Decimal(50))],
    ),
    "shadow start": lambda r, n: change(
        r, services.release_shadow_start, versions=[n], sample_percent=Decimal(5)
    ),
}


@pytest.mark.parametrize("name", VERSION_SERVICES)
def test_a_draft_is_never_released(released, name):
    draft = make_version(released.prompt, commit=False)
    before = snapshot(released.release("staging"))

    with pytest.raises(VersionNotReleasable) as refused:
        VERSION_SERVICES[name](released, draft.number)

    assert "draft" in refused.value.message
    assert snapshot(released.release("staging")) == before


@pytest.mark.parametrize("name", VERSION_SERVICES)
def test_an_unknown_version_is_refused(released, name):
    before = snapshot(released.release("staging"))

    with pytest.raises(VersionNotFound) as refused:
        VERSION_SERVICES[name](released, 99)

    assert "99" in refused.value.message
    assert snapshot(released.release("staging")) == before


def test_a_version_of_another_prompt_is_unknown_here(released):
    other = PromptFactory()
    for _ in range(5):
        make_version(other)

    with pytest.raises(VersionNotFound):
        change(released, services.release_deploy, version=5)


# --- environment order ---------------------------------------------------------------------------


# Changes that would put v3 (never stable in staging) in front of production's users.
UNSTAGED_IN_PRODUCTION: dict[str, Callable[[Any], Release]] = {
    "deploy": lambda r: change(r, services.release_deploy, "production", version=3),
    "canary start": lambda r: change(
        r, services.release_canary_start, "production", version=3, percent=Decimal(5)
    ),
    "experiment start": lambda r: change(
        r,
        services.release_experiment_start,
        "production",
        name="tone",
        variants=[("a", 1, Decimal(50)), ("b", 3, Decimal(50))],
    ),
}


@pytest.mark.parametrize("name", UNSTAGED_IN_PRODUCTION)
def test_production_refuses_a_version_never_stable_in_staging(released, name):
    production = released.release("production")
    before = snapshot(production)

    with pytest.raises(PromotionBlocked) as refused:
        UNSTAGED_IN_PRODUCTION[name](released)

    assert refused.value.gate == "environment-order"
    assert "staging" in refused.value.message
    assert snapshot(production) == before


def test_production_takes_a_version_once_it_was_stable_in_staging(released):
    change(released, services.release_deploy, version=3)
    change(released, services.release_deploy, version=2)  # staging moved on; v3 *was* stable

    release = change(released, services.release_deploy, "production", version=3)

    assert release_state(release).stable == 3


def test_a_canary_in_staging_does_not_count_as_stable_there(released):
    canary_running(released, percent="100")

    with pytest.raises(PromotionBlocked):
        change(released, services.release_deploy, "production", version=3)


def test_production_may_shadow_a_version_never_stable_in_staging(released):
    """A shadow serves no one, so the environment order does not apply to it."""
    release = change(
        released,
        services.release_shadow_start,
        "production",
        versions=[3],
        sample_percent=Decimal(1),
    )

    assert release_state(release).shadow.versions == (3,)


# --- promotion gates -----------------------------------------------------------------------------


@pytest.fixture
def failing_gate():
    """A registered promotion check that refuses every version, unregistered afterwards."""
    calls: list[dict[str, Any]] = []

    def check(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        calls.append({"prompt_id": prompt_id, "environment": environment, "version": version})
        return GateVerdict(passed=False, gate="eval-suite", detail="Accuracy fell to 71 %.")

    promotion_check_register(check)
    yield calls
    promotion_check_unregister(check)


def test_a_failing_gate_blocks_a_deploy(released, failing_gate):
    before = snapshot(released.release("staging"))

    with pytest.raises(PromotionBlocked) as refused:
        change(released, services.release_deploy, version=3)

    assert refused.value.gate == "eval-suite"
    assert refused.value.message == "Accuracy fell to 71 %."
    assert failing_gate == [
        {"prompt_id": released.prompt.pk, "environment": "staging", "version": 3}
    ]
    assert snapshot(released.release("staging")) == before


def test_a_failing_gate_blocks_a_canary_start(released, failing_gate):
    with pytest.raises(PromotionBlocked) as refused:
        canary_running(released)

    assert refused.value.gate == "eval-suite"


def test_a_failing_gate_never_blocks_a_rollback(released, failing_gate):
    release = change(released, services.release_rollback, reason="Back to v1.")

    assert release_state(release).stable == 1
    assert failing_gate == []


def test_a_failing_gate_blocks_an_experiment_with_a_new_version(released, failing_gate):
    with pytest.raises(PromotionBlocked):
        experiment_running(released)

    assert [call["version"] for call in failing_gate] == [3]  # v2, the stable one, is not asked


def test_a_failing_gate_blocks_promoting_a_canary(released):
    canary_running(released)
    before = snapshot(released.release("staging"))

    def check(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        return GateVerdict(passed=False, gate="canary-analysis", detail="Error rate doubled.")

    promotion_check_register(check)
    try:
        with pytest.raises(PromotionBlocked, match="doubled"):
            change(released, services.release_canary_promote)
        release = change(released, services.release_canary_abort)  # the way back stays open
    finally:
        promotion_check_unregister(check)

    assert before[0] + 1 == release.revision


def test_a_passing_gate_lets_the_change_through(released):
    def check(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        return GateVerdict(passed=True, gate="eval-suite")

    promotion_check_register(check)
    try:
        release = change(released, services.release_deploy, version=3)
    finally:
        promotion_check_unregister(check)

    assert release_state(release).stable == 3


def test_every_failing_gate_is_listed_not_only_the_first(released, failing_gate):
    def second(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        return GateVerdict(passed=False, gate="must-pass", detail="Case refund-1 fails.")

    promotion_check_register(second)
    try:
        with pytest.raises(PromotionBlocked) as refused:
            change(released, services.release_deploy, version=3)
    finally:
        promotion_check_unregister(second)

    assert refused.value.gate == "eval-suite"
    assert list(refused.value.failed) == [
        {"gate": "eval-suite", "detail": "Accuracy fell to 71 %."},
        {"gate": "must-pass", "detail": "Case refund-1 fails."},
    ]


def test_an_override_with_a_reason_releases_past_the_gate_and_the_event_keeps_it(
    released, failing_gate
):
    release = change(
        released,
        services.release_deploy,
        version=3,
        override_gates=True,
        reason="Hotfix for the refund outage; the eval suite is being fixed.",
    )

    assert release_state(release).stable == 3
    event = events(release)[-1]
    assert event.overridden_gates == [
        {"gate": "eval-suite", "detail": "Accuracy fell to 71 %.", "version": 3}
    ]
    assert event.reason.startswith("Hotfix")


def test_an_override_without_a_reason_is_refused_and_changes_nothing(released, failing_gate):
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseInvalid) as refused:
        change(released, services.release_canary_start, version=3, percent=10, override_gates=True)

    [problem] = refused.value.problems
    assert (problem.code, problem.pointer) == ("reason_required", "/reason")
    assert snapshot(released.release("staging")) == before
    assert failing_gate == []  # refused before any gate is asked


def test_an_override_with_nothing_failing_records_no_overridden_gates(released):
    release = change(
        released, services.release_deploy, version=3, override_gates=True, reason="Routine."
    )

    assert events(release)[-1].overridden_gates is None


# --- an experiment's planned sample --------------------------------------------------------------


def test_an_experiment_keeps_its_planned_sample_in_state_and_snapshots(released):
    release = change(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", 2, Decimal(30)), ("brief", 3, Decimal(20))],
        planned_calls=4000,
    )

    assert release_state(release).experiment.planned_calls == 4000
    assert events(release)[-1].after["experiment"]["planned_calls"] == 4000
    stopped = change(released, services.release_experiment_stop, winner=None)
    restored = change(released, services.release_rollback, reason="Keep testing.")
    assert release_state(stopped).experiment is None
    assert release_state(restored).experiment.planned_calls == 4000


@pytest.mark.parametrize("planned", [0, 59, 1_000_000_001, True, 12.5, "4000"])
def test_a_planned_sample_below_30_calls_a_variant_or_not_a_count_is_refused(released, planned):
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseInvalid) as refused:
        change(
            released,
            services.release_experiment_start,
            name="tone",
            variants=[("warm", 2, Decimal(30)), ("brief", 3, Decimal(20))],
            planned_calls=planned,
        )

    assert [p.pointer for p in refused.value.problems] == ["/planned_calls"]
    assert snapshot(released.release("staging")) == before


def test_a_snapshot_from_before_planned_samples_reads_as_unplanned():
    state = ReleaseState.from_dict(
        {
            "schema_version": 1,
            "stable": 2,
            "experiment": {
                "name": "tone",
                "salt": "s",
                "variants": [{"name": "a", "version": 2, "weight": 5000}],
            },
        }
    )

    assert state.experiment.planned_calls is None


# --- percents ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "percent", [-1, Decimal("100.01"), Decimal("12.345"), "abc", "NaN", "Infinity", 12.345]
)
def test_a_percent_outside_0_to_100_or_finer_than_a_hundredth_is_refused(released, percent):
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseInvalid) as refused:
        change(released, services.release_canary_start, version=3, percent=percent)

    [problem] = refused.value.problems
    assert (problem.code, problem.pointer) == ("invalid_percent", "/percent")
    assert snapshot(released.release("staging")) == before


@pytest.mark.parametrize(
    ("percent", "weight"),
    [(0, 0), (100, 10000), (Decimal("12.34"), 1234), ("0.01", 1), (Decimal("99.99"), 9999)],
)
def test_percents_become_basis_points(released, percent, weight):
    release = change(released, services.release_canary_start, version=3, percent=percent)

    assert release_state(release).canary.weight == weight


@pytest.mark.parametrize("percent", [-1, Decimal("100.01"), Decimal("12.345"), "abc"])
def test_a_ramp_to_a_bad_percent_is_refused(released, percent):
    canary_running(released)
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseInvalid):
        change(released, services.release_canary_set_percent, percent=percent)

    assert snapshot(released.release("staging")) == before


def test_a_shadow_sample_outside_0_to_100_is_refused(released):
    with pytest.raises(ReleaseInvalid) as refused:
        change(released, services.release_shadow_start, versions=[3], sample_percent=101)

    assert refused.value.problems[0].pointer == "/sample_percent"


# --- canary rules --------------------------------------------------------------------------------


def test_a_second_canary_is_refused_while_one_runs(released):
    canary_running(released)
    make_version(released.prompt)

    with pytest.raises(ReleaseStateInvalid, match="running"):
        change(released, services.release_canary_start, version=4, percent=Decimal(5))


def test_a_deploy_is_refused_while_a_canary_runs(released):
    canary_running(released)
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseStateInvalid, match="promote or abort"):
        change(released, services.release_deploy, version=1)

    assert snapshot(released.release("staging")) == before


def test_a_canary_needs_a_stable_version_first(released):
    with pytest.raises(ReleaseStateInvalid, match="stable"):
        change(
            released, services.release_canary_start, "development", version=1, percent=Decimal(5)
        )

    assert not Release.objects.filter(environment__name="development").exists()


def test_the_stable_version_cannot_be_its_own_canary(released):
    with pytest.raises(ReleaseStateInvalid):
        change(released, services.release_canary_start, version=2, percent=Decimal(5))


def test_deploying_the_stable_version_again_is_refused(released):
    with pytest.raises(ReleaseStateInvalid, match="stable already"):
        change(released, services.release_deploy, version=2)


@pytest.mark.parametrize(
    "service",
    [
        services.release_canary_promote,
        services.release_canary_abort,
        lambda **kw: services.release_canary_set_percent(percent=Decimal(5), **kw),
    ],
    ids=["promote", "abort", "percent"],
)
def test_canary_changes_need_a_running_canary(released, service):
    with pytest.raises(ReleaseStateInvalid, match="No canary"):
        change(released, service)


def test_ramping_to_the_same_percent_is_refused(released):
    canary_running(released, percent="10")

    with pytest.raises(ReleaseStateInvalid, match="already"):
        change(released, services.release_canary_set_percent, percent=Decimal("10.00"))


def test_a_refused_change_on_a_never_released_environment_leaves_no_release(released):
    with pytest.raises(ReleaseStateInvalid):
        change(released, services.release_canary_abort, "development")

    assert not Release.objects.filter(environment__name="development").exists()


# --- experiment rules ----------------------------------------------------------------------------


def start_experiment(released, variants, name: str = "tone") -> Release:
    return change(released, services.release_experiment_start, name=name, variants=variants)


def problem_codes(error: ReleaseInvalid) -> dict[str, str]:
    return {p.code: p.pointer for p in error.problems}


def test_experiment_weights_over_100_percent_are_refused(released):
    with pytest.raises(ReleaseInvalid) as refused:
        start_experiment(released, [("a", 1, Decimal("60")), ("b", 3, Decimal("40.01"))])

    assert problem_codes(refused.value) == {"weights_over_100": "/variants"}
    assert released.release("staging").experiment_name == ""


def test_experiment_weights_of_exactly_100_percent_leave_no_one_on_stable(released):
    release = start_experiment(released, [("a", 1, Decimal("60")), ("b", 3, Decimal("40"))])

    assert sum(v.weight for v in release_state(release).experiment.variants) == 10000


def test_duplicate_variant_names_are_refused(released):
    with pytest.raises(ReleaseInvalid) as refused:
        start_experiment(released, [("a", 1, Decimal(10)), ("a", 3, Decimal(10))])

    assert "duplicate_variant" in problem_codes(refused.value)


@pytest.mark.parametrize("count", [0, 1, 11])
def test_an_experiment_has_2_to_10_variants(released, count):
    variants = [(f"v{i}", 1, Decimal(1)) for i in range(count)]

    with pytest.raises(ReleaseInvalid) as refused:
        start_experiment(released, variants)

    assert problem_codes(refused.value)["invalid_variants"] == "/variants"


def test_every_problem_of_an_experiment_is_listed_at_once(released):
    with pytest.raises(ReleaseInvalid) as refused:
        start_experiment(
            released,
            [("stable", 1, Decimal("12.345")), ("b", 3, Decimal(-1))],
            name=" ",
        )

    pointers = {(p.code, p.pointer) for p in refused.value.problems}
    assert pointers == {
        ("invalid_name", "/name"),
        ("invalid_name", "/variants/0/name"),
        ("invalid_percent", "/variants/0/percent"),
        ("invalid_percent", "/variants/1/percent"),
    }


def test_a_running_experiment_cannot_be_restarted_or_reweighted(released):
    experiment_running(released)
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseStateInvalid, match="Stop it"):
        start_experiment(released, [("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))])

    assert snapshot(released.release("staging")) == before


def test_reweighting_means_stopping_and_starting_another_with_a_new_salt(released):
    old = release_state(experiment_running(released)).experiment
    change(released, services.release_experiment_stop, winner=None)

    new = release_state(
        start_experiment(released, [("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))])
    ).experiment

    assert [v.weight for v in new.variants] == [5000, 5000]
    assert new.salt != old.salt


def test_an_unknown_winner_is_refused_and_the_experiment_runs_on(released):
    experiment_running(released)
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseStateInvalid, match="warm, brief"):
        change(released, services.release_experiment_stop, winner="loud")

    assert snapshot(released.release("staging")) == before


def test_stopping_needs_a_running_experiment(released):
    with pytest.raises(ReleaseStateInvalid, match="No experiment"):
        change(released, services.release_experiment_stop, winner=None)


def test_an_experiment_needs_a_stable_version_first(released):
    with pytest.raises(ReleaseStateInvalid, match="stable"):
        change(
            released,
            services.release_experiment_start,
            "development",
            name="tone",
            variants=[("a", 1, Decimal(50)), ("b", 2, Decimal(50))],
        )


def test_production_may_experiment_with_its_stable_version_and_staged_ones(released):
    release = change(
        released,
        services.release_experiment_start,
        "production",
        name="tone",
        variants=[("control", 1, Decimal(50)), ("new", 2, Decimal(50))],
    )

    assert release_state(release).experiment.name == "tone"


# --- shadow rules --------------------------------------------------------------------------------


@pytest.mark.parametrize("versions", [[], [3, 3], [1, 2, 3, 3], [1, 2, 3, 4]])
def test_a_shadow_takes_1_to_3_different_versions(released, versions):
    with pytest.raises(ReleaseInvalid) as refused:
        change(released, services.release_shadow_start, versions=versions, sample_percent=5)

    assert problem_codes(refused.value) == {"invalid_versions": "/versions"}


def test_stopping_a_shadow_needs_one_running(released):
    with pytest.raises(ReleaseStateInvalid, match="No shadow"):
        change(released, services.release_shadow_stop)


# --- shadow budgets (runs per hour) ---------------------------------------------------------------


def shadow_running(released, budget: int | None = None, **kwargs: Any) -> Release:
    kwargs = {"versions": [3], "sample_percent": Decimal(10), **kwargs}
    return change(released, services.release_shadow_start, budget_per_hour=budget, **kwargs)


def test_a_shadow_keeps_its_own_budget_on_the_row_and_in_the_event(released):
    release = shadow_running(released, budget=120)

    release.refresh_from_db()
    assert release.shadow_budget_per_hour == 120
    assert release_state(release).shadow.budget_per_hour == 120
    assert shadow_budget(release_state(release)) == 120
    assert events(release)[-1].after["shadow"]["budget_per_hour"] == 120


def test_a_shadow_without_a_budget_spends_the_server_default_as_it_is_now(released):
    state = release_state(shadow_running(released))

    assert state.shadow.budget_per_hour is None
    with override_settings(SHADOW_BUDGET_PER_HOUR=600):
        assert shadow_budget(state) == 600
    with override_settings(SHADOW_BUDGET_PER_HOUR=45):
        assert shadow_budget(state) == 45


def test_no_shadow_means_no_budget(released):
    assert shadow_budget(release_state(released.release("staging"))) == 0


def test_changing_only_the_budget_keeps_the_sampled_calls(released):
    first = release_state(shadow_running(released, budget=120)).shadow
    revision = released.release("staging").revision

    release = shadow_running(released, budget=30, reason="Too costly.")

    shadow = release_state(release).shadow
    assert (shadow.versions, shadow.sample, shadow.salt) == (
        first.versions,
        first.sample,
        first.salt,
    )
    assert shadow.budget_per_hour == 30
    assert release.revision == revision + 1
    event = events(release)[-1]
    assert event.action == ReleaseEvent.Action.SHADOW_START
    assert (
        event.before["shadow"]["budget_per_hour"],
        event.after["shadow"]["budget_per_hour"],
    ) == (
        120,
        30,
    )


def test_back_to_the_default_budget_keeps_the_sampled_calls_too(released):
    salt = release_state(shadow_running(released, budget=120)).shadow.salt

    shadow = release_state(shadow_running(released, budget=None)).shadow

    assert (shadow.salt, shadow.budget_per_hour) == (salt, None)


@pytest.mark.parametrize(
    "changed", [{"versions": [2, 3]}, {"sample_percent": Decimal(20)}], ids=["versions", "sample"]
)
def test_new_versions_or_a_new_sample_draw_afresh(released, changed):
    salt = release_state(shadow_running(released, budget=120)).shadow.salt

    shadow = release_state(shadow_running(released, budget=120, **changed)).shadow

    assert shadow.salt != salt


def test_restarting_a_shadow_with_nothing_changed_is_refused(released):
    shadow_running(released, budget=120)
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseStateInvalid, match="already"):
        shadow_running(released, budget=120)

    assert snapshot(released.release("staging")) == before


@pytest.mark.parametrize("budget", [1, 100_000])
def test_a_shadow_budget_may_be_1_to_100000(released, budget):
    assert release_state(shadow_running(released, budget=budget)).shadow.budget_per_hour == budget


@pytest.mark.parametrize("budget", [0, -1, 100_001, True, 1.5, "10"])
def test_a_shadow_budget_outside_1_to_100000_is_refused(released, budget):
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseInvalid) as refused:
        shadow_running(released, budget=budget)

    assert problem_codes(refused.value) == {"invalid_budget": "/budget_per_hour"}
    assert snapshot(released.release("staging")) == before


def test_every_shadow_problem_is_listed_at_once(released):
    with pytest.raises(ReleaseInvalid) as refused:
        change(
            released,
            services.release_shadow_start,
            versions=[],
            sample_percent=101,
            budget_per_hour=0,
        )

    assert problem_codes(refused.value) == {
        "invalid_percent": "/sample_percent",
        "invalid_versions": "/versions",
        "invalid_budget": "/budget_per_hour",
    }


def test_the_database_refuses_a_budget_out_of_range(released):
    release = shadow_running(released)

    for budget in (0, 100_001):
        with (
            pytest.raises(IntegrityError, match="release_shadow_budget_range"),
            transaction.atomic(),
        ):
            Release.objects.filter(pk=release.pk).update(shadow_budget_per_hour=budget)
