"""Redaction of what a model call carries before it is stored (DESIGN.md, "Call / Outcome").

Each match is replaced by a placeholder naming its kind, ``[secret]``, ``[api_key]``, ``[email]``,
``[ip]``, ``[iban]``, ``[card]`` or ``[phone]``, so a stored answer still reads ("write to
[email]") and two answers redacted the same way still compare equal. The rules in force are
``settings.RUNS_REDACTION_RULES`` (read at call time); an unknown name there is a system check error
(``redaction_rules_check``, registered by ``RunsConfig.ready()``) and a ``ValueError`` at call time,
never a rule skipped. ``settings.RUNS_REDACTION_CUSTOM_RULES`` adds the operator's own regexes
(``[name]`` placeholders), always in force, run first, checked the same way
(``runs.redaction_secrets``).

Order. The rules always run in the order of ``Rule`` whatever the order of the setting, most
specific first, because the later rules would otherwise eat part of an earlier kind's text and leave
the rest in clear:

1. ``secret``: the value after ``password:`` or ``api_key=`` is a secret whatever its shape, and
   may look like any of the others;
2. ``api_key``: keys carry digit runs (a card or a phone to rules 6–7) and capitals with digits;
3. ``email``: a local part may hold digits or ``+44…``;
4. ``ip``: dotted quads and colon groups, which rules 6–7 would otherwise judge as numbers;
5. ``iban``: its BBAN is digits in groups of four, which rules 6–7 would take for a card or a phone;
6. ``card``: ``3782 822463 10005`` is also phone-shaped;
7. ``phone``: the loosest shape, last.

What each rule takes (and leaves); ``secret``, ``ip`` and the AWS secret keys of ``api_key`` are
described in ``runs.redaction_secrets``:

- ``email``: ``local@domain.tld``, the top-level label alphabetic (or ``xn--``).
- ``phone``: 7–15 digits in groups separated by single spaces, dots or dashes, with an optional
  ``+CC`` or ``00CC`` prefix and parenthesised groups (``(555) 123-4567``, ``+33 6 12 34 56 78``,
  ``020 7946 0958``, ``1-800-555-1234``); at most 11 digits without a prefix, 12 after a national
  ``0``. Left alone: dates with a 4-digit year (``2024-01-15``, ``15.01.2024``), times and ISO
  timestamps, version numbers (a one-digit group after the first: ``10.0.19041.1``), IPv4
  addresses, decimals, amounts grouped in thousands (``1 234 567``, ``1.234.567,89``), numbers
  glued to a word, a dash, a dot or a slash (order ids ``ORD-2024-000123``, ``A-17``, ``030/123``),
  zero-padded ids (``0000123456``), and bare digit runs unless written ``+…`` or with a national
  ``0`` prefix (``0612345678``): a bare ``1700000000`` is an id, an amount or a timestamp far more
  often than a phone. Two groups need a prefix (``+``, ``0``, parentheses) or the ``555-1234``
  shape. A run of numbers is only split at spaces: ``192.168.10.25`` is judged whole.
- ``card``: 13–19 digits, optionally grouped by single spaces or dashes, only when the Luhn check
  passes. Inside a longer run of groups the longest Luhn-valid window of whole groups is taken
  (``ref 12 4111 1111 1111 1111`` still loses its card); digits glued to a word or a decimal
  point (``x4111…``, ``0.4111…``) are not a card.
- ``iban``: country code, two check digits and the BBAN, with or without single spaces, of the
  registered length for the country (15–34 for a country not in ``IBAN_LENGTHS``), only when the
  ISO 7064 mod-97 check passes.
- ``api_key``: ``sk-…``/``sk-proj-…``, Stripe ``sk_live_…``, GitHub ``ghp_``/``gho_``/``ghu_``/
  ``ghs_``/``ghr_``/``github_pat_…``, Slack ``xox[abeoprs]-…``, AWS ``AKIA``/``ASIA`` + 16, Google
  ``AIza`` + 35, JWTs, ``Bearer <token>`` (kept as ``Bearer [api_key]``), and any run of 32 or more
  ``[A-Za-z0-9_-]`` that looks random: it switches between letters and digits five times, or twice
  within 16 characters free of ``-``/``_`` (random keys do; words and identifiers such as
  ``test_it_rejects_a_stale_revision_2`` do not). Hex digests are redacted too: a hex secret cannot
  be told from a hash. A bare canonical UUID is not (a request or record id, which the call
  record needs to be useful), nor a token that is part of an email or a host name.

``redact`` walks JSON-like values: strings anywhere are redacted, dict keys are kept as they are
(they are the caller's field names), an ``int`` (or an integral ``float``) of 13–19 digits that
passes Luhn becomes the string ``"[card]"``; other numbers are kept, since a bare number carries no
``+``, leading ``0`` or grouping to tell a phone from an amount. With the ``secret`` rule, the
value under a key named like a secret (``password``, ``apiKey``, ``client_secret``…) becomes
``"[secret]"`` whatever it is, a number or a whole object included.

Safety of the patterns: every pattern is linear, whatever the input. Bodies are possessive or
atomic (no backtracking), and the decisions that need context (Luhn, mod-97, dates, what a number
is glued to) are made in Python on the candidate. A run of numbers is judged whole, in windows of
at most ``MAX_GROUPS`` groups, and the search goes on after it; any other rejected candidate
resumes one character later, where a lookbehind (not after a word character) fails at once.
``redact_text`` repeats the rules until the text no longer changes (at most ``MAX_PASSES``): a
placeholder can free a neighbour that a glued boundary hid (``…@example.comsk-proj-…``: the key
starts after the address), and the repetition is what makes redaction idempotent. Placeholders
never match a rule, so each pass that changes the text redacts something new. Text settles in one
pass plus the one that confirms it; hypothesis, searching glued fragments for the longest chain,
found none longer than three passes. The cap only bounds the cost of input crafted to chain.

Pure module: no models, only the settings and the system-check framework.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.core import checks

from .redaction_scan import Span, glued, scan
from .redaction_secrets import (
    custom_rule_problems,
    custom_rules,
    redact_aws_secrets,
    redact_custom,
    redact_ips,
    redact_secret_pairs,
    secret_name,
    secret_value,
)


class Rule(StrEnum):
    """The redaction rules, in the order they run (see the module docstring for why)."""

    SECRET = "secret"
    API_KEY = "api_key"
    EMAIL = "email"
    IP = "ip"
    IBAN = "iban"
    CARD = "card"
    PHONE = "phone"


RULES: tuple[str, ...] = tuple(rule.value for rule in Rule)
MAX_PASSES = 8
# A phone has at most 7 groups ("+44 (0) 20 7946 0958" has 5), a card 5.
MAX_GROUPS = 8


def placeholder(rule: Rule) -> str:
    return f"[{rule.value}]"


# --- api keys -----------------------------------------------------------------------------------

_KEY_START = r"(?<![\w-])"
_PREFIXED_KEY = re.compile(
    _KEY_START
    + r"(?:"
    + r"sk-[A-Za-z0-9_-]{20,}+"  # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-)
    + r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+"  # Stripe secret and restricted keys
    + r"|gh[pousr]_[A-Za-z0-9]{36,}+"  # GitHub tokens
    + r"|github_pat_[A-Za-z0-9_]{22,}+"
    + r"|xox[abeoprs]-[A-Za-z0-9-]{10,}+"  # Slack
    + r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key ids
    + r"|AIza[A-Za-z0-9_-]{35}"  # Google API keys
    + r"|eyJ[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+"  # JWTs
    + r")"
)
_BEARER = re.compile(r"(?<![\w-])(?i:bearer)[ \t]++(?P<token>[A-Za-z0-9._~+/=-]{12,}+)")
_LONG_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{32,}+")
_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_TOKEN_SEPARATORS = re.compile(r"[-_]")


def _prefixed_key(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    token = match.group()
    # An sk- key has digits; "sk-learn-model-selection-guide" is prose.
    if glued(text, match.end()) or (token.startswith("sk-") and not _has_digit(token)):
        return [], match.start() + 1
    return [Span(match.start(), match.end(), placeholder(Rule.API_KEY))], match.end()


def _bearer(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    start, end = match.span("token")
    while end > start and text[end - 1] == ".":  # the end of the sentence, not of the token
        end -= 1
    if end - start < 12 or not _has_digit(text[start:end]):  # "Bearer authentication" is prose
        return [], match.start() + 1
    return [Span(start, end, placeholder(Rule.API_KEY))], end


def _long_token(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    start, end = match.span()
    token = match.group()
    # Part of an email or a host name (the email rule takes it whole), or a bare UUID (an id).
    part_of_address = (start > 0 and text[start - 1] in "@.") or (
        end < len(text) and (text[end] == "@" or (text[end] == "." and glued(text, end + 1)))
    )
    if part_of_address or glued(text, end) or _UUID.fullmatch(token):
        return [], end
    if not _looks_random(token):
        return [], end
    return [Span(start, end, placeholder(Rule.API_KEY))], end


def _looks_random(token: str) -> bool:
    """Random keys switch between letters and digits often, and without ``-``/``_`` for long
    stretches; identifiers are words joined by ``_`` or ``-`` with the odd digit. Measured on random
    32-character keys: about 0.5 % of base62 ones and 4 % of base64url ones pass unnoticed."""
    if _letter_digit_switches(token) >= 5:
        return True
    return any(
        len(segment) >= 16 and _letter_digit_switches(segment) >= 2
        for segment in _TOKEN_SEPARATORS.split(token)
    )


def _has_digit(token: str) -> bool:
    return any(char.isdigit() for char in token)


def _letter_digit_switches(token: str) -> int:
    return sum(
        (before.isdigit() and after.isalpha()) or (before.isalpha() and after.isdigit())
        for before, after in pairwise(token)
    )


def _redact_api_keys(text: str) -> str:
    text = scan(text, _PREFIXED_KEY, _prefixed_key)
    text = scan(text, _BEARER, _bearer)
    text = redact_aws_secrets(text)
    return scan(text, _LONG_TOKEN, _long_token)


# --- emails -------------------------------------------------------------------------------------

_EMAIL_BODY = r"[\w.%+-]++@(?>[\w-]++(?:\.[\w-]++)++)"
_EMAIL = re.compile(r"(?<![\w.%+-])" + _EMAIL_BODY)
_EMAIL_RIGHT_AFTER = re.compile(_EMAIL_BODY)
_LEADING_LETTERS = re.compile(r"[^\W\d_]*")


def _email(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    local, _, domain = match.group().partition("@")
    labels = domain.split(".")
    # Trim what follows the top-level domain: "a@b.co.555" and "a@b.com555-1234" are an address
    # and a number.
    while len(labels) > 1 and not _is_tld(labels[-1]):
        letters = _LEADING_LETTERS.match(labels[-1])
        if letters is not None and _is_tld(letters.group()):
            labels[-1] = letters.group()
            break
        labels.pop()
    if len(labels) < 2 or not all(labels):
        return [], match.start() + 1
    end = match.start() + len(local) + 1 + len(".".join(labels))
    return [Span(match.start(), end, placeholder(Rule.EMAIL))], end


def _is_tld(label: str) -> bool:
    return (len(label) >= 2 and label.isalpha()) or (label.startswith("xn--") and len(label) > 4)


# --- IBANs --------------------------------------------------------------------------------------

# The registered lengths (SWIFT IBAN registry); a country missing here is checked against 15–34.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_SPACES = " \u00a0"
_IBAN = re.compile(r"(?<!\w)[A-Za-z]{2}[0-9]{2}(?:[ \u00a0]?+[A-Za-z0-9]){11,30}+")


def _iban(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    start = match.start()
    # Where each alphanumeric character of the candidate ends, spaces skipped.
    ends = [start + i + 1 for i, char in enumerate(match.group()) if char not in _IBAN_SPACES]
    country = match.group()[:2].upper()
    known = IBAN_LENGTHS.get(country)
    lengths = [known] if known else range(min(34, len(ends)), 14, -1)
    for length in lengths:
        if length > len(ends):
            continue
        end = ends[length - 1]
        if glued(text, end):
            continue
        compact = "".join(char for char in text[start:end] if char not in _IBAN_SPACES)
        if _mod97_valid(compact):
            return [Span(start, end, placeholder(Rule.IBAN))], end
    return [], start + 1


def _mod97_valid(iban: str) -> bool:
    """ISO 7064 MOD 97-10: move the first four characters to the end, letters to 10..35."""
    rearranged = (iban[4:] + iban[:4]).upper()
    remainder = 0
    for char in rearranged:
        digits = str(int(char, 36))  # "7" -> 7, "A" -> 10, ... "Z" -> 35
        remainder = int(str(remainder) + digits) % 97
    return remainder == 1


# --- numbers in groups (cards, phones) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Group:
    digits: str
    start: int  # of the group's text, a leading "+" or "(" included
    end: int
    separator: str  # the character before it, "" for none
    parenthesised: bool = False
    plus: bool = False


_NUMBER_SPACES = " \u00a0\u202f"


def _groups(text: str, match: re.Match[str]) -> list[_Group]:
    groups: list[_Group] = []
    for part in _GROUP.finditer(text, match.start(), match.end()):
        separator, body, digits = part.groups()
        start, end = part.span(2)
        plus = body[0] == "+"
        parenthesised = body[plus] == "("
        groups.append(_Group(digits, start, end, separator or "", parenthesised, plus))
    return groups


# One group of a candidate run: an optional separator, then "+CC", "(123)" or digits.
_GROUP = re.compile(
    r"(?P<separator>[ \u00a0\u202f.-])?+"
    r"(?P<body>\+?+\(?+(?P<digits>[0-9]++)\)?+)"
)


def _glued_before(text: str, index: int, glue: str) -> bool:
    """Whether the run starting at ``index`` continues a word, an id (``A-17``), or a number
    through one of ``glue`` (``0.41…``, ``10:30``; but ``tel:+49…`` and ``Tel.06…`` are free)."""
    if index == 0:
        return False
    before = text[index - 1]
    if before.isalnum() or before in "_+-":
        return True
    return before in glue and index > 1 and text[index - 2].isdigit()


def _glued_after(text: str, index: int) -> bool:
    """Whether the run ending at ``index`` runs on into a word (``15T10``), an id, a time
    (``10:30``) or a decimal part (``567,89``)."""
    return glued(text, index) or (
        index + 1 < len(text) and text[index] in ",.:/" and text[index + 1].isdigit()
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """A run of digit groups, judged whole: the search goes on after it, never inside it."""

    groups: list[_Group]
    splittable: list[bool]  # [k]: a window may begin or end between groups[k - 1] and groups[k]
    digits_before: list[int]  # [k]: how many digits groups[:k] hold

    @classmethod
    def of(cls, text: str, match: re.Match[str], *, splits: str, glue: str) -> _Run:
        """Windows split the run at a separator in ``splits``, and at its ends unless it is glued
        there to a word or a number (``glue``: see ``_glued_before``)."""
        groups = _groups(text, match)
        splittable = (
            [not _glued_before(text, match.start(), glue)]
            + [group.separator in splits for group in groups[1:]]
            + [not _glued_after(text, match.end())]
        )
        digits_before = [0]
        for group in groups:
            digits_before.append(digits_before[-1] + len(group.digits))
        return cls(groups, splittable, digits_before)

    def windows(
        self,
        lo: int,
        hi: int,
        *,
        min_digits: int,
        max_digits: int,
        valid: Callable[[int, int], bool],
    ) -> list[tuple[int, int]]:
        """Left to right within ``groups[lo:hi]``, the longest valid window ``groups[i:j]`` from
        each start ``i``; windows never overlap and hold ``min_digits``–``max_digits`` digits in
        at most ``MAX_GROUPS`` groups. So each start costs at most ``MAX_GROUPS`` calls of
        ``valid``, and a run stays linear even when it is 100 kB of ``1 1 1 1 …``."""
        found: list[tuple[int, int]] = []
        i = lo
        while i < hi:
            end = None
            if self.splittable[i]:
                for j in range(min(hi, i + MAX_GROUPS), i, -1):
                    digits = self.digits_before[j] - self.digits_before[i]
                    if digits < min_digits:
                        break
                    if digits <= max_digits and self.splittable[j] and valid(i, j):
                        end = j
                        break
            if end is None:
                i += 1
            else:
                found.append((i, end))
                i = end
        return found

    def spans(self, windows: Iterable[tuple[int, int]], rule: Rule) -> list[Span]:
        return [
            Span(self.groups[i].start, self.groups[j - 1].end, placeholder(rule))
            for i, j in sorted(windows)
        ]


# --- cards --------------------------------------------------------------------------------------

# A run of digit groups separated by single spaces or dashes.
_CARD_RUN = re.compile(r"(?<![0-9])[0-9]++(?:[ \u00a0\u202f-][0-9]++)*+")


def _card(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    if match.end() - match.start() < 13:  # fewer digits than any card
        return [], match.end()
    # Any separator splits: a card glued by a dash to other digits is still a card.
    run = _Run.of(text, match, splits=" \u00a0\u202f-", glue=".,")
    groups = run.groups
    digits = [int(char) for group in groups for char in group.digits]
    # Luhn sums of every prefix, once with the even positions doubled and once with the odd ones,
    # so any window's check costs O(1): the digits doubled are those two, four… places left of
    # the window's last digit, i.e. those whose index has the parity of the window's end.
    doubled_even, doubled_odd = [0], [0]
    for index, digit in enumerate(digits):
        double = digit * 2 - 9 if digit > 4 else digit * 2
        doubled_even.append(doubled_even[-1] + (double if index % 2 == 0 else digit))
        doubled_odd.append(doubled_odd[-1] + (double if index % 2 else digit))

    def luhn(i: int, j: int) -> bool:
        first, end = run.digits_before[i], run.digits_before[j]
        sums = doubled_odd if end % 2 else doubled_even
        return (sums[end] - sums[first]) % 10 == 0

    def card_shaped(i: int, j: int) -> bool:
        return _card_grouping(groups[i:j]) and luhn(i, j)

    # Grouped like a card first, so "555 123 4567 4111 1111 1111 1111" loses the card and not a
    # window of phone and card that passes Luhn by chance (one in ten does); then any Luhn-valid
    # window in what is left, so no card escapes for being oddly grouped.
    limits = {"min_digits": 13, "max_digits": 19}
    shaped = run.windows(0, len(groups), **limits, valid=card_shaped)
    others = []
    edges = [0, *(edge for window in shaped for edge in window), len(groups)]
    for lo, hi in zip(edges[::2], edges[1::2], strict=True):
        others.extend(run.windows(lo, hi, **limits, valid=luhn))
    return run.spans(shaped + others, Rule.CARD), match.end()


def _card_grouping(window: list[_Group]) -> bool:
    """One group, fours (the last one to four digits: 13–19), or Amex/Diners 4-6-5 and 4-6-4."""
    lengths = [len(group.digits) for group in window]
    if len(lengths) == 1:
        return True
    if all(length == 4 for length in lengths[:-1]) and 1 <= lengths[-1] <= 4:
        return True
    return lengths in ([4, 6, 5], [4, 6, 4])


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812): double every second digit from the right."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


# --- phones -------------------------------------------------------------------------------------

# A run of digit groups separated by single spaces, dots or dashes, with "+CC" and "(123)"
# groups.
_PHONE_RUN = re.compile(
    r"(?<![0-9])"
    r"(?>"
    r"(?:\+(?:[0-9]++|\([0-9]++\))|\(\+?+[0-9]++\)|[0-9]++)"
    r"(?:[ \u00a0\u202f.-]?+\([0-9]++\)|(?<=\))[ \u00a0\u202f.-]?+[0-9]++|[ \u00a0\u202f.-][0-9]++)*+"
    r")"
)


def _phone(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    if match.end() - match.start() < 7:  # fewer digits than any phone
        return [], match.end()
    # Split only at spaces: "192.168.10.25" or "2024-01-15" is one thing, judged whole.
    run = _Run.of(text, match, splits=_NUMBER_SPACES, glue=".,/:")
    windows = run.windows(
        0,
        len(run.groups),
        min_digits=7,
        max_digits=15,
        valid=lambda i, j: _phone_shaped(run.groups[i:j]),
    )
    return run.spans(windows, Rule.PHONE), match.end()


def _phone_shaped(window: list[_Group]) -> bool:
    first = window[0]
    digits = [group.digits for group in window]
    # "00" then a country code, or a national trunk "0" then an area code (neither starts with
    # 0: "0000123456" is a zero-padded id).
    joined = "".join(digits)
    international = first.plus or (joined.startswith("00") and joined[2:3] not in ("", "0"))
    trunk = joined.startswith("0") and joined[1:2] not in ("", "0")
    prefixed = international or trunk or first.parenthesised
    # E.164 allows 15 digits with the country code; national numbers are shorter
    # ("4111 1111 1111" is part of a card, not a phone).
    if len(joined) > (15 if international else 12 if trunk else 11):
        return False
    separators = {group.separator for group in window[1:]}
    if len(window) == 1:
        # A bare run: only with a "+" or a "0" prefix (else an id, an amount, a timestamp).
        return (first.plus and len(first.digits) >= 8) or (
            (international or trunk) and len(first.digits) >= 10
        )
    if separators == {"."} and len(window) == 2:
        return False  # a decimal number
    if any(
        len(group.digits) == 1 and not group.parenthesised and not (index == 1 and international)
        for index, group in enumerate(window)
        if index > 0
    ):
        return False  # a one-digit group after the first: a version number
    if len(window) == 2:
        us_local = len(digits[0]) == 3 and len(digits[1]) == 4 and separators <= {"-", " "}
        return prefixed or us_local
    if separators == {"."} and (len(window) == 4 and all(len(d) <= 3 for d in digits)):
        return False  # an IPv4 address
    if not prefixed and 1 <= len(digits[0]) <= 3 and all(len(d) == 3 for d in digits[1:]):
        return False  # an amount grouped in thousands
    return not any(_is_date(*window[k : k + 3]) for k in range(len(window) - 2))


def _is_date(a: _Group, b: _Group, c: _Group) -> bool:
    """``2024-01-15``, ``15.01.2024`` or ``01/15/2024``-like groups, with a 4-digit year."""
    if a.parenthesised or b.parenthesised or c.parenthesised:
        return False
    x, y, z = a.digits, b.digits, c.digits
    if len(x) == 4 and len(y) <= 2 and len(z) <= 2:
        return 1900 <= int(x) <= 2099 and 1 <= int(y) <= 12 and 1 <= int(z) <= 31
    if len(x) <= 2 and len(y) <= 2 and len(z) == 4:
        day_month = sorted((int(x), int(y)))
        return 1900 <= int(z) <= 2099 and 1 <= day_month[0] <= 12 and day_month[1] <= 31
    return False


# --- the rules ----------------------------------------------------------------------------------

_PASSES: dict[Rule, Callable[[str], str]] = {
    Rule.SECRET: redact_secret_pairs,
    Rule.API_KEY: _redact_api_keys,
    Rule.EMAIL: lambda text: scan(text, _EMAIL, _email, right_after=_EMAIL_RIGHT_AFTER),
    Rule.IP: redact_ips,
    Rule.IBAN: lambda text: scan(text, _IBAN, _iban),
    Rule.CARD: lambda text: scan(text, _CARD_RUN, _card),
    Rule.PHONE: lambda text: scan(text, _PHONE_RUN, _phone),
}


def _rules_in_force(rules: Sequence[str] | None) -> tuple[Rule, ...]:
    names = settings.RUNS_REDACTION_RULES if rules is None else rules
    if isinstance(names, str):
        raise TypeError("Redaction rules are a list of rule names, not one string.")
    unknown = sorted(set(names) - set(RULES))
    if unknown:
        # Never skip an unknown rule: a typo would store unredacted data without a word.
        raise ValueError(f"Unknown redaction rules {unknown}; known: {list(RULES)}.")
    return tuple(rule for rule in Rule if rule.value in names)


@dataclass(frozen=True, slots=True)
class _InForce:
    rules: tuple[Rule, ...]
    custom: tuple[tuple[str, re.Pattern[str]], ...]  # RUNS_REDACTION_CUSTOM_RULES, compiled


def _in_force(rules: Sequence[str] | None) -> _InForce:
    return _InForce(_rules_in_force(rules), custom_rules(reserved=RULES))


def redact_text(text: str, rules: Sequence[str] | None = None) -> str:
    """``text`` with every match of ``rules`` (None: ``settings.RUNS_REDACTION_RULES``) and of the
    custom rules replaced by its placeholder. Raises ``ValueError`` for an unknown rule name or a
    custom rule the system check refuses."""
    return _redact_text(text, _in_force(rules))


def _redact_text(text: str, in_force: _InForce) -> str:
    for _ in range(MAX_PASSES):
        before = text
        # The operator's own rules first: they know their ids better than the generic shapes do.
        text = redact_custom(text, in_force.custom)
        for rule in in_force.rules:
            text = _PASSES[rule](text)
        if text == before:
            break
    return text


def redact(value: Any, rules: Sequence[str] | None = None) -> Any:
    """A JSON-like ``value`` with its strings redacted (dict keys kept), integral numbers that
    are Luhn-valid card numbers replaced by ``"[card]"``, and, with the ``secret`` rule, every
    value under a key named like a secret (``password``, ``api_key``…) replaced by
    ``"[secret]"``. Tuples stay tuples; other values are returned as they are."""
    return _redact_value(value, _in_force(rules))


def _redact_value(value: Any, in_force: _InForce) -> Any:
    if isinstance(value, str):
        return _redact_text(value, in_force)
    if isinstance(value, dict):
        secrets = Rule.SECRET in in_force.rules
        return {
            key: (
                secret_value(item)
                if secrets and isinstance(key, str) and secret_name(key)
                else _redact_value(item, in_force)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item, in_force) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(item, in_force) for item in value)
    if Rule.CARD in in_force.rules and _is_card_number(value):
        return placeholder(Rule.CARD)
    return value


def _is_card_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return False
        value = int(value)
    if not isinstance(value, int) or not 10**12 <= abs(value) < 10**19:
        return False
    return luhn_valid(str(abs(value)))


# --- the system check ---------------------------------------------------------------------------


def redaction_rules_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``RUNS_REDACTION_RULES`` names known rules only (runs.E001, runs.E002); an empty list is a
    warning (runs.W001): every input and output would be stored as it came. Every custom rule
    compiles and is safe to run (runs.E003, ``custom_rule_problems``)."""
    names = settings.RUNS_REDACTION_RULES
    if isinstance(names, str) or not isinstance(names, list | tuple):
        return [
            checks.Error(
                "RUNS_REDACTION_RULES must be a list of rule names.",
                hint=f"For example {list(RULES)}.",
                id="runs.E002",
            )
        ]
    messages: list[checks.CheckMessage] = [
        checks.Error(
            f"Unknown redaction rule {name!r} in RUNS_REDACTION_RULES.",
            hint=f"Known rules: {', '.join(RULES)}. Until this is fixed, redaction refuses to run.",
            id="runs.E001",
        )
        for name in names
        if name not in RULES
    ]
    if not names:
        messages.append(
            checks.Warning(
                "RUNS_REDACTION_RULES is empty: call inputs and outputs are stored unredacted.",
                hint=f"Known rules: {', '.join(RULES)}.",
                id="runs.W001",
            )
        )
    messages += [
        checks.Error(
            problem,
            hint="RUNS_REDACTION_CUSTOM_RULES maps names to regexes, e.g. "
            '{"customer_id": "CUST-[0-9]{8}"}. Until this is fixed, redaction refuses to run.',
            id="runs.E003",
        )
        for problem in custom_rule_problems(settings.RUNS_REDACTION_CUSTOM_RULES, reserved=RULES)
    ]
    return messages
