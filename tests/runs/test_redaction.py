"""runs.redaction: what is stored of a call's inputs and outputs. Pure, no database.

Each rule has what it must take and what it must leave (a redaction that eats dates, prices or
order ids makes the stored calls useless; one that misses a card is a leak). The system check is
run through Django's check framework with the setting overridden.
"""

from __future__ import annotations

import re

import pytest
from django.core import checks
from hypothesis import given, settings
from hypothesis import strategies as st

from runs.redaction import RULES, Rule, luhn_valid, redact, redact_text, redaction_rules_check

ALL = list(RULES)

# --- each rule: what it takes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe@example.com today", "write to [email] today"),
        ("Jöhn+tag@sub.example.co.uk", "[email]"),
        ("<mailto:a_b-c%d@x-y.io>", "<mailto:[email]>"),
        ("ends a sentence: ops@example.org.", "ends a sentence: [email]."),
        ("a@b.co.555 and more", "[email].555 and more"),
        ("user@xn--bcher-kva.example", "[email]"),
    ],
)
def test_it_redacts_emails(text: str, expected: str) -> None:
    assert redact_text(text, ALL) == expected


@pytest.mark.parametrize(
    "text",
    ["@dataclass", "user@localhost", "me @ home", "a@b", "price@1.5", "x@y.z", "@@@"],
)
def test_it_leaves_what_only_looks_like_an_email(text: str) -> None:
    assert redact_text(text, ALL) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +1 (555) 123-4567 now", "call [phone] now"),
        ("555-123-4567", "[phone]"),
        ("555.123.4567", "[phone]"),
        ("555 123 4567, then 2 rings", "[phone], then 2 rings"),
        ("(555) 123-4567", "[phone]"),
        ("1-800-555-1234", "[phone]"),
        ("555-1234", "[phone]"),
        ("+33 6 12 34 56 78", "[phone]"),
        ("06 12 34 56 78", "[phone]"),
        ("06.12.34.56.78", "[phone]"),
        ("0612345678", "[phone]"),
        ("+33612345678", "[phone]"),
        ("020 7946 0958", "[phone]"),
        ("+44 (0) 20 7946 0958", "[phone]"),
        ("0044 20 7946 0958", "[phone]"),
        ("07911 123456", "[phone]"),
        ("030 1234567", "[phone]"),
        ("tel:+49-30-1234567", "tel:[phone]"),
        ("ORD-2024-000123 555 123 4567", "ORD-2024-000123 [phone]"),
        ("phone\u00a0+1\u00a0555\u00a0123\u00a04567", "phone\u00a0[phone]"),
    ],
)
def test_it_redacts_phone_numbers(text: str, expected: str) -> None:
    assert redact_text(text, ALL) == expected


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15 at noon",
        "on 15.01.2024",
        "on 01/15/2024",
        "at 2024-01-15T10:30:00Z",
        "at 2024-01-15T10:30:00+01:00",
        "at 2024-01-15 10:30:00",
        "version 1.2.3",
        "Windows 10.0.19041.1",
        "v1.22.3333",
        "order A-17",
        "order ORD-2024-000123",
        "order #2024-000123",
        "price $1,234.56",
        "1 234 567,89 €",
        "1.234.567,89 EUR",
        "10 000 000 people",
        "epoch 1700000000",
        "invoice 0000123456",
        "pi is 3.14159265",
        "0.12345678",
        "12345",
        "room 12, floor 3",
        "030/1234567",
    ],
)
def test_it_leaves_dates_versions_prices_and_ids(text: str) -> None:
    assert redact_text(text, ALL) == text


