"""The release verbs as named changes (releases.services): a change's decision is a typed value,
its preview is the service's own rule without the database, and the admin's table names them."""

from __future__ import annotations

import inspect
from decimal import Decimal

import pytest

from releases import services
from releases.admin.verbs import DEPLOY_A_PROMPT, VERBS
from releases.errors import PromotionBlocked, ReleaseInvalid, ReleaseStateInvalid
from releases.gates import GateVerdict, promotion_check_register, promotion_check_unregister
from releases.services import (
    CanaryPromote,
    CanaryStart,
    Decision,
    Deploy,
    ExperimentStart,
    ExperimentStop,
    GateFailure,
    ReleaseChange,
    Rollback,
    ShadowStart,
)
from releases.services.common import NEW_DRAW, release_lock
from releases.state import Canary, Experiment, ReleaseState, Variant, release_state

pytestmark = pytest.mark.django_db

STATE = ReleaseState(stable=2)


@pytest.fixture
def failing_gate():
    def check(*, prompt_id: int, environment: str, version: int) -> list[GateVerdict]:
        return [
            GateVerdict(passed=False, gate="golden", detail=f"v{version}: 71 % of 90 %."),
            GateVerdict(passed=True, gate="smoke"),
        ]

    promotion_check_register(check)
    yield
    promotion_check_unregister(check)


def locked(released, environment: str = "staging"):
    return release_lock(prompt=released.prompt, environment=released.environments[environment])


def test_a_decision_names_the_target_and_every_gate_it_overrode(released, failing_gate):
    release = locked(released)

    decision = Deploy(version=3, override_gates=True).decide(release, release_state(release))

    assert decision == Decision(
        ReleaseState(stable=3), overridden=(GateFailure("golden", "v3: 71 % of 90 %.", 3),)
    )


def test_without_an_override_the_decision_is_a_refusal_naming_every_failed_gate(
    released, failing_gate
):
    release = locked(released, "production")  # v3 was never stable in staging: the order fails too

    with pytest.raises(PromotionBlocked) as refused:
        Deploy(version=3).decide(release, release_state(release))

    assert [f["gate"] for f in refused.value.failed] == ["environment-order", "golden"]


def test_an_experiment_overrides_the_gates_of_each_new_variant_once(released, failing_gate):
    release = locked(released)
    change = ExperimentStart(
        name="tone",
        variants=[("a", 2, Decimal(20)), ("b", 3, Decimal(20)), ("c", 3, Decimal(20))],
        override_gates=True,
    )

    decision = change.decide(release, release_state(release))

    assert [f.version for f in decision.overridden] == [3]  # v2 is stable, v3 asked once
    assert decision.target.experiment.salt.startswith("support.refund-reply/staging/experiment/")


def test_a_preview_is_the_same_rule_with_a_placeholder_salt_and_no_query(
    django_assert_num_queries,
):
    with django_assert_num_queries(0):
        canary = CanaryStart(version=3, percent=Decimal("12.5")).preview(None, STATE)
        shadows = ShadowStart(versions=[3], sample_percent=Decimal(5)).preview(None, STATE)

    assert canary == Decision(ReleaseState(stable=2, canary=Canary(3, 1250, "(new canary draw)")))
    assert shadows.target.shadow.salt == NEW_DRAW.format("shadow")
    with pytest.raises(ReleaseStateInvalid, match="No canary"):
        CanaryPromote().preview(None, STATE)


def test_check_names_every_problem_of_the_values_before_any_lock():
    change = ExperimentStart(name=" ", variants=[("stable", 2, Decimal(101))], planned_calls=5)

    with pytest.raises(ReleaseInvalid) as refused:
        change.check(reason="")

    assert {p.pointer for p in refused.value.problems} == {
        "/name",
        "/variants",
        "/variants/0/name",
        "/variants/0/percent",
        "/planned_calls",
    }


def test_the_gated_versions_are_the_ones_put_in_front_of_traffic():
    running = ReleaseState(
        stable=2, experiment=Experiment("tone", (Variant("a", 2, 10), Variant("b", 4, 10)), "s")
    )

    assert Deploy(version=3).gated_versions(STATE, ReleaseState(stable=3)) == (3,)
    assert ExperimentStop(winner=None).gated_versions(running, STATE) == ()
    assert ExperimentStop(winner="b").gated_versions(running, ReleaseState(stable=4)) == (4,)
    assert Rollback().gated_versions(running, STATE) == ()


def test_a_confirmed_rollback_applies_the_event_the_page_showed(released):
    release = released.release("staging")
    change = Rollback()

    decision = change.preview(release, release_state(release))

    assert change.confirmed(decision) == Rollback(to_event=decision.restores.pk)
    assert decision.target == ReleaseState.from_dict(decision.restores.before)


def test_the_admin_table_names_every_verb_class_once():
    verbs = [*(cls for cls in vars(services).values() if inspect.isclass(cls))]
    changes = {
        cls for cls in verbs if issubclass(cls, ReleaseChange) and not inspect.isabstract(cls)
    }

    assert {verb.change for verb in VERBS.values()} == changes
    assert len(VERBS) == len(changes) == 10
    assert DEPLOY_A_PROMPT.change is Deploy
    assert {v.name for v in VERBS.values() if v.gated} == {
        "deploy",
        "canary_start",
        "canary_promote",
        "experiment_start",
        "experiment_stop",
    }
