"""BCP 47 language tags and the locale fallback ``fr-CA`` → ``fr`` → the prompt's default.

The one implementation of these rules: the server's ``registry.locales`` wraps this module. A
language (2–3 letters, or 5–8), an
optional script (4 letters), an optional region (2 letters or 3 digits) and optional variants;
extensions and private use are refused; ``_`` reads as ``-``. Tags compare in canonical case
(``zh-hant-tw`` → ``zh-Hant-TW``), and a more specific tag than the one asked for is never
picked: ``fr`` is not answered with ``fr-CA``.

Normalization is pure, so its results are memoized: a ``get`` asks for the same few tags again
and again, and the SDK's budget for a local ``get`` is microseconds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from promptregistry.errors import LocaleInvalid, LocaleUnavailable

MAX_TAG_CHARS = 64
_MEMO_SIZE = 4096

_TAG = re.compile(
    r"""
    (?P<language>[a-z]{2,3}|[a-z]{5,8})
    (?:-(?P<script>[a-z]{4}))?
    (?:-(?P<region>[a-z]{2}|[0-9]{3}))?
    (?P<variants>(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*)
    """,
    # ASCII: under a Unicode IGNORECASE, [a-z] also matches the Kelvin sign and dotless i.
    re.VERBOSE | re.IGNORECASE | re.ASCII,
)


def _invalid(tag: object) -> LocaleInvalid:
    shown = repr(tag) if not isinstance(tag, str) or len(tag) <= 40 else repr(tag[:40] + "…")
    return LocaleInvalid(
        f"{shown} is not a valid BCP 47 language tag (for example 'fr', 'fr-CA' or 'zh-Hant-TW')."
    )


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _normalize(tag: str) -> str:
    # Only valid tags are memoized: an exception is not cached, so junk cannot fill the memo.
    if not tag or len(tag) > MAX_TAG_CHARS:
        raise _invalid(tag)
    match = _TAG.fullmatch(tag.replace("_", "-"))
    if match is None:
        raise _invalid(tag)
    parts = [match["language"].lower()]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    variants = [variant.lower() for variant in match["variants"].split("-") if variant]
    # RFC 5646 §2.2.5: a variant may appear once; "de-1996-1996" is not a tag.
    if len(set(variants)) != len(variants):
        raise _invalid(tag)
    parts.extend(variants)
    return "-".join(parts)


def locale_normalize(tag: str) -> str:
    """Validate a language tag and return it in canonical case (``fr_ca`` → ``fr-CA``).

    Language and variants lower case, script title case, region upper case. Raises
    ``LocaleInvalid`` naming the tag. Idempotent.
    """
    if not isinstance(tag, str):
        raise _invalid(tag)
    return _normalize(tag)


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _chain(requested: str, default: str) -> tuple[str, ...]:
    subtags = locale_normalize(requested).split("-")
    normalized_default = locale_normalize(default)
    chain: list[str] = []
    for length in range(len(subtags), 0, -1):
        prefix = "-".join(subtags[:length])
        if prefix == normalized_default:
            break
        chain.append(prefix)
    chain.append(normalized_default)
    return tuple(chain)


def locale_fallback_chain(requested: str, *, default: str) -> tuple[str, ...]:
    """The locales to try for ``requested``, most specific first, ending with ``default``.

    ``fr-CA`` with default ``en`` gives ``("fr-CA", "fr", "en")``; when the default is a prefix
    of the request the chain stops there (``zh-Hant-TW`` with default ``zh-Hant`` gives
    ``("zh-Hant-TW", "zh-Hant")``). Raises ``LocaleInvalid`` for a bad tag.
    """
    if not isinstance(requested, str):
        raise _invalid(requested)
    if not isinstance(default, str):
        raise _invalid(default)
    return _chain(requested, default)


def locale_index(available: Iterable[str]) -> dict[str, str]:
    """``available`` keyed by normalized tag, each to its stored spelling (the first one wins).
    Raises ``LocaleInvalid`` for a bad tag. A version's index is built once, when its bundle is
    read, so that a resolve does not normalize the same tags again."""
    index: dict[str, str] = {}
    for tag in available:
        index.setdefault(locale_normalize(tag), tag)
    return index


def locale_pick(requested: str | None, available: Iterable[str], *, default: str) -> str:
    """The locale to serve: the first of ``requested``'s fallback chain that ``available`` has.

    The answer is the ``available`` entry itself (its stored spelling). ``None`` means no
    preference and picks the default; an empty string is not a tag and raises ``LocaleInvalid``.
    Raises ``LocaleUnavailable`` when nothing in the chain is available.
    """
    chain = (
        (locale_normalize(default),)
        if requested is None
        else locale_fallback_chain(requested, default=default)
    )
    return _first_available(chain, locale_index(available), requested)


def locale_pick_indexed(requested: str | None, index: Mapping[str, str], *, default: str) -> str:
    """``locale_pick`` over an index built by ``locale_index``: the same answer and errors."""
    chain = (
        (locale_normalize(default),)
        if requested is None
        else locale_fallback_chain(requested, default=default)
    )
    return _first_available(chain, index, requested)


def _first_available(
    chain: tuple[str, ...], index: Mapping[str, str], requested: str | None
) -> str:
    for candidate in chain:
        stored = index.get(candidate)
        if stored is not None:
            return stored
    asked = "the default locale" if requested is None else f"'{requested}'"
    raise LocaleUnavailable(
        f"There is no template for {asked} or its fallbacks ({', '.join(chain)})."
    )
