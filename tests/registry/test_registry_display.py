"""Numbers in people's units (registry/templatetags/registry_display.py): every formatter on its
ordinary values, its edges (zero, tiny, huge, negative, None, NaN) and as a template filter."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from django.template import Context, Template

from registry.templatetags.registry_display import (
    EMPTY,
    age,
    basis_points,
    count,
    decimal,
    money,
    ms,
    p_phrase,
    p_value,
    percent,
    percent_points,
    share_of_all,
    sig_figs,
    tokens_in_out,
)


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (0.25, "25 %"),
        (0.8055555555555556, "80.6 %"),  # the float's repr never reaches the page
        (0.0035, "0.35 %"),  # below 1 %: two decimals
        (0.00001, "< 0.01 %"),  # not a misleading "0 %"
        (0, "0 %"),
        (1, "100 %"),
        (0.9999, "100 %"),
        (-0.05, "-5 %"),
        (Decimal("0.125"), "12.5 %"),
        (1234.5, "123,450 %"),
    ],
)
def test_percent_writes_a_share_with_sensible_precision(share, expected) -> None:
    assert percent(share) == expected


def test_percent_signs_a_difference_on_request() -> None:
    assert percent(0.05, signed=True) == "+5 %"
    assert percent(-0.05, signed=True) == "-5 %"
    assert percent(0, signed=True) == "0 %"


@pytest.mark.parametrize("nothing", [None, float("nan"), float("inf"), ""])
def test_every_formatter_shows_no_value_as_a_dash(nothing) -> None:
    for formatter in (percent, percent_points, ms, age, count, money, p_value, decimal, sig_figs):
        assert formatter(nothing) == EMPTY, formatter.__name__


@pytest.mark.parametrize(
    ("weight", "expected"), [(500, "5 %"), (1250, "12.5 %"), (1, "0.01 %"), (10_000, "100 %")]
)
def test_basis_points_are_exact(weight, expected) -> None:
    assert basis_points(weight) == expected


def test_a_share_of_all_subjects_says_when_it_is_rounded() -> None:
    assert share_of_all(Fraction(1, 4)) == "25 %"
    assert share_of_all(Fraction(1, 3)) == "≈ 33.33 %"


@pytest.mark.parametrize(
    ("difference", "expected"),
    [
        (0.0125, "+1.25 points"),
        (-0.0031, "-0.31 points"),
        (0.00001, "0 points"),
        (0.2, "+20 points"),
    ],
)
def test_percent_points_write_a_difference_of_rates(difference, expected) -> None:
    assert percent_points(difference) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0 ms"),
        (0.01, "< 0.1 ms"),
        (0.4, "0.4 ms"),
        (12.6, "13 ms"),
        (1234.4, "1,234 ms"),
        (9_999.4, "9,999 ms"),
        (9_999.6, "10 s"),  # rounds up into seconds rather than "10,000 ms"
        (12_345, "12.3 s"),
        (30_000, "30 s"),
        (300_000, "5 min"),
        (5_400_000, "90 min"),
    ],
)
def test_ms_changes_unit_with_the_size_of_the_duration(value, expected) -> None:
    assert ms(value) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0 s"),
        (0.7, "0 s"),
        (-3, "0 s"),  # two clocks that disagree: never "-3 s"
        (45.9, "45 s"),
        (119, "119 s"),
        (120, "2 min"),
        (7_199, "119 min"),
        (7_200, "2 h"),
        (172_799, "47 h"),
        (172_800, "2 d"),
        (86_400 * 1_500, "1,500 d"),
    ],
)
def test_age_says_how_long_ago_in_whole_units(seconds, expected) -> None:
    assert age(seconds) == expected


def test_ms_signs_a_difference() -> None:
    assert ms(12.5, signed=True) == "+12 ms"  # banker's rounding of .5 is Python's; fine for ms
    assert ms(-1500, signed=True) == "-1,500 ms"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234, "1,234"),
        (12.5, "12.5"),
        (1234.6, "1,235"),
        (0, "0"),
        (-3, "-3"),
    ],
)
def test_count_has_thousands_separators(value, expected) -> None:
    assert count(value) == expected


def test_tokens_in_out() -> None:
    assert tokens_in_out(1200, 350) == "1,200 in / 350 out"
    assert tokens_in_out(None, 7) == "0 in / 7 out"
    assert tokens_in_out(None, None) == EMPTY


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (1234.5, "1,234.50"),
        (1, "1.00"),
        (0.5, "0.50"),
        (0.0123, "0.0123"),
        (0.012345, "0.0123"),
        (0.000123, "0.000123"),
        (Decimal("0.00200000"), "0.002"),
        (-1.185e-06, "-0.00000119"),  # the example, in plain decimals
        (0, "0.00"),
        (1e-12, "≈ 0"),
    ],
)
def test_money_keeps_three_significant_digits_of_small_costs(amount, expected) -> None:
    assert money(amount) == expected


def test_money_signs_a_difference() -> None:
    assert money(0.0000012, signed=True) == "+0.0000012"
    assert money(-2.5, signed=True) == "-2.50"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.032, "0.032"), (0.5, "0.5"), (0.00001, "< 0.0001"), (1.0, "1"), (0.04999, "0.05")],
)
def test_p_values_never_use_exponents(value, expected) -> None:
    assert p_value(value) == expected


def test_p_phrase_reads_in_a_sentence() -> None:
    assert p_phrase(0.032) == "p = 0.032"
    assert p_phrase(1e-9) == "p < 0.0001"


def test_sig_figs_write_small_thresholds_in_decimals() -> None:
    assert sig_figs(0.000034) == "0.000034"
    assert sig_figs(0.05) == "0.05"
    assert sig_figs(0.0012345, 3) == "0.00123"
    assert sig_figs(2.5) == "2.5"


def test_decimal_drops_trailing_zeros_and_negative_zero() -> None:
    assert decimal(0.8055555555555556) == "0.81"
    assert decimal(0.5, 3) == "0.5"
    assert decimal(-0.001) == "0"
    assert decimal(-1.25) == "-1.25"
    assert decimal(math.pi, 0) == "3"


def test_the_formatters_are_template_filters() -> None:
    template = Template(
        "{% load registry_display %}{{ share|percent }} · {{ latency|ms }} · {{ cost|money }} · "
        "{{ p|p_phrase }} · {{ n|count }} · {{ weight|basis_points }} · {{ similarity|decimal:3 }}"
    )
    rendered = template.render(
        Context(
            {
                "share": 0.8055555555555556,
                "latency": 1234.4,
                "cost": -1.185e-06,
                "p": 1e-7,
                "n": 12000,
                "weight": 1250,
                "similarity": 0.123456,
            }
        )
    )
    assert rendered == ("80.6 % · 1,234 ms · -0.00000119 · p &lt; 0.0001 · 12,000 · 12.5 % · 0.123")