def luhn_complete(body: str) -> str:
    """``body`` with the check digit that makes it Luhn-valid."""
    return next(body + digit for digit in "0123456789" if luhn_valid(body + digit))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111.", "card [card]."),
        ("4111-1111-1111-1111", "[card]"),
        ("4111111111111111", "[card]"),
        ("amex 3782 822463 10005", "amex [card]"),
        ("13 digits 4222222222222", "13 digits [card]"),
        # 19 digits that fail Luhn, whose first 16 are a (Discover test) card.
        ("6011 0009 9013 9424 123", "[card] 123"),
        # A phone before a card: the window grouped like a card wins over one that straddles both.
        ("+1 555 123 4567 4111 1111 1111 1111", "[phone] [card]"),
        ("ref 12 4111 1111 1111 1111 end", "ref 12 [card] end"),
        ("ref12 4111 1111 1111 1111", "ref12 [card]"),
        ("/cards/5500000000000004/", "/cards/[card]/"),
        ("(5500 0000 0000 0004)", "([card])"),
    ],
)
def test_it_redacts_card_numbers_that_pass_luhn(text: str, expected: str) -> None:
    assert redact_text(text, ALL) == expected


def test_a_nineteen_digit_card_is_a_card() -> None:
    card = luhn_complete("601100099013942412")
    assert redact_text(f"pan {card}", ALL) == "pan [card]"


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "4111111111111112",
        "1234 5678 9012 3456",
        "x4111111111111111",  # glued to a word: part of an identifier
        "0.4111111111111111",  # a decimal
        "A-4111-1111-1111-1111",  # an id
        "411111111111",  # 12 digits: too short
        "41111111111111111111111",  # 23 digits: too long, and not split
    ],
)
def test_it_leaves_numbers_that_are_not_cards(text: str) -> None:
    assert redact_text(text, ALL) == text


VALID_IBANS = [
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "DE89 3704 0044 0532 0130 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "BE68 5390 0754 7034",
    "NO93 8601 1117 947",
    "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
    "gb82 west 1234 5698 7654 32",
]


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_it_redacts_ibans_that_pass_mod_97(iban: str) -> None:
    assert redact_text(f"pay to {iban}, thanks", ALL) == "pay to [iban], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "GB83WEST12345698765432",  # wrong check digits
        "GB82WEST12345698765433",  # a changed BBAN digit
        "GB82WEST1234569876543",  # one character short for GB
        "GB82WEST12345698765432X",  # glued to more
        "DE88370400440532013000",
        "AB12 word 1234",
    ],
)
def test_it_leaves_ibans_that_fail_the_check(text: str) -> None:
    assert redact_text(text, ALL) == text


def test_a_spaced_iban_that_fails_the_check_is_no_iban_but_may_hold_a_phone() -> None:
    # Its BBAN groups are judged like any other digits; over-redacting is the safe side.
    assert redact_text("GB83 WEST 1234 5698 7654 32", ALL) == "GB83 WEST 1234 [phone]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-abc123DEF456ghi789JKL012mno345", "key [api_key]"),
        ("sk-ant-api03-AbCdEf0123456789GhIj", "[api_key]"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[api_key]"),
        ("ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "[api_key]"),
        ("gho_0123456789abcdefghijklmnopqrstuvwxyzAB", "[api_key]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[api_key]"),
        ("xoxb-1234567890-abcdefghij", "[api_key]"),
        ("xoxp-1234567890-0987654321-abcdef", "[api_key]"),
        ("AKIAIOSFODNN7EXAMPLE", "[api_key]"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "[api_key]"),
        # The secret rule runs first and takes a value named like a secret whole.
        ("Authorization: Bearer abc123def456ghi789.", "Authorization: Bearer [secret]."),
        ("header Bearer abc123def456ghi789.", "header Bearer [api_key]."),
        ("bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", "bearer [api_key]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-nature_1", "jwt [api_key]"),
        ("token=a8Fk29dLq0ZxP3mN7vR2tY6uW1sB4cE9&x=1", "token=[secret]&x=1"),
        ("t=a8Fk29dLq0ZxP3mN7vR2tY6uW1sB4cE9&x=1", "t=[api_key]&x=1"),
        ("md5 d41d8cd98f00b204e9800998ecf8427e", "md5 [api_key]"),
        ("https://x.io/a8Fk29dLq0ZxP3mN7vR2tY6uW1sB4cE9/y", "https://x.io/[api_key]/y"),
    ],
)
def test_it_redacts_key_like_tokens(text: str, expected: str) -> None:
    assert redact_text(text, ALL) == expected


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-model-selection-guide",
        "the Bearer authentication scheme",
        "Bearer token",
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "ThisIsAVeryLongCamelCaseIdentifierName",
        "test_it_rejects_a_stale_revision_2",
        "state-of-the-art-machine-learning-2024",
        "E2E_TEST_SUITE_FOR_PROMPT_REGISTRY_V3_2025",
        "claude-3-5-sonnet-20241022-experimental",
        "request 123e4567-e89b-12d3-a456-426614174000",  # UUIDs are ids, kept on purpose
        "AKIAIOSFODNN7EXAMPLEX",  # too long to be an AWS key id
        "support.refund-reply",
    ],
)
def test_it_leaves_words_identifiers_and_uuids(text: str) -> None:
    assert redact_text(text, ALL) == text


