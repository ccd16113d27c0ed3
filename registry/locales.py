"""BCP 47 language tags and the locale fallback of DESIGN.md: ``fr-CA`` → ``fr`` → the default.

Templates are stored per locale, and a caller asks for one; both sides go through
``locale_normalize`` so that ``fr_ca``, ``FR-CA`` and ``fr-CA`` name the same template.

The grammar is the part of RFC 5646 that prompts need: a language (2 or 3 letters, or a registered
one of 5 to 8), an optional script (4 letters), an optional region (2 letters or 3 digits) and
optional variants. Extensions (``-u-…``) and private use (``-x-…``) are refused: no template is
keyed by them, and accepting them would only make two spellings of one locale. The underscore is
accepted as a separator because POSIX locales (``fr_CA``) are what many clients send.

The rules are the SDK's (``promptregistry.core.locales``), so a service resolving locally falls back
exactly as the server does; this module gives them the registry's errors (decision 0011).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps

from promptregistry import errors as sdk_errors
from promptregistry.core import locales as shared

from registry.errors import LocaleInvalid, LocaleUnavailable

MAX_TAG_CHARS = shared.MAX_TAG_CHARS


def _registry_errors[**P, R](function: Callable[P, R]) -> Callable[P, R]:
    """The SDK's locale errors, raised as the registry's, with the same sentence."""

    @wraps(function)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except sdk_errors.LocaleInvalid as exc:
            raise LocaleInvalid(exc.message) from exc
        except sdk_errors.LocaleUnavailable as exc:
            raise LocaleUnavailable(exc.message) from exc

    return translated


@_registry_errors
def locale_normalize(tag: str) -> str:
    """Validate a language tag and return it in canonical case (``zh-hant-tw`` → ``zh-Hant-TW``):
    language and variants lower case, script title case, region upper case, ``_`` read as ``-``.
    Raises ``LocaleInvalid`` naming the tag. Idempotent."""
    return shared.locale_normalize(tag)


@_registry_errors
def locale_fallback_chain(requested: str, *, default: str) -> tuple[str, ...]:
    """The locales to try for ``requested``, most specific first, ending with ``default``:
    ``fr-CA`` with default ``en`` gives ``("fr-CA", "fr", "en")``; when the default is a prefix of
    the request the chain stops there. Raises ``LocaleInvalid`` for a bad tag."""
    return shared.locale_fallback_chain(requested, default=default)


@_registry_errors
def locale_pick(requested: str | None, available: Iterable[str], *, default: str) -> str:
    """The locale to serve: the first of ``requested``'s fallback chain that ``available`` has (the
    stored spelling). ``None`` picks the default; an empty string is not a tag and raises
    ``LocaleInvalid``, so an API receiving ``?locale=`` should map empty to ``None`` itself.
    Raises ``LocaleUnavailable`` when nothing in the chain is available."""
    return shared.locale_pick(requested, available, default=default)
