"""Version diffs are bounded before they run (issue 12, finding 7b): past
``VERSION_DIFF_MAX_LINES`` differing lines a section is one replaced block, flagged ``coarse``,
never a quadratic ``SequenceMatcher`` (a 50,000-character section once took ~27 s)."""

from __future__ import annotations

import difflib

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from registry.linediff import line_diff_bounded, line_diff_coarse, unified_text
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
