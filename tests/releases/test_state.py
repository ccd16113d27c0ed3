"""The release state as a value (releases.state): what events snapshot and rollbacks restore.

Snapshots are stored for ever, so every shape ever written must still read: the shadow budget was
added without a new schema version, and a snapshot written before it reads as "no budget of its
own" (the server default)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from releases.models import STATE_SCHEMA_VERSION
from releases.state import Canary, ReleaseState, Shadow, shadow_budget

# A shadow as snapshots held it before budgets existed (no "budget_per_hour" key).
LEGACY = {
    "schema_version": 1,
    "stable": 2,
    "canary": {"version": 3, "weight": 500, "salt": "c"},
    "experiment": None,
    "shadow": {"versions": [3], "sample": 1000, "salt": "s"},
}


@pytest.mark.parametrize("budget", [None, 1, 250, 100_000])
def test_a_state_with_a_shadow_budget_round_trips(budget):
    state = ReleaseState(stable=2, shadow=Shadow((3, 4), 1000, "s", budget))

    data = state.as_dict()

    assert data["shadow"]["budget_per_hour"] == budget
    assert ReleaseState.from_dict(data) == state


def test_a_snapshot_from_before_budgets_reads_as_the_server_default():
    state = ReleaseState.from_dict(LEGACY)

    assert state == ReleaseState(
        stable=2, canary=Canary(3, 500, "c"), shadow=Shadow((3,), 1000, "s", None)
    )
    with override_settings(SHADOW_BUDGET_PER_HOUR=77):
        assert shadow_budget(state) == 77


def test_the_budget_is_additive_so_the_schema_version_stays_1():
    assert STATE_SCHEMA_VERSION == 1
    assert ReleaseState().as_dict()["schema_version"] == 1


def test_an_unknown_schema_version_is_still_refused():
    with pytest.raises(ValueError, match="schema"):
        ReleaseState.from_dict({**LEGACY, "schema_version": 2})


def test_the_effective_budget_is_the_shadows_own_else_the_setting_and_0_without_shadows():
    with override_settings(SHADOW_BUDGET_PER_HOUR=600):
        assert shadow_budget(ReleaseState(stable=1, shadow=Shadow((2,), 100, "s", 30))) == 30
        assert shadow_budget(ReleaseState(stable=1, shadow=Shadow((2,), 100, "s"))) == 600
        assert shadow_budget(ReleaseState(stable=1)) == 0