# --- order between the rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The key's digit run is a Luhn-valid card: the key goes whole, first.
        ("sk-proj-4111111111111111abcDEFghiJKL", "[api_key]"),
        # The local part holds a phone: the address goes whole.
        ("+447911123456@example.com", "[email]"),
        ("john+447911123456@example.com", "[email]"),
        # The BBAN's groups would be a phone or part of a card: the IBAN goes whole.
        ("DE89 3704 0044 0532 0130 00", "[iban]"),
        # An Amex number is phone-shaped too: it is a card.
        ("3782 822463 10005", "[card]"),
    ],
)
def test_the_most_specific_rule_takes_the_text_whole(text: str, expected: str) -> None:
    assert redact_text(text, ALL) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The address ends inside "comsk-…": once it is a placeholder, the key is free.
        ("john.doe@example.comsk-proj-abc123DEF456ghi789JKL012mno345", "[email][api_key]"),
        ("a@b.comx-y@c.dez-w@e.fr", "[email][email][email]"),
    ],
)
def test_glued_neighbours_are_all_redacted(text: str, expected: str) -> None:
    assert redact_text(text, ALL) == expected


def test_the_order_of_the_setting_does_not_change_the_result() -> None:
    text = "DE89 3704 0044 0532 0130 00, 4111 1111 1111 1111, a@b.co, +1 555 123 4567"
    assert redact_text(text, list(reversed(RULES))) == redact_text(text, ALL)
    assert redact_text(text, ALL) == "[iban], [card], [email], [phone]"


# --- which rules apply --------------------------------------------------------------------------

MIXED = "a@b.co +1 555 123 4567 4111 1111 1111 1111 GB82WEST12345698765432 AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            ["email"],
            "[email] +1 555 123 4567 4111 1111 1111 1111 GB82WEST12345698765432 AKIAIOSFODNN7EXAMPLE",
        ),
        (
            ["card", "api_key"],
            "a@b.co +1 555 123 4567 [card] GB82WEST12345698765432 [api_key]",
        ),
        ([], MIXED),
        (ALL, "[email] [phone] [card] [iban] [api_key]"),
    ],
)
def test_only_the_rules_named_apply(rules: list[str], expected: str) -> None:
    assert redact_text(MIXED, rules) == expected


def test_no_rules_named_means_the_setting(settings) -> None:
    settings.RUNS_REDACTION_RULES = ["email", "iban"]
    assert redact_text(MIXED) == (
        "[email] +1 555 123 4567 4111 1111 1111 1111 [iban] AKIAIOSFODNN7EXAMPLE"
    )
    assert redact({"x": [MIXED, 4111111111111111]}) == {
        "x": [
            "[email] +1 555 123 4567 4111 1111 1111 1111 [iban] AKIAIOSFODNN7EXAMPLE",
            4111111111111111,
        ]
    }


def test_an_unknown_rule_name_refuses_to_redact(settings) -> None:
    with pytest.raises(ValueError, match="phon"):
        redact_text("a@b.co", ["email", "phon"])
    settings.RUNS_REDACTION_RULES = ["emails"]
    with pytest.raises(ValueError, match="emails"):
        redact_text("a@b.co")
    with pytest.raises(ValueError, match="emails"):
        redact({"a": "a@b.co"})


