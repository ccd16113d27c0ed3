"""A release change kept to be applied later reads back as the same change, and a stored object
that is not one is refused (releases.services.stored)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from releases.errors import ReleaseInvalid
from releases.services import (
    CanaryAbort,
    CanaryPercent,
    CanaryPromote,
    CanaryStart,
    Deploy,
    ExperimentStart,
    ExperimentStop,
    Rollback,
    ShadowStart,
    ShadowStop,
)
from releases.services.stored import CHANGES, change_from_stored, change_stored

CHANGES_OF_EVERY_VERB = [
    Deploy(version=3, override_gates=True),
    CanaryStart(version=2, percent=Decimal("12.35")),
    CanaryPercent(percent=Decimal("50")),
    CanaryPromote(),
    CanaryAbort(),
    ExperimentStart(
        name="tone",
        variants=[("A", 1, Decimal("50")), ("B", 2, Decimal("50"))],
        planned_calls=1000,
    ),
    ExperimentStop(winner="B"),
    ShadowStart(versions=[4], sample_percent=Decimal("5"), budget_per_hour=100),
    ShadowStop(),
    Rollback(to_event=12),
]


@pytest.mark.parametrize("change", CHANGES_OF_EVERY_VERB, ids=lambda c: str(c.action))
def test_every_verb_reads_back_as_the_same_change(change):
    stored = change_stored(change)

    assert stored["action"] == str(change.action)
    assert change_from_stored(stored) == change


def test_every_verb_is_covered():
    assert {str(c.action) for c in CHANGES_OF_EVERY_VERB} == set(CHANGES)


@pytest.mark.parametrize(
    ("stored", "pointer"),
    [
        (None, "/action"),
        ({"action": "delete"}, "/action"),
        ({"action": "deploy", "arguments": []}, "/action"),
        ({"action": "deploy", "arguments": {"version": 3, "weight": 1}}, "/arguments"),
        ({"action": "canary_percent", "arguments": {"percent": "lots"}}, "/arguments"),
        ({"action": "experiment_start", "arguments": {"name": "x", "variants": [1]}}, "/arguments"),
    ],
)
def test_an_object_that_is_no_change_is_refused(stored, pointer):
    with pytest.raises(ReleaseInvalid) as refused:
        change_from_stored(stored)

    assert refused.value.problems[0].pointer == pointer
