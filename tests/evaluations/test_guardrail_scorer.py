"""The ``guardrails`` scorer (issue 19): what it selects, what each ``expect`` means, the problems
``scorer_check`` finds in its expectations, and a refusal failing every other scorer. Pure: the
records are written here as runs.guardrails writes them (tests/evaluations/test_eval_guardrails.py
runs them for real)."""

from __future__ import annotations

from typing import Any

import pytest

from evaluations.scoring.scorers import Score, score, scorer_check


def fired(stage: str, check: str, action: str, detail: str = "", source: str = "version") -> dict:
    return {"stage": stage, "check": check, "action": action, "source": source, "detail": detail}


INJECTION_REFUSED = fired("input", "injection", "refuse", "looks like override")
EMAIL_REDACTED = fired("input", "pii", "redact", "email ×1")
LEAK_FLAGGED = fired("output", "pii", "flag", "phone ×1", source="environment")


def judged(record: list[dict] | None, **expectation: Any) -> Score:
    return score("any output", {"scorer": "guardrails", **expectation}, guardrails=record)


# --- expect -------------------------------------------------------------------------------------


def test_refused_passes_when_a_selected_check_refused() -> None:
    result = judged([EMAIL_REDACTED, INJECTION_REFUSED], expect="refused")

    assert result == Score(
        True,
        1.0,
        "Refused: the input check injection (refuse, the version): looks like override.",
    )


def test_refused_fails_when_nothing_refused_and_says_what_fired() -> None:
    result = judged([EMAIL_REDACTED], expect="refused", check="injection")

    assert result == Score(
        False, 0.0, "No injection check refused it; what fired: input pii (redact)."
    )
    assert judged([], expect="refused").detail == "No check refused it; no check fired."


def test_a_refusal_by_another_check_does_not_count_for_the_one_named() -> None:
    refused_by_pii = fired("input", "pii", "refuse", "email ×1")

    assert not judged([refused_by_pii], expect="refused", check="injection").passed
    assert judged([refused_by_pii], expect="refused", check="pii").passed


def test_triggered_passes_when_a_selected_check_fired_whatever_it_did() -> None:
    assert judged([EMAIL_REDACTED], expect="triggered", check="pii").passed
    assert judged([EMAIL_REDACTED], expect="triggered", check="pii", action="redact").passed
    assert not judged([EMAIL_REDACTED], expect="triggered", check="pii", action="flag").passed


def test_the_stage_tells_an_input_check_from_the_output_check_of_the_same_name() -> None:
    record = [LEAK_FLAGGED]

    assert judged(record, expect="triggered", stage="output", check="pii").passed
    missed = judged(record, expect="triggered", stage="input", check="pii")
    assert missed.detail == "No input pii check fired; what fired: output pii (flag)."


def test_the_environment_floor_is_named_as_the_source() -> None:
    result = judged([LEAK_FLAGGED], expect="triggered")

    assert result.detail == "Fired: the output check pii (flag, the environment's floor): phone ×1."


def test_passed_alone_means_no_check_fired_at_all() -> None:
    assert judged([], expect="passed") == Score(True, 1.0, "No check fired.")
    assert judged([EMAIL_REDACTED], expect="passed").detail == (
        "Expected no check to fire: the input check pii (redact, the version): email ×1."
    )


def test_passed_with_a_check_is_the_false_positive_case() -> None:
    assert judged([EMAIL_REDACTED], expect="passed", check="injection").passed
    assert not judged([INJECTION_REFUSED], expect="passed", check="injection").passed


def test_passed_with_the_action_refuse_lets_a_redaction_through() -> None:
    assert judged([EMAIL_REDACTED], expect="passed", action="refuse").passed
    refused = judged([INJECTION_REFUSED], expect="passed", action="refuse")
    assert refused.detail.startswith("Expected no check taking the action refuse to fire:")


def test_without_a_record_it_fails_saying_so() -> None:
    assert judged(None, expect="passed") == Score(
        False, 0.0, "No guardrail record was given to judge."
    )


def test_malformed_entries_in_a_record_are_skipped() -> None:
    assert judged(["refuse", 3, INJECTION_REFUSED], expect="refused").passed
    assert judged(["refuse", None], expect="passed").passed


# --- other scorers -----------------------------------------------------------------------------


def test_a_refused_run_fails_every_other_scorer_naming_the_check() -> None:
    result = score(
        "Greet Ada.", {"scorer": "contains", "value": "Greet"}, guardrails=[INJECTION_REFUSED]
    )

    assert result == Score(
        False,
        0.0,
        "A guardrail refused the run: the input check injection (refuse, the version): "
        "looks like override.",
    )


def test_checks_that_did_not_refuse_leave_other_scorers_alone() -> None:
    expectation = {"scorer": "contains", "value": "Greet"}

    assert score("Greet [email].", expectation, guardrails=[EMAIL_REDACTED]).passed
    assert score("Greet [email].", expectation, guardrails=[]).passed
    assert score("Greet [email].", expectation).passed  # no record: as before guardrails


# --- scorer_check ------------------------------------------------------------------------------


def problems(expectation: dict) -> list[tuple[str, str]]:
    return [(p.code, p.pointer) for p in scorer_check({"scorer": "guardrails", **expectation})]


@pytest.mark.parametrize(
    "expectation",
    [
        {"expect": "refused"},
        {"expect": "passed", "check": "injection"},
        {"expect": "triggered", "stage": "output", "check": "moderation", "action": "fallback"},
        {"expect": "passed", "action": "refuse"},
        {"expect": "triggered", "check": "max_tokens"},
    ],
)
def test_valid_expectations_have_no_problems(expectation: dict) -> None:
    assert problems(expectation) == []


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ({}, [("missing_field", "/expect")]),
        ({"expect": "blocked"}, [("invalid_value", "/expect")]),
        ({"expect": "refused", "when": "now"}, [("unknown_field", "/when")]),
        ({"expect": "refused", "stage": "during"}, [("invalid_value", "/stage")]),
        ({"expect": "refused", "stage": ["input"]}, [("invalid_value", "/stage")]),
        ({"expect": "refused", "check": "profanity"}, [("invalid_value", "/check")]),
        (  # injection is an input check only
            {"expect": "refused", "stage": "output", "check": "injection"},
            [("invalid_value", "/check")],
        ),
        ({"expect": "triggered", "action": "block"}, [("invalid_value", "/action")]),
        ({"expect": "refused", "action": "refuse"}, [("invalid_value", "/action")]),
        (
            {"expect": 1, "stage": 2, "check": 3, "action": 4},
            [
                ("invalid_value", "/expect"),
                ("invalid_value", "/stage"),
                ("invalid_value", "/check"),
                ("invalid_value", "/action"),
            ],
        ),
    ],
)
def test_expectation_problems_are_listed_with_pointers(expectation: dict, expected: list) -> None:
    assert problems(expectation) == expected


def test_problems_name_the_allowed_values() -> None:
    [check] = scorer_check(
        {"scorer": "guardrails", "expect": "refused", "stage": "output", "check": "injection"}
    )
    assert check.detail == (
        "'check' names one of the output checks: deny_patterns, pii, moderation."
    )


def test_an_invalid_guardrails_expectation_scores_as_a_failure() -> None:
    result = score("x", {"scorer": "guardrails", "expect": "blocked"}, guardrails=[])

    assert result.passed is False
    assert result.detail.startswith("The expectation is not valid: /expect: 'expect' is one of")
