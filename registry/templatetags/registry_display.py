"""Numbers in people's units: the one place the admin turns a share, a latency, a count of tokens,
a cost or a p-value into text. Python code imports the functions; templates ``{% load
registry_display %}`` and use the same functions as filters (``{{ rate|percent }}``,
``{{ call.latency_ms|ms }}``, ``{{ cost|money }}``).

Every function takes ``None`` (no value) and answers ``EMPTY``; none ever writes an exponent
(``-1.185e-06``) or a float's full repr (``0.8055555555555556``). The rules:

1. percentages come from a share (0.25 → ``25 %``) or basis points (2500 → ``25 %``): whole
   numbers without decimals, one decimal otherwise, two below 1 %, and ``< 0.01 %`` for a share
   too small to show (never a misleading ``0 %``);
2. durations are milliseconds under ten seconds (``1,234 ms``, ``0.4 ms`` under one), then seconds
   (``12.3 s``), then minutes (``3.5 min``); ages (how long ago) are whole seconds, minutes,
   hours or days (``45 s``, ``12 min``);
3. costs carry no currency symbol (the price table's currency is whatever its prices were written
   in): two decimals from 1 up, up to four below 1, three significant digits below 0.01
   (``0.000123``), so the per-call costs of cheap models stay readable;
4. counts (tokens, calls) get thousands separators;
5. ``signed`` variants write differences: ``+12 ms``, ``-0.0000012``, ``+1.25 points``.

The space before ``%``, ``ms``, ``s`` and ``points`` is a plain space, as the release pages have
always written their percentages (``5 %``); tables keep number cells on one line in CSS.

Pure: no ORM, no settings; the registry app owns it because every other app may import from it
(the dependency direction in ``registry/__init__.py``).
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from django import template

register = template.Library()

EMPTY = "—"
P_FLOOR = 0.0001  # p-values below are written "< 0.0001": more digits claim a precision no test has
MINUS = "-"  # ASCII: what a reader types to search the page for a figure

Number = int | float | Decimal | Fraction


def _finite(value: Number | None) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _sign(value: float, signed: bool) -> str:
    if value < 0:
        return MINUS
    return "+" if signed and value > 0 else ""


def _trim(text: str, keep: int = 0) -> str:
    """Drops trailing zeros after the point, keeping at least ``keep`` decimals."""
    if "." not in text:
        return text
    whole, fraction = text.split(".")
    fraction = fraction.rstrip("0").ljust(keep, "0")
    return f"{whole}.{fraction}" if fraction else whole


def _decimals(value: float, places: int) -> str:
    """``value`` (not negative) with thousands separators and ``places`` decimals, trimmed."""
    return _trim(f"{value:,.{places}f}")


def _significant(value: float, digits: int) -> str:
    """``value`` (0 < value < 1) to ``digits`` significant digits, in plain decimal notation."""
    places = digits - 1 - math.floor(math.log10(value))
    return _trim(f"{value:.{places}f}")


# --- percentages -------------------------------------------------------------------------------


@register.filter
def percent(share: Number | None, signed: bool = False) -> str:
    """A share of one as a percentage: 0.25 → ``25 %``, 0.80555 → ``80.6 %``, 0.0035 →
    ``0.35 %``, 0.00001 → ``< 0.01 %``."""
    value = _finite(share)
    if value is None:
        return EMPTY
    hundred = abs(value) * 100
    sign = _sign(value, signed)
    if hundred == 0:
        return "0 %"
    if hundred < 0.01:
        return f"< {sign if sign == MINUS else ''}0.01 %"
    places = 2 if hundred < 1 else 1
    rounded = round(hundred, places)
    text = f"{rounded:,.0f}" if rounded == int(rounded) else _decimals(rounded, places)
    return f"{sign}{text} %"


@register.filter
def basis_points(weight: int | None) -> str:
    """Basis points as a percent, exact (weights are whole basis points): 500 → ``5 %``,
    1250 → ``12.5 %``, 1 → ``0.01 %``."""
    if weight is None:
        return EMPTY
    text = _trim(f"{Decimal(weight).scaleb(-2):f}")
    return f"{text} %"


def share_of_all(value: Fraction) -> str:
    """A share of all subjects as a percent. Shares multiply draws (a canary's rest times an
    experiment's variant), so they may need more than two decimals: those are rounded, and say so."""
    hundredths = value * 10_000
    if hundredths.denominator == 1:
        return basis_points(int(hundredths))
    return "≈ " + basis_points(round(hundredths))


@register.filter
def percent_points(difference: Number | None) -> str:
    """A difference between two rates, in percentage points: 0.0125 → ``+1.25 points``."""
    value = _finite(difference)
    if value is None:
        return EMPTY
    points = abs(value) * 100
    text = "0" if points < 0.005 else _decimals(points, 2)
    return f"{_sign(value, True) if text != '0' else ''}{text} points"


# --- durations ---------------------------------------------------------------------------------


@register.filter
def ms(milliseconds: Number | None, signed: bool = False) -> str:
    """A duration given in milliseconds: ``0.4 ms``, ``1,234 ms``, ``12.3 s``, ``3.5 min``."""
    value = _finite(milliseconds)
    if value is None:
        return EMPTY
    size, sign = abs(value), _sign(value, signed)
    if size == 0:
        return "0 ms"
    if size < 0.05:
        return "< 0.1 ms"
    if size < 1:
        return f"{sign}{_decimals(size, 1)} ms"
    if round(size) < 10_000:
        return f"{sign}{size:,.0f} ms"
    if round(size / 1000, 1) < 120:
        return f"{sign}{_decimals(size / 1000, 1)} s"
    return f"{sign}{_decimals(size / 60_000, 1)} min"


@register.filter
def age(seconds: Number | None) -> str:
    """How long ago, in whole units: ``0 s``, ``45 s``, ``12 min``, ``5 h``, ``3 d`` (seconds up
    to two minutes, minutes up to two hours, hours up to two days). A negative age (two clocks
    that disagree) is ``0 s``."""
    value = _finite(seconds)
    if value is None:
        return EMPTY
    value = max(0.0, value)
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 120), ("h", 3600, 48)):
        if value / size < up_to:
            return f"{math.floor(value / size)} {unit}"
    return f"{math.floor(value / 86_400):,} d"