def test_rules_given_as_one_string_are_refused() -> None:
    with pytest.raises(TypeError):
        redact_text("a@b.co", "email")


def test_rules_lists_every_rule_in_the_order_they_run() -> None:
    assert RULES == ("secret", "api_key", "email", "ip", "iban", "card", "phone")
    assert tuple(Rule) == RULES


# --- JSON-like values ---------------------------------------------------------------------------


def test_it_redacts_strings_anywhere_in_a_value_and_keeps_the_keys() -> None:
    value = {
        "customer": {"email": "jane@example.com", "phones": ["+1 555 123 4567", "n/a"]},
        "jane@example.com": "the key is kept: it is the caller's field name",
        "notes": ("pay GB82 WEST 1234 5698 7654 32",),
        "count": 3,
        "ok": True,
        "nothing": None,
        "ratio": 0.5,
    }
    assert redact(value, ALL) == {
        "customer": {"email": "[email]", "phones": ["[phone]", "n/a"]},
        "jane@example.com": "the key is kept: it is the caller's field name",
        "notes": ("pay [iban]",),
        "count": 3,
        "ok": True,
        "nothing": None,
        "ratio": 0.5,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4111111111111111, "[card]"),
        (-4111111111111111, "[card]"),
        (4111111111111111.0, "[card]"),
        (4222222222222, "[card]"),
        (4111111111111112, 4111111111111112),  # Luhn fails
        (411111111111, 411111111111),  # too short: 12 digits
        (10**40, 10**40),
        (5551234567, 5551234567),  # a bare number is not a phone: it may be an amount or an id
        (1700000000, 1700000000),
        (True, True),
        (4111111111111111.5, 4111111111111111.5),
        (float("inf"), float("inf")),
    ],
)
def test_numbers_are_redacted_only_as_card_numbers(value: object, expected: object) -> None:
    assert redact({"n": [value]}, ALL) == {"n": [expected]}


def test_a_card_number_stays_a_number_when_the_card_rule_is_off() -> None:
    assert redact([4111111111111111], ["email"]) == [4111111111111111]


def test_a_plain_string_value_is_redacted_like_text() -> None:
    assert redact("a@b.co", ALL) == "[email]"


# --- idempotence, and what never survives -------------------------------------------------------

FRAGMENTS = [
    "john.doe@example.com",
    "a@b.co",
    "+1 (555) 123-4567",
    "555-123-4567",
    "06 12 34 56 78",
    "4111 1111 1111 1111",
    "4111111111111111",
    "5500-0000-0000-0004",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "sk-proj-abc123DEF456ghi789JKL012mno345",
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer abc123def456ghi789",
    "d41d8cd98f00b204e9800998ecf8427e",
    "123e4567-e89b-12d3-a456-426614174000",
    "2024-01-15",
    "10.0.19041.1",
    "A-17",
    "$1,234.56",
    "[card]",
    "[phone",
]
texts = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet="0123456789 -.+()@aZ_:/,[]", max_size=6),
        st.text(max_size=4),
    ),
    max_size=20,
).map("".join)


@settings(max_examples=300)
@given(texts)
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text, ALL)
    assert redact_text(once, ALL) == once


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100)
@given(json_values)
def test_redacting_a_value_is_idempotent(value: object) -> None:
    once = redact(value, ALL)
    assert redact(once, ALL) == once


sixteen_digit_cards = (
    st.integers(min_value=10**14, max_value=10**15 - 1).map(str).map(luhn_complete)
)
STANDALONE_SIXTEEN = re.compile(r"(?<![0-9])[0-9]{16}(?![0-9])")


