"""Scorers (issue 6, deliverable 2): each kind passing and failing, expectation checks with their
pointers, hostile regexes refused, and the LLM judge end to end against the local fake model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evaluations.scoring import scorers
from evaluations.scoring.judge import registry_judge
from evaluations.scoring.scorers import JudgeFailed, JudgeRequest, Score, score, scorer_check
from releases.services import release_deploy
from runs.models import Call
from tests.factories import PromptFactory, make_version
from tests.metrics import counting

CHAT = "/v1/chat/completions"


def problems(expectation: Any, **kwargs: Any) -> list[tuple[str, str]]:
    return [(p.code, p.pointer) for p in scorer_check(expectation, **kwargs)]


# --- exact, contains ------------------------------------------------------------------------------


def test_exact_compares_the_whole_text_strictly_by_default() -> None:
    assert score("Refund issued", {"scorer": "exact", "value": "Refund issued"}) == Score(
        True, 1.0, "The output equals the expected text."
    )
    failed = score("refund issued ", {"scorer": "exact", "value": "Refund issued"})
    assert (failed.passed, failed.score) == (False, 0.0)
    assert "'Refund issued'" in failed.detail
    assert "'refund issued '" in failed.detail


def test_exact_options_fold_case_and_whitespace() -> None:
    loose = {"scorer": "exact", "value": "Refund  issued", "case_sensitive": False}
    assert not score("REFUND issued", loose).passed  # the double space still counts
    assert score("REFUND  issued", loose).passed
    both = {**loose, "normalize_whitespace": True}
    assert score("  REFUND\n\tissued\n", both).passed
    assert not score("REFUND issued now", both).passed


def test_contains_one_value_honours_case() -> None:
    assert score("Your refund is on its way", {"scorer": "contains", "value": "refund"}).passed
    strict = {"scorer": "contains", "value": "Refund"}
    assert not score("your refund", strict).passed
    assert score("your refund", {**strict, "case_sensitive": False}).passed


def test_contains_all_scores_the_fraction_found_and_names_the_missing() -> None:
    expectation = {"scorer": "contains", "values": ["refund", "order", "apolog"]}
    result = score("We are sorry: the refund for your order is late.", expectation)
    assert result.passed is False
    assert result.score == pytest.approx(2 / 3)
    assert "'apolog'" in result.detail
    assert score("We apologize: your order's refund", expectation) == Score(
        True, 1.0, "Every value is in the output."
    )


def test_contains_any_needs_one_value() -> None:
    expectation = {"scorer": "contains", "values": ["refund", "credit"], "match": "any"}
    assert score("A store credit.", expectation).passed
    assert score("A store credit.", expectation).score == 1.0
    assert score("Nothing", expectation) == Score(
        False, 0.0, "None of the values is in the output."
    )


def test_contains_can_normalize_whitespace() -> None:
    expectation = {"scorer": "contains", "value": "full refund", "normalize_whitespace": True}
    assert score("a full\n   refund", expectation).passed
    assert not score("a full\n   refund", {**expectation, "normalize_whitespace": False}).passed


# --- regex ---------------------------------------------------------------------------------------


def test_regex_searches_or_matches_fully() -> None:
    found = score("Order #1234 shipped", {"scorer": "regex", "pattern": r"#\d{4}\b"})
    assert found.passed
    assert "'#1234' at 6" in found.detail
    assert not score("Order #12 shipped", {"scorer": "regex", "pattern": r"#\d{4}\b"}).passed
    full = {"scorer": "regex", "pattern": r"(yes|no)", "full_match": True}
    assert score("yes", full).passed
    assert not score("yes, indeed", full).passed
    insensitive = {"scorer": "regex", "pattern": "^YES$", "case_sensitive": False}
    assert score("yes", insensitive).passed
    assert not score("yes", {**insensitive, "case_sensitive": True}).passed


def test_regex_compiles_each_pattern_once() -> None:
    scorers._compiled.cache_clear()
    for text in ("a1", "b2", "c3"):
        score(text, {"scorer": "regex", "pattern": r"[a-c]\d"})
    info = scorers._compiled.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",  # the classic exponential
        r"(\w+\s?)*$",
        r"(a|ab)*c",  # overlapping alternatives under a quantifier
        r"(?:xa|ya)+z",  # refused too: alternation under a backtracking quantifier
        r"(a{1,200}){2,3}",  # bounded quantifiers nest just as badly
        r"(?>(a+)+b)",  # inside an atomic group the nesting still backtracks
        r".*foo.*bar",  # two unbounded quantifiers unanchored: cubic under search
        r"\d+\s*%",
        r"^\s*\w+\s*:\s*\d+$",  # anchored, but four unbounded quantifiers
        r"(?m)^.*a.*b",  # ^ under MULTILINE anchors every line, not the start
    ],
)
def test_hostile_regexes_are_refused_at_check_time_and_never_run(pattern: str) -> None:
    expectation = {"scorer": "regex", "pattern": pattern}
    assert problems(expectation) == [("unsafe_regex", "/pattern")]
    result = score("a" * 5_000 + "!", expectation)
    assert result.passed is False
    assert "The expectation is not valid" in result.detail


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?>xa|ya)+z",  # atomic: never backtracked into
        r"(?:x|y)+z",  # one-character alternatives compile to a character class
        r"(a++)+$",  # possessive inner quantifier
        r"\w++@\w+\.com",
        r"^.*foo.*bar",  # anchored: at most quadratic
        r"(ab){2}c+",  # a fixed repeat is not ambiguous
        r"\b(?:refund|credit)\b",
    ],
)
def test_safe_forms_of_the_same_patterns_are_accepted(pattern: str) -> None:
    assert problems({"scorer": "regex", "pattern": pattern}) == []


def test_regex_full_match_counts_as_anchored() -> None:
    assert problems({"scorer": "regex", "pattern": r"\w+: \d+"}) == [("unsafe_regex", "/pattern")]
    assert problems({"scorer": "regex", "pattern": r"\w+: \d+", "full_match": True}) == []


def test_regex_refuses_outputs_longer_than_it_reads() -> None:
    expectation = {"scorer": "regex", "pattern": "refund"}
    long = "x" * scorers.MAX_REGEX_INPUT_CHARS + " refund"
    result = score(long, expectation)
    assert result.passed is False
    assert f"reads at most {scorers.MAX_REGEX_INPUT_CHARS}" in result.detail
    assert score(long[-scorers.MAX_REGEX_INPUT_CHARS :], expectation).passed


# --- JSON Schema, JSON field, numeric -------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR"]}},
    "required": ["amount", "currency"],
}


def test_json_schema_passes_valid_documents_and_points_at_the_error() -> None:
    expectation = {"scorer": "json_schema", "schema": SCHEMA}
    assert score('{"amount": 12.5, "currency": "EUR"}', expectation).passed
    result = score('{"amount": -1, "currency": "EUR"}', expectation)
    assert result.passed is False
    assert result.detail.startswith("Invalid at /amount:")


@pytest.mark.parametrize(
    "output",
    ['Sure! {"amount": 1}', '{"amount": 1', "NaN", '{"amount": Infinity}', "", "[" * 100_000],
)
def test_unparseable_outputs_fail_cleanly(output: str) -> None:
    for expectation in (
        {"scorer": "json_schema", "schema": SCHEMA},
        {"scorer": "json_field", "pointer": "/amount", "value": 1},
        {"scorer": "numeric", "pointer": "/amount", "value": 1},
    ):
        result = score(output, expectation)
        assert (result.passed, result.score) == (False, 0.0)
        assert "not JSON" in result.detail


def test_json_schema_with_an_outside_reference_fails_cleanly() -> None:
    # Checked again at scoring time: a case stored before the rule is refused, never fetched.
    expectation = {"scorer": "json_schema", "schema": {"$ref": "https://example.invalid/s.json"}}
    result = score("{}", expectation)
    assert result.passed is False
    assert "leaves the schema" in result.detail


def test_json_field_compares_numbers_numerically_and_nothing_else_loosely() -> None:
    output = json.dumps({"order": {"total": 10, "items": [{"sku": "a/b"}]}, "ok": True})
    assert score(output, {"scorer": "json_field", "pointer": "/order/total", "value": 10.0}).passed
    assert score(output, {"scorer": "json_field", "pointer": "/order/items/0/sku~1x", "value": 1})
    assert score(
        '{"a/b": "x", "m~n": 2}', {"scorer": "json_field", "pointer": "/m~0n", "value": 2}
    ).passed
    assert score('{"a/b": "x"}', {"scorer": "json_field", "pointer": "/a~1b", "value": "x"}).passed
    assert not score(output, {"scorer": "json_field", "pointer": "/ok", "value": 1}).passed
    wrong = score(output, {"scorer": "json_field", "pointer": "/order/total", "value": "10"})
    assert wrong.passed is False
    assert "expected '10', got 10" in wrong.detail
    whole = {"scorer": "json_field", "pointer": "", "value": json.loads(output)}
    assert score(output, whole).passed


@pytest.mark.parametrize(
    "pointer", ["/order/missing", "/order/items/1", "/order/items/01", "/ok/x"]
)
def test_json_field_says_when_there_is_no_value(pointer: str) -> None:
    output = json.dumps({"order": {"items": [1]}, "ok": True})
    result = score(output, {"scorer": "json_field", "pointer": pointer, "value": 1})
    assert result == Score(False, 0.0, f"The output has no value at {pointer}.")


@pytest.mark.parametrize(
    ("output", "expectation", "passed"),
    [
        ("42", {"value": 42}, True),
        (" 42.0\n", {"value": 42}, True),
        ("42.5", {"value": 42}, False),  # no tolerance: equal or not
        ("42.5", {"value": 42, "abs_tol": 0.5}, True),
        ("42.6", {"value": 42, "abs_tol": 0.5}, False),
        ("105", {"value": 100, "rel_tol": 0.05}, True),
        ("105.1", {"value": 100, "rel_tol": 0.05}, False),
        ("-95", {"value": -100, "rel_tol": 0.05}, True),
        ("0.3", {"value": 0.1, "abs_tol": 0.2}, True),
        # With both, the looser one applies.
        ("110", {"value": 100, "abs_tol": 1, "rel_tol": 0.1}, True),
        ("101", {"value": 100, "abs_tol": 1, "rel_tol": 0.001}, True),
        ("1" + "0" * 400, {"value": 1e300}, False),  # exact, no float overflow
        ("1" + "0" * 400, {"value": 1e300, "rel_tol": 1}, False),
        # Numbers compare as the decimals written, not their binary approximations.
        ('{"total": 19.99}', {"value": 20, "pointer": "/total", "abs_tol": 0.01}, True),
        ("0.30000000000000004", {"value": 0.3, "abs_tol": 1e-17}, False),
    ],
)
def test_numeric_tolerances(output: str, expectation: dict, passed: bool) -> None:
    result = score(output, {"scorer": "numeric", **expectation})
    assert result.passed is passed, result.detail
    assert result.score == (1.0 if passed else 0.0)


@pytest.mark.parametrize(
    ("output", "found"),
    [('"42"', "'42'"), ("true", "true"), ('{"total": null}', "null"), ('{"x": 1}', "nothing")],
)
def test_numeric_needs_a_number(output: str, found: str) -> None:
    pointer = "/total" if output.startswith("{") else ""
    result = score(output, {"scorer": "numeric", "value": 1, "pointer": pointer})
    assert result.passed is False
    assert result.detail.endswith(f"found {found}.")


# --- similarity -----------------------------------------------------------------------------------


def test_similarity_uses_the_shadow_comparison_and_its_threshold() -> None:
    expectation = {
        "scorer": "similarity",
        "value": "Your refund was issued today.",
        "threshold": 0.6,
    }
    close = score("Your refund was issued today!", expectation)
    assert close.passed
    assert 0.6 <= close.score < 1.0
    far = score("Please call our support line.", expectation)
    assert far.passed is False
    assert far.score < 0.6
    assert score("Your refund was issued today.", expectation).score == 1.0


# --- expectation checks ---------------------------------------------------------------------------


def test_a_valid_expectation_of_every_kind_has_no_problems() -> None:
    for expectation in (
        {"scorer": "exact", "value": "", "case_sensitive": False, "normalize_whitespace": True},
        {"scorer": "contains", "values": ["a", "b"], "match": "any"},
        {"scorer": "regex", "pattern": "a", "full_match": True, "case_sensitive": False},
        {"scorer": "json_schema", "schema": SCHEMA},
        {"scorer": "json_field", "pointer": "", "value": None},
        {"scorer": "numeric", "value": 1, "pointer": "/a", "abs_tol": 0, "rel_tol": 0.1},
        {"scorer": "similarity", "value": "a", "threshold": 1},
        {"scorer": "llm_judge", "prompt": "p", "environment": "e", "expected": {"a": 1}},
        {"scorer": "guardrails", "expect": "refused", "stage": "input", "check": "injection"},
    ):
        assert scorer_check(expectation) == [], expectation
    assert set(scorers.SCORERS) == {
        "exact",
        "contains",
        "regex",
        "json_schema",
        "json_field",
        "numeric",
        "similarity",
        "llm_judge",
        "guardrails",
    }


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ("contains refund", [("wrong_type", "")]),
        ({}, [("missing_field", "/scorer")]),
        ({"scorer": "fuzzy"}, [("unknown_scorer", "/scorer")]),
        ({"scorer": 3}, [("unknown_scorer", "/scorer")]),
        (
            {"scorer": "exact", "valeu": "x", "case_sensitive": "no"},
            [
                ("unknown_field", "/valeu"),
                ("missing_field", "/value"),
                ("wrong_type", "/case_sensitive"),
            ],
        ),
        ({"scorer": "contains"}, [("missing_field", "/value")]),
        ({"scorer": "contains", "value": "a", "values": ["b"]}, [("missing_field", "/value")]),
        ({"scorer": "contains", "value": ""}, [("wrong_type", "/value")]),
        (
            {"scorer": "contains", "values": ["a", "", 3], "match": "most"},
            [("invalid_value", "/match"), ("wrong_type", "/values/1"), ("wrong_type", "/values/2")],
        ),
        ({"scorer": "contains", "values": []}, [("wrong_type", "/values")]),
        ({"scorer": "regex", "pattern": "(unclosed"}, [("invalid_regex", "/pattern")]),
        ({"scorer": "regex", "pattern": "a" * 1001}, [("invalid_regex", "/pattern")]),
        ({"scorer": "regex"}, [("missing_field", "/pattern")]),
        (
            {"scorer": "json_schema", "schema": {"type": "thing"}},
            [("invalid_json_schema", "/schema/type")],
        ),
        ({"scorer": "json_schema", "schema": "object"}, [("wrong_type", "/schema")]),
        (
            {"scorer": "json_field", "pointer": "order/total"},
            [("invalid_pointer", "/pointer"), ("missing_field", "/value")],
        ),
        (
            {"scorer": "json_field", "pointer": "/a~2", "value": 1},
            [("invalid_pointer", "/pointer")],
        ),
        (
            {"scorer": "numeric", "value": True, "abs_tol": -1, "rel_tol": float("nan")},
            [("wrong_type", "/value"), ("invalid_value", "/abs_tol"), ("wrong_type", "/rel_tol")],
        ),
        ({"scorer": "numeric", "value": "3"}, [("wrong_type", "/value")]),
        (
            {"scorer": "similarity", "value": "a", "threshold": 1.5},
            [("invalid_value", "/threshold")],
        ),
        ({"scorer": "similarity", "value": "a"}, [("missing_field", "/threshold")]),
        (
            {"scorer": "llm_judge", "prompt": "", "pass_threshold": -0.1, "locale": 5},
            [
                ("wrong_type", "/prompt"),
                ("missing_field", "/environment"),
                ("wrong_type", "/locale"),
                ("invalid_value", "/pass_threshold"),
            ],
        ),
    ],
)
def test_expectation_problems_are_all_listed_with_pointers(expectation, expected) -> None:
    assert problems(expectation) == expected


def test_problems_can_be_placed_in_a_larger_document() -> None:
    found = scorer_check({"scorer": "exact", "a/b": 1}, pointer="/cases/3/expectation")
    assert [p.pointer for p in found] == [
        "/cases/3/expectation/a~1b",
        "/cases/3/expectation/value",
    ]
    assert all(p.detail for p in found)


def test_an_invalid_expectation_scores_as_a_failure_listing_its_problems() -> None:
    result = score("x", {"scorer": "numeric", "value": "x"})
    assert result == Score(
        False, 0.0, "The expectation is not valid: /value: 'value' must be a number."
    )


# --- the LLM judge, with an injected judge -------------------------------------------------------

JUDGE = {"scorer": "llm_judge", "prompt": "qa.rubric", "environment": "staging"}


def test_the_judge_gets_output_expected_and_input_and_its_score_decides() -> None:
    asked: list[JudgeRequest] = []

    def judge(request: JudgeRequest) -> Any:
        asked.append(request)
        return {"score": 0.75, "reason": "Polite and correct."}

    result = score(
        "Refund sent.",
        {**JUDGE, "expected": {"refund": True}, "pass_threshold": 0.7, "locale": "fr"},
        judge=judge,
        inputs={"order": 7, "customer_name": "Zoé"},
    )
    assert result == Score(True, 0.75, "Judged 0.75 (pass at 0.7): Polite and correct.")
    assert asked == [
        JudgeRequest(
            prompt="qa.rubric",
            environment="staging",
            locale="fr",
            variables={
                "output": "Refund sent.",
                "expected": '{"refund": true}',
                "input": '{"customer_name": "Zoé", "order": 7}',
            },
        )
    ]
    below = score("x", JUDGE, judge=lambda request: {"score": 0.49, "reason": "meh"})
    assert (below.passed, below.score) == (False, 0.49)  # the default threshold is 0.5


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"score": 1.5, "reason": "great"}, "from 0 to 1, not 1.5"),
        ({"score": -0.1, "reason": "bad"}, "from 0 to 1"),
        ({"score": True, "reason": "yes"}, "from 0 to 1, not true"),
        ({"score": "0.9", "reason": "text"}, "from 0 to 1"),
        ({"score": 0.9}, "no 'reason'"),
        (["score", 1], "not an object"),
        (None, "not an object"),
    ],
)
def test_an_untrusted_judge_answer_is_validated(answer: Any, why: str) -> None:
    result = score("x", JUDGE, judge=lambda request: answer)
    assert (result.passed, result.score) == (False, 0.0)
    assert result.detail.startswith("judge failed: ")
    assert why in result.detail


def test_a_judge_that_fails_is_a_failed_score_not_an_exception() -> None:
    def judge(request: JudgeRequest) -> Any:
        raise JudgeFailed("the model is down")

    assert score("x", JUDGE, judge=judge) == Score(False, 0.0, "judge failed: the model is down")


def test_a_judged_expectation_without_a_judge_fails_saying_so() -> None:
    # scorers is pure: the judge that asks the registry is handed in, never imported.
    assert score("x", JUDGE) == Score(False, 0.0, "judge failed: no judge was given to ask")


def test_the_rubric_contract() -> None:
    schema = {
        "type": "object",
        "properties": {"score": {"type": "number"}, "reason": {"type": "string"}},
        "required": ["score", "reason"],
    }
    output = {"name": "output", "type": "string", "required": True}
    assert scorers.rubric_check(variables=[output], response_schema=schema) == []
    broken = scorers.rubric_check(
        variables=[
            {"name": "input", "type": "object"},
            {"name": "tone", "type": "string", "required": True},
        ],
        response_schema={"type": "object", "properties": {"score": {"type": "string"}}},
    )
    assert broken == [
        "it declares no 'output' variable",
        "its 'input' variable must be a string",
        "it requires the variable 'tone', which a judge never sends",
        "its response schema must require 'score' as a number",
        "its response schema must require 'reason' as a string",
    ]


# --- the LLM judge, end to end against the local fake model --------------------------------------


def rubric_schema(score_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"score": score_schema, "reason": {"type": "string"}},
        "required": ["score", "reason"],
    }


# The fake answers a schema's lowest allowed number: exclusiveMinimum 0 gives 1, minimum 0 gives 0.
PASSING = rubric_schema({"type": "number", "exclusiveMinimum": 0, "maximum": 1})
FAILING = rubric_schema({"type": "number", "minimum": 0, "maximum": 1})


@pytest.fixture
def rubric(environments, manager):
    """``make_rubric(key, schema, model=...)``: a rubric prompt whose only version is stable in
    staging."""

    def make(key: str, schema: Any, *, model: str = "echo-1", variables=None, deploy=True):
        prompt = PromptFactory(key=key)
        instruction = "Answer: {{ output }}{% if expected %} Expected: {{ expected }}{% endif %}"
        if variables is None:
            instruction += "{% if input %} Input: {{ input }}{% endif %}"
        make_version(
            prompt,
            variables=variables
            or [
                {"name": "output", "type": "string", "required": True},
                {"name": "expected", "type": "string", "required": False},
                {"name": "input", "type": "string", "required": False},
            ],
            model={"provider": "local", "model": model, "response_schema": schema},
            templates={
                "en": {
                    "system": "You grade answers. Score from 0 to 1.",
                    "instruction": instruction,
                }
            },
        )
        if deploy:
            release_deploy(
                prompt=prompt,
                environment=environments["staging"],
                version=1,
                actor=manager,
                reason="rubric",
            )
        return prompt

    return make


def judge_expectation(key: str, **extra: Any) -> dict[str, Any]:
    return {"scorer": "llm_judge", "prompt": key, "environment": "staging", **extra}


def judged(output: str, expectation: dict[str, Any], **kwargs: Any) -> Score:
    """Scored as an eval run scores: by the judge that asks the registry."""
    return score(output, expectation, judge=registry_judge, **kwargs)


def test_a_released_rubric_judges_through_the_model(rubric, model_server) -> None:
    rubric("qa.rubric-pass", PASSING)
    result = judged(
        "Your refund is on its way",
        judge_expectation("qa.rubric-pass", expected="a refund"),
        inputs={"customer_name": "Ada"},
    )
    assert result.passed is True, result.detail
    assert result.score == 1.0
    # The reason is the fake's echo of what the rubric was rendered with.
    assert result.detail.startswith("Judged 1 (pass at 0.5): Answer: Your refund is on its way")
    [request] = model_server.requests.for_path(CHAT)
    prompt_text = request.body["messages"][-1]["content"]
    assert "Expected: a refund" in prompt_text
    assert 'Input: {"customer_name": "Ada"}' in prompt_text
    assert request.body["response_format"]["type"] == "json_schema"
    assert not Call.objects.exists()  # a judgement is not traffic


def test_a_judgement_is_counted_as_the_judge_s_model_call(rubric, model_server) -> None:
    rubric("qa.rubric-pass", PASSING)
    rubric("qa.rubric-down", PASSING, model="fault-500")
    labels = {"source": "judge", "version": "1", "variant": "stable", "provider": "local"}
    judged_ok = counting(
        "promptregistry_model_calls_total",
        **labels,
        prompt="qa.rubric-pass",
        model="echo-1",
        outcome="ok",
    )
    judged_failed = counting(
        "promptregistry_model_calls_total",
        **labels,
        prompt="qa.rubric-down",
        model="fault-500",
        outcome="server_error",
    )

    judged("x", judge_expectation("qa.rubric-pass"))
    judged("x", judge_expectation("qa.rubric-down"))

    assert (judged_ok(), judged_failed()) == (1, 1)


def test_a_low_judged_score_fails(rubric, model_server) -> None:
    rubric("qa.rubric-fail", FAILING)
    result = judged("Whatever", judge_expectation("qa.rubric-fail"))
    assert (result.passed, result.score) == (False, 0.0)
    assert result.detail.startswith("Judged 0 (pass at 0.5): ")
    assert judged("Whatever", judge_expectation("qa.rubric-fail", pass_threshold=0)).passed


def test_a_judge_answer_out_of_range_fails(rubric, model_server) -> None:
    # A schema that does not bound the score: the model's 2 is valid against it, not for us.
    rubric("qa.rubric-loose", rubric_schema({"type": "number", "minimum": 2}))
    result = judged("x", judge_expectation("qa.rubric-loose"))
    assert result == Score(
        False, 0.0, "judge failed: the score must be a number from 0 to 1, not 2"
    )


def test_a_rubric_that_is_not_released_fails_to_judge(rubric, model_server) -> None:
    rubric("qa.rubric-draft", PASSING, deploy=False)
    for key, environment in (("qa.rubric-draft", "staging"), ("no.such", "staging")):
        result = judged("x", {**judge_expectation(key), "environment": environment})
        assert result == Score(False, 0.0, f"judge failed: {key} has no release in staging")
    other = judged("x", {**judge_expectation("qa.rubric-draft"), "environment": "nowhere"})
    assert other.detail == "judge failed: qa.rubric-draft has no release in nowhere"
    assert model_server.requests.for_path(CHAT) == []


def test_a_failing_model_fails_to_judge(rubric, model_server) -> None:
    rubric("qa.rubric-down", PASSING, model="fault-500")
    result = judged("x", judge_expectation("qa.rubric-down"))
    assert (result.passed, result.score) == (False, 0.0)
    assert result.detail.startswith("judge failed: No model answered after 3 attempts")
    assert "server_error" in result.detail
    assert len(model_server.waits) == 2  # the binding's retries ran, with backoff


def test_a_model_answering_bad_json_fails_to_judge(rubric, model_server) -> None:
    rubric("qa.rubric-badjson", PASSING, model="fault-badjson")
    result = judged("x", judge_expectation("qa.rubric-badjson"))
    assert result.passed is False
    assert "schema_invalid" in result.detail


def test_a_prompt_breaking_the_rubric_contract_fails_before_any_call(rubric, model_server) -> None:
    rubric("qa.not-a-rubric", {"type": "object", "properties": {"verdict": {"type": "string"}}})
    result = judged("x", judge_expectation("qa.not-a-rubric"))
    assert result.passed is False
    assert result.detail.startswith("judge failed: qa.not-a-rubric v1 is no rubric: ")
    assert "must require 'score' as a number" in result.detail
    assert model_server.requests.for_path(CHAT) == []


def test_a_rubric_requiring_expected_fails_when_the_case_has_none(rubric, model_server) -> None:
    rubric(
        "qa.rubric-strict",
        PASSING,
        variables=[
            {"name": "output", "type": "string", "required": True},
            {"name": "expected", "type": "string", "required": True},
        ],
    )
    result = judged("x", judge_expectation("qa.rubric-strict"))
    assert result.passed is False
    assert "expected" in result.detail
    assert model_server.requests.for_path(CHAT) == []
    assert judged("x", judge_expectation("qa.rubric-strict", expected="y")).passed
