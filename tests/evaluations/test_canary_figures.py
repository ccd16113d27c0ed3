"""A look's figures are typed values (``evaluations.canary.metrics``), stored as the JSON the API
has always served: each kind of check, and a look at each stage, round-trips unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evaluations.canary.metrics import (
    Check,
    CheckStatus,
    LookFigures,
    RankFigures,
    SrmArm,
    SrmFigures,
    check_text,
)

SINCE = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

RATE = Check(
    "error_rate",
    "error rate",
    CheckStatus.WITHIN,
    unit="pp",
    margin=1.0,
    canary=0.5,
    stable=0.4,
    difference=0.1,
    ci=(-0.3, 0.6),
    p_value=0.42,
    n_canary=800,
    n_stable=7200,
)
LATENCY = Check(
    "p95_latency",
    "p95 latency",
    CheckStatus.FAILED,
    unit="ms",
    margin=20.0,
    canary=300.0,
    stable=200.0,
    difference=100.0,
    p_value=0.001,
    n_canary=500,
    n_stable=500,
    rank=RankFigures(increase_percent=50.0, rank_biserial=0.4, values_capped=False),
)
UNJUDGED = Check(
    "feedback",
    "feedback",
    CheckStatus.NOT_JUDGED,
    unit="score",
    margin=0.1,
    detail="fewer than 30 calls with feedback in an arm",
)


@pytest.mark.parametrize("check", [RATE, LATENCY, UNJUDGED], ids=lambda c: c.name)
def test_a_check_is_stored_as_json_and_read_back_the_same(check: Check) -> None:
    stored = check.as_dict()
    assert Check.from_dict(stored) == check
    assert stored["status"] == str(check.status)
    assert stored["passed"] is {"within": True, "failed": False}.get(stored["status"])


def test_a_stored_check_keeps_the_keys_the_api_serves() -> None:
    assert RATE.as_dict() == {
        "name": "error_rate",
        "label": "error rate",
        "status": "within",
        "passed": True,
        "unit": "pp",
        "canary": 0.5,
        "stable": 0.4,
        "difference": 0.1,
        "ci": [-0.3, 0.6],
        "p_value": 0.42,
        "margin": 1.0,
        "n_canary": 800,
        "n_stable": 7200,
        "detail": "",
    }
    ranked = LATENCY.as_dict()
    assert (ranked["increase_percent"], ranked["rank_biserial"], ranked["values_capped"]) == (
        50.0,
        0.4,
        False,
    )
    assert "rank_biserial" not in RATE.as_dict()


def test_the_summary_clause_reads_the_typed_check() -> None:
    assert (
        check_text(LATENCY)
        == "p95 latency 300.00 ms vs 200.00 ms (+50.0 %, margin +20 %, p=0.001): failed"
    )
    assert (
        check_text(UNJUDGED) == "feedback: not judged (fewer than 30 calls with feedback in an arm)"
    )
    assert check_text(Check.from_dict(RATE.as_dict())) == check_text(RATE)


def test_a_look_stores_only_what_it_got_to() -> None:
    waiting = LookFigures(SINCE, SINCE + timedelta(minutes=3), 3.0, 10, 100, calls=(4, 40))
    assert waiting.as_dict() == {
        "window": {"since": SINCE.isoformat(), "until": (SINCE + timedelta(minutes=3)).isoformat()},
        "minutes": 3.0,
        "needed": {"minutes": 10, "calls_per_arm": 100},
        "calls": {"canary": 4, "stable": 40},
    }
    srm = SrmFigures(
        (SrmArm("canary", 90, 100.0), SrmArm("stable", 910, 900.0)), 1.1, 0.29, 0.001, False
    )
    measured = LookFigures(
        SINCE, SINCE, 12.0, 10, 100, calls=(90, 910), checks=(RATE,), srm=srm, sample_cap=5000
    ).as_dict()
    assert measured["checks"] == [RATE.as_dict()]
    assert measured["srm"] == {
        "arms": {
            "canary": {"observed": 90, "expected": 100.0},
            "stable": {"observed": 910, "expected": 900.0},
        },
        "statistic": 1.1,
        "p_value": 0.29,
        "threshold": 0.001,
        "mismatch": False,
    }
    assert "error" not in measured
    failed = LookFigures(SINCE, SINCE, 1.0, 10, 100, error="OperationalError: gone").as_dict()
    assert (failed["error"], "calls" in failed, "checks" in failed) == (
        "OperationalError: gone",
        False,
        False,
    )