@settings(max_examples=300)
@given(
    before=texts,
    card=sixteen_digit_cards,
    separator=st.sampled_from(["", " ", "-"]),
    edge=st.sampled_from([" ", "\n", ", ", ": ", "(", ")", "\t", "'"]),
    after=texts,
)
def test_a_luhn_valid_card_never_survives(
    before: str, card: str, separator: str, edge: str, after: str
) -> None:
    shown = separator.join(card[i : i + 4] for i in range(0, 16, 4))
    out = redact_text(before + edge + shown + edge + after, ALL)
    assert shown not in out
    # Nor does any standalone Luhn-valid 16-digit run the text may have gained.
    assert not [run for run in STANDALONE_SIXTEEN.findall(out) if luhn_valid(run) and run == card]


@settings(max_examples=200)
@given(st.lists(sixteen_digit_cards, min_size=1, max_size=6), st.sampled_from([" ", ", ", "\n"]))
def test_a_list_of_cards_leaves_no_luhn_valid_run(cards: list[str], joiner: str) -> None:
    out = redact_text(joiner.join(cards), ALL)
    assert not [run for run in STANDALONE_SIXTEEN.findall(out) if luhn_valid(run)]


@settings(max_examples=200)
@given(
    st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12), max_size=30)
)
def test_prose_without_digits_or_at_signs_is_left_alone(words: list[str]) -> None:
    text = " ".join(words)
    assert redact_text(text, ALL) == text


# --- linear time --------------------------------------------------------------------------------

HUNDRED_KB = 100_000


@pytest.mark.parametrize(
    "unit",
    [
        "1",
        "1 ",
        "12-",
        "1.",
        "(1) ",
        "+1 ",
        "a",
        "a.",
        "a@",
        "a1",
        "a1-",
        "GB82 ",
        "sk-",
        "Bearer ",
        "4111 1111 1111 1112 ",
        "x@y.",
    ],
)
def test_a_100_kb_adversarial_input_finishes(unit: str) -> None:
    """Every pattern is linear by design (possessive bodies, runs judged once, windows of at most
    MAX_GROUPS groups); a backtracking pattern would not finish on these."""
    text = unit * (HUNDRED_KB // len(unit))
    out = redact_text(text, ALL)
    assert len(out) <= len(text) + HUNDRED_KB  # finished, with a sane result
    assert redact_text(out, ALL) == out


def test_a_100_kb_text_with_real_data_is_redacted_throughout() -> None:
    line = "mail a@b.co or +1 555 123 4567, card 4111 1111 1111 1111, IBAN GB82WEST12345698765432\n"
    text = line * (HUNDRED_KB // len(line))
    out = redact_text(text, ALL)
    assert out == "mail [email] or [phone], card [card], IBAN [iban]\n" * (HUNDRED_KB // len(line))


# --- the system check ---------------------------------------------------------------------------


def test_the_default_rules_pass_the_check(settings) -> None:
    settings.RUNS_REDACTION_RULES = ["email", "phone", "card", "iban", "api_key"]
    assert redaction_rules_check() == []


def test_an_unknown_rule_name_is_a_check_error(settings) -> None:
    settings.RUNS_REDACTION_RULES = ["email", "phon", "cards"]
    messages = redaction_rules_check()
    assert [(m.level, m.id) for m in messages] == [(checks.ERROR, "runs.E001")] * 2
    assert "'phon'" in messages[0].msg
    assert "'cards'" in messages[1].msg
    assert "phone" in messages[0].hint


def test_the_check_is_registered_with_django(settings) -> None:
    settings.RUNS_REDACTION_RULES = ["emial"]
    ids = [message.id for message in checks.run_checks()]
    assert "runs.E001" in ids


def test_a_setting_that_is_not_a_list_is_a_check_error(settings) -> None:
    settings.RUNS_REDACTION_RULES = "email,phone"
    assert [m.id for m in redaction_rules_check()] == ["runs.E002"]


def test_no_rules_at_all_is_a_check_warning(settings) -> None:
    settings.RUNS_REDACTION_RULES = []
    messages = redaction_rules_check()
    assert [(m.level, m.id) for m in messages] == [(checks.WARNING, "runs.W001")]
