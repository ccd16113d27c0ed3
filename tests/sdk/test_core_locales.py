"""The SDK's locale rules (promptregistry.core.locales) against the server's (registry.locales):
the same normalized tags, fallback chains, picks and refusals on generated tags. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from promptregistry import errors as sdk_errors
from promptregistry.core import locales as sdk

from registry import errors as server_errors
from registry import locales as server

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

languages = st.one_of(
    st.text(alphabet=LETTERS, min_size=2, max_size=3),
    st.text(alphabet=LETTERS, min_size=5, max_size=8),
    st.sampled_from(["en", "fr", "pt", "zh", "de", "gsw"]),
)
subtags = st.one_of(
    st.text(alphabet=LETTERS, min_size=4, max_size=4),  # scripts
    st.text(alphabet=LETTERS, min_size=2, max_size=2),  # regions
    st.text(alphabet="0123456789", min_size=3, max_size=3),
    st.text(alphabet=ALNUM, min_size=4, max_size=8),  # variants, and near misses
    st.sampled_from(["CA", "BR", "Hant", "TW", "1996", "u", "x", ""]),
)


@st.composite
def tags(draw: st.DrawFn) -> str:
    """Mostly well-formed tags, in any case and with either separator, plus near misses
    (duplicate variants, empty subtags, extensions) that both sides must refuse alike."""
    parts = [draw(languages), *draw(st.lists(subtags, max_size=3))]
    separators = draw(
        st.lists(st.sampled_from("-_"), min_size=len(parts) - 1, max_size=len(parts) - 1)
    )
    return parts[0] + "".join(sep + part for sep, part in zip(separators, parts[1:], strict=True))


any_tag = st.one_of(tags(), st.text(max_size=12), st.just("x" * 70))


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call did, comparable across the two implementations: its answer, or the name of
    the error it raised and its message."""
    try:
        return ("ok", call())
    except (sdk_errors.RegistryError, server_errors.RegistryError) as exc:
        return (type(exc).__name__, exc.message)


def test_the_sdk_errors_are_named_as_the_server_ones():
    assert sdk_errors.LocaleInvalid.__name__ == server_errors.LocaleInvalid.__name__
    assert sdk_errors.LocaleUnavailable.__name__ == server_errors.LocaleUnavailable.__name__


@given(any_tag)
def test_normalize_gives_the_server_answer(tag):
    assert outcome(lambda: sdk.locale_normalize(tag)) == outcome(
        lambda: server.locale_normalize(tag)
    )


@given(any_tag, tags())
def test_the_fallback_chain_is_the_server_chain(requested, default):
    assert outcome(lambda: sdk.locale_fallback_chain(requested, default=default)) == outcome(
        lambda: server.locale_fallback_chain(requested, default=default)
    )


@given(st.one_of(st.none(), any_tag), st.lists(tags(), max_size=5), tags())
def test_pick_gives_the_server_answer(requested, available, default):
    assert outcome(lambda: sdk.locale_pick(requested, available, default=default)) == outcome(
        lambda: server.locale_pick(requested, available, default=default)
    )


@given(st.one_of(st.none(), any_tag), st.lists(tags(), max_size=5), tags())
def test_pick_over_a_prebuilt_index_gives_the_server_answer(requested, available, default):
    # What resolve uses: a version's index is built once, when the bundle is read.
    expected = outcome(lambda: server.locale_pick(requested, available, default=default))
    try:
        index = sdk.locale_index(available)
    except sdk_errors.LocaleInvalid:
        assert expected[0] == "LocaleInvalid"  # a bad stored tag fails the server's pick too
        return

    assert outcome(lambda: sdk.locale_pick_indexed(requested, index, default=default)) == expected


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        ("fr-CA", ["en", "fr"], "fr"),
        ("FR_ca", ["en", "fr-CA"], "fr-CA"),
        ("fr", ["en", "fr-CA"], "en"),
        (None, ["fr", "en"], "en"),
        ("zh-hant-tw", ["en", "zh-Hant"], "zh-Hant"),
    ],
)
def test_pick_falls_back_from_the_region_to_the_language_to_the_default(
    requested, available, expected
):
    assert sdk.locale_pick(requested, available, default="en") == expected


def test_a_value_that_is_not_text_is_refused_not_memoized():
    with pytest.raises(sdk_errors.LocaleInvalid):
        sdk.locale_normalize(["fr"])  # type: ignore[arg-type]
    with pytest.raises(sdk_errors.LocaleInvalid):
        sdk.locale_pick("fr", ["en"], default=None)  # type: ignore[arg-type]


def test_nothing_in_the_chain_is_locale_unavailable():
    with pytest.raises(sdk_errors.LocaleUnavailable, match="fr-CA, fr, en"):
        sdk.locale_pick("fr-CA", ["de"], default="en")
