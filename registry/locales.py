"""BCP 47 language tags and the locale fallback of DESIGN.md: ``fr-CA`` → ``fr`` → the default.

Templates are stored per locale, and a caller asks for one; both sides go through
``locale_normalize`` so that ``fr_ca``, ``FR-CA`` and ``fr-CA`` name the same template.

The grammar is the part of RFC 5646 that prompts need: a language (2 or 3 letters, or a registered
one of 5 to 8), an optional script (4 letters), an optional region (2 letters or 3 digits) and
optional variants. Extensions (``-u-…``) and private use (``-x-…``) are refused: no template is
keyed by them, and accepting them would only make two spellings of one locale. The underscore is
accepted as a separator because POSIX locales (``fr_CA``) are what many clients send.

Pure module: no Django, no models, so the standalone SDK can reuse it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from registry.errors import LocaleInvalid, LocaleUnavailable

MAX_TAG_CHARS = 64

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


def locale_normalize(tag: str) -> str:
    """Validate a language tag and return it in canonical case (``zh-hant-tw`` → ``zh-Hant-TW``).

    Language and variants lower case, script title case, region upper case, ``_`` read as ``-``.
    Raises ``LocaleInvalid`` naming the tag. Idempotent: a normalized tag normalizes to itself.
    """
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS:
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


def locale_fallback_chain(requested: str, *, default: str) -> tuple[str, ...]:
    """The locales to try for ``requested``, most specific first, ending with ``default``.

    1. the normalized requested tag;
    2. each shorter prefix, dropping the last subtag (``zh-Hant-TW`` → ``zh-Hant`` → ``zh``);
    3. the default locale (normalized), which always ends the chain.

    ``fr-CA`` with default ``en`` gives ``("fr-CA", "fr", "en")``, and ``en-GB`` gives
    ``("en-GB", "en")``. When the default is itself a prefix of the request, the chain stops
    there: ``zh-Hant-TW`` with default ``zh-Hant`` gives ``("zh-Hant-TW", "zh-Hant")``, because
    the default is the last resort (every version has its template), and a bare ``zh`` after it
    would only be reached if it were missing. Raises ``LocaleInvalid`` for a bad tag.
    """
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


def locale_pick(requested: str | None, available: Iterable[str], *, default: str) -> str:
    """The locale to serve: the first of ``requested``'s fallback chain that ``available`` has.

    Tags compare normalized, and the answer is the ``available`` entry itself (the stored
    spelling). ``None`` means "no preference" and picks the default; an empty string is not a tag
    and raises ``LocaleInvalid`` like any bad tag, so an API that receives ``?locale=`` should
    pass ``None``. A more specific tag than the one requested is never picked: a request for
    ``fr`` is not answered with ``fr-CA``. Raises ``LocaleUnavailable`` when nothing in the chain
    is available.
    """
    chain = (
        (locale_normalize(default),)
        if requested is None
        else locale_fallback_chain(requested, default=default)
    )
    stored: dict[str, str] = {}
    for tag in available:
        stored.setdefault(locale_normalize(tag), tag)
    for candidate in chain:
        if candidate in stored:
            return stored[candidate]
    asked = "the default locale" if requested is None else f"'{requested}'"
    raise LocaleUnavailable(
        f"There is no template for {asked} or its fallbacks ({', '.join(chain)})."
    )
