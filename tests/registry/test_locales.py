"""BCP 47 tags and the fr-CA -> fr -> default fallback (registry.locales): pure, no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import LocaleInvalid, LocaleUnavailable
from registry.locales import locale_fallback_chain, locale_normalize, locale_pick

# --- normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("fr", "fr"),
        ("EN", "en"),
        ("FR-ca", "fr-CA"),
        ("fr_CA", "fr-CA"),
        ("fr_ca", "fr-CA"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("ZH_HANT", "zh-Hant"),
        ("es-419", "es-419"),
        ("gsw", "gsw"),
        ("de-CH-1996", "de-CH-1996"),
        ("sl-ROZAJ-biske", "sl-rozaj-biske"),
        ("sr-Latn-RS", "sr-Latn-RS"),
    ],
)
def test_a_valid_tag_comes_back_in_canonical_case(tag: str, expected: str) -> None:
    assert locale_normalize(tag) == expected


@pytest.mark.parametrize(
    "tag",
    [
        "",
        "f",
        "fran",  # 4 letters is no language
        "toolonglanguage",
        "fr-",
        "-fr",
        "fr--CA",
        "fr CA",
        " fr",
        "fr-CA\n",
        "1fr",
        "fr-C",
        "fr-CAN1",
        "en-u-ca-gregory",  # extensions are refused
        "fr-x-private",
        "de-1996-1996",  # a variant appears once
        "fr-\u212a\u212a",  # the Kelvin sign matches "k" under a Unicode IGNORECASE
        "fr-ça",
        "en-" + "a" * 70,
    ],
)
def test_an_invalid_tag_is_refused(tag: str) -> None:
    with pytest.raises(LocaleInvalid):
        locale_normalize(tag)


def test_the_error_names_the_tag() -> None:
    with pytest.raises(LocaleInvalid, match="'fr--CA'"):
        locale_normalize("fr--CA")


def test_a_value_that_is_not_text_is_refused() -> None:
    with pytest.raises(LocaleInvalid):
        locale_normalize(None)  # type: ignore[arg-type]


# --- fallback chain ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [
        ("fr-CA", "en", ("fr-CA", "fr", "en")),
        ("fr_ca", "EN", ("fr-CA", "fr", "en")),
        ("zh-Hant-TW", "en", ("zh-Hant-TW", "zh-Hant", "zh", "en")),
        ("en-GB", "en", ("en-GB", "en")),
        ("en", "en", ("en",)),
        ("fr", "en-US", ("fr", "en-US")),
        ("de-CH-1996", "en", ("de-CH-1996", "de-CH", "de", "en")),
        ("zh-Hant-TW", "zh-Hant", ("zh-Hant-TW", "zh-Hant")),
    ],
)
def test_the_chain_drops_one_subtag_at_a_time_then_falls_back_to_the_default(
    requested: str, default: str, expected: tuple[str, ...]
) -> None:
    assert locale_fallback_chain(requested, default=default) == expected


def test_an_invalid_default_is_refused() -> None:
    with pytest.raises(LocaleInvalid):
        locale_fallback_chain("fr", default="en-")


# --- picking a locale ---------------------------------------------------------------------------


def test_pick_prefers_the_requested_locale() -> None:
    assert locale_pick("fr-CA", ["en", "fr", "fr-CA"], default="en") == "fr-CA"


def test_pick_falls_back_to_the_language() -> None:
    assert locale_pick("fr-CA", ["en", "fr"], default="en") == "fr"


def test_pick_falls_back_to_the_default() -> None:
    assert locale_pick("de-AT", ["en", "fr"], default="en") == "en"


def test_pick_without_a_preference_takes_the_default() -> None:
    assert locale_pick(None, ["fr", "en"], default="en") == "en"


def test_pick_answers_with_the_stored_spelling() -> None:
    assert locale_pick("FR-ca", ["en", "fr_ca"], default="en") == "fr_ca"


def test_pick_never_answers_with_a_more_specific_locale() -> None:
    assert locale_pick("fr", ["en", "fr-CA"], default="en") == "en"


def test_pick_raises_when_nothing_in_the_chain_is_available() -> None:
    with pytest.raises(LocaleUnavailable, match="fr-CA, fr, en"):
        locale_pick("fr-CA", ["de"], default="en")


def test_pick_without_a_preference_raises_when_the_default_is_missing() -> None:
    with pytest.raises(LocaleUnavailable):
        locale_pick(None, ["de"], default="en")


def test_pick_refuses_an_invalid_request() -> None:
    with pytest.raises(LocaleInvalid):
        locale_pick("", ["en"], default="en")


# --- properties ---------------------------------------------------------------------------------

_letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1)
languages = st.one_of(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=3
    ),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=5, max_size=8
    ),
)
scripts = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=4, max_size=4
)
regions = st.one_of(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2
    ),
    st.text(alphabet="0123456789", min_size=3, max_size=3),
)
variants = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=5, max_size=8),
    st.tuples(
        st.sampled_from("0123456789"),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=3),
    ).map("".join),
)


@st.composite
def tags(draw: st.DrawFn) -> str:
    parts = [draw(languages)]
    if draw(st.booleans()):
        parts.append(draw(scripts))
    if draw(st.booleans()):
        parts.append(draw(regions))
    parts.extend(draw(st.lists(variants, max_size=2, unique_by=str.lower)))
    separators = draw(st.lists(st.sampled_from("-_"), min_size=len(parts), max_size=len(parts)))
    return parts[0] + "".join(sep + part for sep, part in zip(separators, parts[1:], strict=False))


@given(tags())
def test_normalization_is_idempotent_and_ignores_case(tag: str) -> None:
    normal = locale_normalize(tag)
    assert locale_normalize(normal) == normal
    assert locale_normalize(tag.upper()) == normal
    assert locale_normalize(tag.lower()) == normal
    assert "_" not in normal


@given(st.text(max_size=30))
def test_any_text_is_a_tag_or_locale_invalid(text: str) -> None:
    try:
        normal = locale_normalize(text)
    except LocaleInvalid:
        return
    assert locale_normalize(normal) == normal


def _is_subtag_prefix(prefix: str, tag: str) -> bool:
    return tag.split("-")[: len(prefix.split("-"))] == prefix.split("-")


@given(tags(), tags())
def test_the_chain_runs_from_the_request_to_the_default(requested: str, default: str) -> None:
    chain = locale_fallback_chain(requested, default=default)
    normal = locale_normalize(requested)
    assert chain[0] == normal
    assert chain[-1] == locale_normalize(default)
    assert len(set(chain)) == len(chain)
    for element in chain:
        assert _is_subtag_prefix(element, normal) or element == locale_normalize(default)


@given(st.one_of(st.none(), tags()), st.lists(tags(), max_size=5), tags())
def test_pick_is_the_first_available_element_of_the_chain(
    requested: str | None, available: list[str], default: str
) -> None:
    chain = (
        (locale_normalize(default),)
        if requested is None
        else locale_fallback_chain(requested, default=default)
    )
    normalized = {locale_normalize(tag) for tag in available}
    expected = next((candidate for candidate in chain if candidate in normalized), None)
    if expected is None:
        with pytest.raises(LocaleUnavailable):
            locale_pick(requested, available, default=default)
        return
    picked = locale_pick(requested, available, default=default)
    assert picked in available
    assert locale_normalize(picked) == expected