# --- counts and costs --------------------------------------------------------------------------


@register.filter
def count(value: Number | None) -> str:
    """A count with thousands separators; a mean count (tokens per call) to one decimal below 100
    and whole above: ``1,234``, ``12.5``."""
    number = _finite(value)
    if number is None:
        return EMPTY
    if number == int(number) or abs(number) >= 100:
        return f"{_sign(number, False)}{abs(number):,.0f}"
    return f"{_sign(number, False)}{_decimals(abs(number), 1)}"


def tokens_in_out(input_tokens: Number | None, output_tokens: Number | None) -> str:
    """``1,200 in / 350 out``; ``EMPTY`` when neither is known."""
    if input_tokens is None and output_tokens is None:
        return EMPTY
    return f"{count(input_tokens or 0)} in / {count(output_tokens or 0)} out"


@register.filter
def money(amount: Number | None, signed: bool = False) -> str:
    """A cost in the price table's currency (no symbol): ``1,234.50``, ``0.0123``, ``0.000123``,
    ``-0.0000012`` (rule 3 of the module docstring)."""
    value = _finite(amount)
    if value is None:
        return EMPTY
    size, sign = abs(value), _sign(value, signed)
    if size == 0:
        return "0.00"
    if size < 1e-9:
        return f"≈ {'' if not signed else '±'}0"
    if size < 0.01:
        text = _significant(size, 3)
    elif size < 1:
        text = _trim(f"{size:.4f}", keep=2)
    else:
        text = f"{size:,.2f}"
    return f"{sign}{text}"


# --- statistics --------------------------------------------------------------------------------


@register.filter
def p_value(value: Number | None) -> str:
    """A p-value to two significant digits, ``< 0.0001`` below that: ``0.032``, ``0.5``."""
    number = _finite(value)
    if number is None:
        return EMPTY
    if number < P_FLOOR:
        return f"< {P_FLOOR}"
    return _significant(number, 2) if number < 1 else "1"


@register.filter
def p_phrase(value: Number | None) -> str:
    """``p = 0.032`` or ``p < 0.0001``, for a sentence."""
    text = p_value(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


@register.filter
def sig_figs(value: Number | None, digits: int = 2) -> str:
    """A small positive figure (a threshold, an alpha) to ``digits`` significant digits, never in
    exponent notation: 0.000034 → ``0.000034``, 0.05 → ``0.05``."""
    number = _finite(value)
    if number is None:
        return EMPTY
    if number == 0 or abs(number) >= 1:
        return decimal(number, int(digits))
    return f"{MINUS if number < 0 else ''}{_significant(abs(number), int(digits))}"


@register.filter
def decimal(value: Number | None, places: int = 2) -> str:
    """A plain measure (a similarity, a mean feedback score, a chi-square) to ``places`` decimals,
    trailing zeros dropped: 0.8055555 → ``0.81``."""
    number = _finite(value)
    if number is None:
        return EMPTY
    text = _decimals(abs(number), int(places))
    return f"{MINUS if number < 0 and text.strip('0.,') else ''}{text}"
