"""Version diffs are bounded before they run (issue 12, finding 7b): past
``VERSION_DIFF_MAX_LINES`` differing lines a section is one replaced block, flagged ``coarse``,
never a quadratic ``SequenceMatcher`` (a 50,000-character section once took ~27 s)."""

from __future__ import annotations

import difflib

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from registry.linediff import (
    WORD_DIFF_MAX_TOKENS,
    Span,
    WordBudget,
    line_diff_bounded,
    line_diff_coarse,
    tokens,
    unified_text,
    word_diff,
)
from registry.selectors import version_diff
from tests.factories import make_version

lines = st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=12)


def rebuilt(a, b, opcodes):
    """Both texts back from the opcodes: every line accounted for, in order."""
    left, right = [], []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
        left += a[i1:i2]
        right += b[j1:j2]
    return left, right


@given(lines, lines)
def test_both_diffs_account_for_every_line(a, b):
    exact = line_diff_bounded(a, b, max_lines=100)
    coarse = line_diff_coarse(a, b)

    assert rebuilt(a, b, exact) == rebuilt(a, b, coarse) == (a, b)
    assert (exact == []) == (coarse == []) == (a == b == [])
    assert bool(unified_text(a, b, exact, "x")) == (a != b)


def test_the_unified_text_is_difflibs():
    a = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    b = ["one", "2", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

    opcodes = line_diff_bounded(a, b, max_lines=100)

    assert unified_text(a, b, opcodes, "en/system") == "\n".join(
        difflib.unified_diff(a, b, "en/system", "en/system", lineterm="")
    )


def test_past_the_limit_no_line_is_compared(monkeypatch):
    a = ["a", "b"] * 600 + ["same end"]
    b = ["b", "a"] * 600 + ["same end"]

    def refuse(*args, **kwargs):
        raise AssertionError("compared line by line past the limit")

    monkeypatch.setattr(difflib, "SequenceMatcher", refuse)

    assert line_diff_bounded(a, b, max_lines=1000) is None
    assert line_diff_coarse(a, b) == [
        ("replace", 0, 1200, 0, 1200),
        ("equal", 1200, 1201, 1200, 1201),
    ]


def test_shared_ends_do_not_count_toward_the_limit():
    common = [f"line {i}" for i in range(5000)]
    a = [*common, "old", *common]
    b = [*common, "new", *common]

    assert line_diff_bounded(a, b, max_lines=1) == [
        ("equal", 0, 5000, 0, 5000),
        ("replace", 5000, 5001, 5000, 5001),
        ("equal", 5001, 10001, 5001, 10001),
    ]


@pytest.mark.django_db
@override_settings(VERSION_DIFF_MAX_LINES=100)
def test_a_section_past_the_limit_is_diffed_coarsely_and_says_so(prompt):
    en = {"system": "Hi.", "instruction": "Greet {{ customer_name }}.\n" + "a\nb\n" * 200}
    make_version(prompt, templates={"en": en})
    changed = {**en, "instruction": "Greet {{ customer_name }}.\n" + "b\na\n" * 200}
    second = make_version(prompt, templates={"en": {**changed, "system": "Hello."}})

    diff = version_diff(before=prompt.versions.get(number=1), after=second)

    sections = {d.section: d for d in diff.templates}
    assert diff.coarse
    assert sections["instruction"].coarse
    assert [row.tag for row in sections["instruction"].rows] == ["equal", "replace"]
    assert sections["instruction"].unified.startswith("--- en/instruction\n+++ en/instruction\n@@")
    assert not sections["system"].coarse  # a small change stays line by line


# --- words inside a changed line (issue 13, item 7) -----------------------------------------------


def marked(spans):
    """A line as text with its changed spans in [brackets], to read a diff at a glance."""
    return "".join(f"[{s.text}]" if s.changed else s.text for s in spans)


texts = st.text(alphabet=st.sampled_from("ab é日 ,.<>&\t"), max_size=40)


@given(texts, texts)
def test_the_spans_give_back_both_lines_and_mark_only_differences(before, after):
    diff = word_diff(before, after, budget=WordBudget())

    assert "".join(s.text for s in diff.before) == before
    assert "".join(s.text for s in diff.after) == after
    assert all(s.text for s in diff.before + diff.after)  # no empty span
    if before == after:
        assert not any(s.changed for s in diff.before + diff.after)


def test_tokens_are_words_in_any_script_whitespace_runs_and_single_marks():
    assert tokens("Grüß dich,  日本語 {{ x }}!") == [
        "Grüß",
        " ",
        "dich",
        ",",
        "  ",
        "日本語",
        " ",
        "{",
        "{",
        " ",
        "x",
        " ",
        "}",
        "}",
        "!",
    ]


def test_a_changed_word_is_marked_and_nothing_else():
    diff = word_diff(
        "Refunds reach the card within 5 days.",
        "Refunds reach the card within 10 business days.",
        budget=WordBudget(),
    )

    assert marked(diff.before) == "Refunds reach the card within [5] days."
    assert marked(diff.after) == "Refunds reach the card within [10 business] days."
    assert diff.exact


def test_empty_lines():
    both = word_diff("", "", budget=WordBudget())
    assert (both.before, both.after, both.exact) == ([], [], True)
    added = word_diff("", "Hello there", budget=WordBudget())
    assert (added.before, added.after) == ([], [Span("Hello there", True)])


def test_a_change_of_whitespace_alone_is_marked():
    diff = word_diff("Say  hello", "Say hello", budget=WordBudget())

    assert marked(diff.before) == "Say[  ]hello"
    assert marked(diff.after) == "Say[ ]hello"
    trailing = word_diff("Say hello", "Say hello ", budget=WordBudget())
    assert marked(trailing.after) == "Say hello[ ]"


def test_unicode_words_are_compared_whole():
    diff = word_diff(
        "Annonce à {{ nom }} le remboursement", "Annonce à {{ nom }} l'avoir", budget=WordBudget()
    )

    assert marked(diff.before) == "Annonce à {{ nom }} [le remboursement]"
    assert marked(diff.after) == "Annonce à {{ nom }} [l'avoir]"


def test_unrelated_lines_are_one_change_not_confetti():
    diff = word_diff("The cat sat, quietly.", "A dog ran, fast.", budget=WordBudget())

    assert marked(diff.before) == "[The cat sat, quietly].", diff
    assert marked(diff.after) == "[A dog ran, fast]."


def test_html_in_the_text_is_text():
    diff = word_diff("<b>Hi</b> there", "<i>Hi</i> there", budget=WordBudget())

    assert marked(diff.before) == "<[b]>Hi</[b]> there"
    assert marked(diff.after) == "<[i]>Hi</[i]> there"


def test_a_huge_line_keeps_its_shared_ends_and_marks_its_middle_whole(monkeypatch):
    middle_a = " ".join(f"w{i}" for i in range(WORD_DIFF_MAX_TOKENS))
    middle_b = " ".join(f"v{i}" for i in range(WORD_DIFF_MAX_TOKENS))

    def refuse(*args, **kwargs):
        raise AssertionError("compared word by word past the limit")

    monkeypatch.setattr(difflib, "SequenceMatcher", refuse)
    diff = word_diff(f"Start. {middle_a} End.", f"Start. {middle_b} End.", budget=WordBudget())

    assert not diff.exact
    assert diff.before == [Span("Start. ", False), Span(middle_a, True), Span(" End.", False)]
    assert diff.after[1] == Span(middle_b, True)


def test_the_page_budget_bounds_the_work_of_every_line_together():
    budget = WordBudget(remaining=110)

    first = word_diff("a b c d e", "a x c y e", budget=budget)  # middle: 5 × 5 tokens
    second = word_diff("one two three four five six", "one 2 three 4 five 6", budget=budget)

    assert first.exact
    assert second.exact
    assert budget.remaining == 4
    assert not budget.exhausted
    third = word_diff("p q r s t u", "p 1 r 2 t 3", budget=budget)
    assert not third.exact
    assert budget.exhausted
    assert marked(third.before) == "p [q r s t u]"
