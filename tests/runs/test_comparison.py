"""runs.comparison: how a shadow's answer compares with the live one. Pure, no database."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs.comparison import (
    MAX_DIFF_ENTRIES,
    MAX_TOKENS,
    MAX_VALUE_CHARS,
    Comparison,
    compare,
    normalize_text,
    similarity,
)

# --- text answers -------------------------------------------------------------------------------


def test_text_answers_match_exactly_up_to_whitespace_runs_and_ends() -> None:
    result = compare("Refund  issued.\n\nThanks!\n", "  Refund issued. Thanks!", structured=False)
    assert result == Comparison(exact_match=True, similarity=1.0, structure_diff=None)


@pytest.mark.parametrize(
    ("live", "shadow"),
    [
        ("Refund issued.", "refund issued."),  # case is part of the answer
        ("Refund issued.", "Refund issued"),  # so is punctuation
        ("Refund issued.", "Refundissued."),  # and where the spaces are
    ],
)
def test_other_differences_are_not_an_exact_match(live: str, shadow: str) -> None:
    assert compare(live, shadow, structured=False).exact_match is False


def test_similarity_ignores_case_but_exact_match_does_not() -> None:
    result = compare("Refund ISSUED", "refund issued", structured=False)
    assert result.exact_match is False
    assert result.similarity == 1.0


def test_a_closer_answer_is_more_similar() -> None:
    live = "Your refund of 20 euros was issued today and arrives within five days."
    close = "Your refund of 20 euros was issued today and should arrive within five days."
    far = "We cannot refund this order because the return window has closed."
    assert compare(live, close, structured=False).similarity < 1.0
    assert compare(live, close, structured=False).similarity > 0.7
    assert compare(live, far, structured=False).similarity < 0.3


def test_word_order_counts() -> None:
    assert compare("dog bites man", "man bites dog", structured=False).similarity < 1.0


@pytest.mark.parametrize(
    ("live", "shadow", "expected"),
    [
        ("", "", 1.0),
        ("   ", "\n", 1.0),
        ("", "yes", 0.0),
        ("yes", "no", 0.0),
        ("Yes.", "Yes", 0.5),  # {yes, ., (yes, .)} against {yes}: 2 * 1 / (3 + 1)
    ],
)
def test_similarity_at_the_edges(live: str, shadow: str, expected: float) -> None:
    assert compare(live, shadow, structured=False).similarity == pytest.approx(expected)


def test_only_the_first_max_tokens_count() -> None:
    """The cost is bounded: what differs past MAX_TOKENS tokens is not seen by similarity (it
    still is by exact_match)."""
    common = "word " * MAX_TOKENS
    result = compare(common + "live ending", common + "shadow ending", structured=False)
    assert result.exact_match is False
    assert result.similarity == 1.0


def test_normalize_text_collapses_unicode_whitespace() -> None:
    assert normalize_text("\u00a0a\u2003\tb\r\n") == "a b"


def test_a_comparison_is_immutable() -> None:
    result = compare("a", "b", structured=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.exact_match = True  # type: ignore[misc]


# --- structured answers -------------------------------------------------------------------------


def test_structured_answers_match_whatever_the_key_order_and_layout() -> None:
    live = '{"title": "Refund", "items": [1, 2], "meta": {"a": null, "b": true}}'
    shadow = '{\n  "meta": {"b": true, "a": null},\n  "items": [1, 2],\n  "title": "Refund"\n}'
    assert compare(live, shadow, structured=True) == Comparison(
        exact_match=True, similarity=1.0, structure_diff=[]
    )


def test_equal_numbers_match_but_a_boolean_is_not_a_number() -> None:
    assert compare('{"n": 1}', '{"n": 1.0}', structured=True).exact_match is True
    result = compare('{"n": 1}', '{"n": true}', structured=True)
    assert result.exact_match is False
    assert result.structure_diff == [
        {"path": "/n", "change": "type", "live": "number", "shadow": "boolean"}
    ]


def test_the_diff_lists_each_difference_with_a_json_pointer() -> None:
    live = '{"a": 1, "b": [1, 2, {"x/y": "z", "t~": 1}], "d": {"e": "same"}}'
    shadow = '{"b": [1, 3, {"x/y": true, "t~": 1}, 4], "c": null, "d": {"e": "same"}}'
    result = compare(live, shadow, structured=True)
    assert result.exact_match is False
    assert result.structure_diff == [
        {"path": "/a", "change": "removed", "live": 1},
        {"path": "/b/1", "change": "changed", "live": 2, "shadow": 3},
        {"path": "/b/2/x~1y", "change": "type", "live": "string", "shadow": "boolean"},
        {"path": "/b/3", "change": "added", "shadow": 4},
        {"path": "/c", "change": "added", "shadow": None},
    ]
    assert 0.0 < result.similarity < 1.0


def test_a_tilde_in_a_key_is_escaped() -> None:
    result = compare('{"a~b": 1}', '{"a~b": 2}', structured=True)
    assert result.structure_diff == [{"path": "/a~0b", "change": "changed", "live": 1, "shadow": 2}]


def test_a_different_root_is_one_entry_at_the_empty_path() -> None:
    assert compare("[1]", '{"a": 1}', structured=True).structure_diff == [
        {"path": "", "change": "type", "live": "array", "shadow": "object"}
    ]
    assert compare('"yes"', '"no"', structured=True).structure_diff == [
        {"path": "", "change": "changed", "live": "yes", "shadow": "no"}
    ]


def test_the_diff_is_capped_and_says_how_much_it_left_out() -> None:
    live = json.dumps({f"k{i:03}": i for i in range(120)})
    shadow = json.dumps({f"k{i:03}": -i for i in range(1, 120)})  # k000 removed, the rest changed
    diff = compare(live, shadow, structured=True).structure_diff
    assert diff is not None
    assert len(diff) == MAX_DIFF_ENTRIES + 1
    assert diff[0] == {"path": "/k000", "change": "removed", "live": 0}
    assert diff[1] == {"path": "/k001", "change": "changed", "live": 1, "shadow": -1}
    assert diff[-1] == {"path": "", "change": "truncated", "omitted": 120 - MAX_DIFF_ENTRIES}


def test_long_values_are_shortened_and_short_ones_kept() -> None:
    long_text = "x" * 500
    big = {"items": list(range(100))}
    small = {"a": [1, 2]}
    live = json.dumps({"text": long_text, "big": big, "small": small})
    shadow = json.dumps({"text": "short"})
    diff = compare(live, shadow, structured=True).structure_diff
    assert diff == [
        {"path": "/big", "change": "removed", "live": diff[0]["live"]},
        {"path": "/small", "change": "removed", "live": small},
        {
            "path": "/text",
            "change": "changed",
            "live": "x" * (MAX_VALUE_CHARS - 1) + "…",
            "shadow": "short",
        },
    ]
    shown_big = diff[0]["live"]
    assert len(shown_big) == MAX_VALUE_CHARS
    assert shown_big.startswith('{"items": [0, 1, 2')
    assert shown_big.endswith("…")


@pytest.mark.parametrize(
    ("live", "shadow", "live_side", "shadow_side"),
    [
        ("Sure! {", '{"a": 1}', "invalid JSON", "valid JSON"),
        ('{"a": 1}', "", "valid JSON", "invalid JSON"),
        ("NaN", "NaN", "invalid JSON", "invalid JSON"),  # not JSON, and never equal to itself
        ('{"a": Infinity}', '{"a": 1}', "invalid JSON", "valid JSON"),
    ],
)
def test_an_unparseable_side_falls_back_to_text(
    live: str, shadow: str, live_side: str, shadow_side: str
) -> None:
    result = compare(live, shadow, structured=True)
    assert result.structure_diff is not None
    [entry] = result.structure_diff
    assert entry["path"] == ""
    assert entry["change"] == "unparseable"
    assert entry["live"].startswith(live_side)
    assert entry["shadow"].startswith(shadow_side)
    text = compare(live, shadow, structured=False)
    assert (result.exact_match, result.similarity) == (text.exact_match, text.similarity)


def test_the_same_unparseable_answer_is_still_an_exact_match() -> None:
    result = compare("Sorry, I cannot help.", "Sorry, I  cannot help.\n", structured=True)
    assert result.exact_match is True
    assert result.similarity == 1.0
    assert result.structure_diff is not None
    assert result.structure_diff[0]["change"] == "unparseable"


def test_the_reason_names_where_the_json_breaks() -> None:
    [entry] = compare('{"a": 1,}', "{}", structured=True).structure_diff or []
    assert "line 1, column 8" in entry["live"]


def test_deeply_nested_answers_are_walked_without_recursion() -> None:
    depth = 5000
    live = "[" * depth + "1" + "]" * depth
    shadow = "[" * depth + "2" + "]" * depth
    result = compare(live, shadow, structured=True)
    assert result.exact_match is False
    assert result.structure_diff == [
        {"path": "/0" * depth, "change": "changed", "live": 1, "shadow": 2}
    ]


def test_structured_similarity_is_over_the_canonical_json() -> None:
    live = '{"b": 2, "a": 1}'
    shadow = '{"a": 1, "b": 3}'
    result = compare(live, shadow, structured=True)
    assert result.similarity == similarity('{"a": 1, "b": 2}', '{"a": 1, "b": 3}')
    assert 0.5 < result.similarity < 1.0


# --- properties ---------------------------------------------------------------------------------

words = st.lists(
    st.sampled_from(["refund", "issued", "today", "Order", "the", ",", ".", "  ", "\n", "a1"]),
    max_size=30,
).map(" ".join)
answers = st.one_of(st.text(max_size=60), words)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=15,
)
json_texts = st.one_of(json_values.map(json.dumps), st.text(max_size=20))


@settings(max_examples=300)
@given(answers, answers, st.booleans())
def test_similarity_is_symmetric_and_bounded(live: str, shadow: str, structured: bool) -> None:
    forward = compare(live, shadow, structured=structured)
    backward = compare(shadow, live, structured=structured)
    assert forward.similarity == backward.similarity
    assert forward.exact_match == backward.exact_match
    assert 0.0 <= forward.similarity <= 1.0


@settings(max_examples=300)
@given(json_texts, json_texts)
def test_structured_comparison_is_symmetric_and_bounded(live: str, shadow: str) -> None:
    forward = compare(live, shadow, structured=True)
    backward = compare(shadow, live, structured=True)
    assert forward.similarity == backward.similarity
    assert forward.exact_match == backward.exact_match
    assert 0.0 <= forward.similarity <= 1.0
    assert forward.structure_diff is not None
    assert len(forward.structure_diff) <= MAX_DIFF_ENTRIES + 1


@settings(max_examples=300)
@given(st.one_of(answers, json_texts), st.booleans())
def test_an_answer_compared_with_itself_is_an_exact_match(answer: str, structured: bool) -> None:
    result = compare(answer, answer, structured=structured)
    assert result.exact_match is True
    assert result.similarity == 1.0


@settings(max_examples=300)
@given(json_values, json_values)
def test_exact_match_implies_full_similarity(live: object, shadow: object) -> None:
    for structured in (True, False):
        result = compare(json.dumps(live), json.dumps(shadow), structured=structured)
        if result.exact_match:
            assert result.similarity == 1.0
    structured_result = compare(json.dumps(live), json.dumps(shadow), structured=True)
    assert structured_result.exact_match == (structured_result.structure_diff == [])


@settings(max_examples=200)
@given(json_values)
def test_reformatting_a_json_answer_keeps_it_an_exact_match(value: object) -> None:
    compact = json.dumps(value, separators=(",", ":"))
    pretty = json.dumps(value, indent=2, sort_keys=True)
    assert compare(compact, pretty, structured=True).exact_match is True
