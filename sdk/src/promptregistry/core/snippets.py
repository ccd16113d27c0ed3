"""Snippets: shared blocks (brand voice, safety rules, an output contract) that templates include.

A snippet is a prompt marked as one; a section includes it by key with the sandbox's global
``snippet``: ``{{ snippet("brand.voice") }}`` follows the snippet's stable release in the
environment being served, ``{{ snippet("brand.voice", version=3) }}`` pins a committed version.
The server (``registry.rendering``) and the SDK (``rendering``) both render includes here, from a
``SnippetLibrary``: what the render's environment serves for each ``(key, pinned version)``, the
snippets that snippets include among them. The rules:

1. A snippet's text is its non-empty sections, rendered in order and joined by blank lines.
   A snippet declares no variables (the commit refuses them), so its text depends on nothing but
   its version and locale; it renders in a context of its own.
2. Its locale is the including section's locale or a less specific one (``fr-CA`` → ``fr``),
   never another language (``snippet_locale``): the commit refuses a snippet that lacks one.
3. Includes are bounded: ``MAX_SNIPPET_DEPTH`` levels of snippets including snippets and
   ``MAX_SNIPPET_INCLUDES`` includes per render; they run under the including render's budget
   (steps, work, deadline), and their text counts once towards its output, where it is printed.
4. Every failure is a ``SnippetFailed`` with the problem's code, which the renderers turn into
   their render errors (section, locale and line of the include).

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from jinja2 import TemplateSyntaxError
from jinja2.environment import Template

from .budget import BudgetExceeded, current_budget
from .compile_cache import CompileCache
from .locales import locale_index, locale_normalize
from .sandbox import (
    ENVIRONMENT,
    SNIPPET_INCLUDER,
    SnippetFailed,
    compile_template,
    new_context,
    render_template,
)
from .template_rules import SnippetCall, forbidden_usage, snippet_calls

__all__ = [
    "MAX_SNIPPET_DEPTH",
    "MAX_SNIPPET_INCLUDES",
    "SnippetCall",
    "SnippetFailed",
    "SnippetLibrary",
    "SnippetText",
    "includes",
    "snippet_calls_of",
    "snippet_locale",
]

MAX_SNIPPET_DEPTH = 3  # a snippet may include a snippet that includes one, no further
MAX_SNIPPET_INCLUDES = 50  # per render, all levels together
SECTIONS = ("system", "context", "instruction", "format")


@dataclass(frozen=True, slots=True)
class SnippetText:
    """One committed version of a snippet, as an include renders it."""

    key: str
    number: int
    templates: Mapping[str, Mapping[str, str]]  # locale -> the four sections
    locales: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "locales", locale_index(self.templates))


class SnippetLibrary(Protocol):
    """What the render's environment serves for each include: ``get((key, None))`` the version
    an include that follows gets, ``get((key, n))`` pinned version ``n``; None: none to serve.
    A plain dict is one."""

    def get(self, ref: tuple[str, int | None], /) -> SnippetText | None: ...


def snippet_locale(locale: str, available: Mapping[str, str]) -> str | None:
    """The locale a snippet renders in for an including section in ``locale``: that locale or a
    less specific one of the same language (``zh-Hant-TW`` → ``zh-Hant`` → ``zh``), as
    ``available`` (``locale_index``: normalized tag -> stored tag) has it; None when it has none.
    Never another language: a French prompt never includes an English brand voice unnoticed.
    A render with no locale (``""``) takes the first of ``available`` in order."""
    if not locale:
        return min(available.values(), default=None)
    parts = locale_normalize(locale).split("-")
    for end in range(len(parts), 0, -1):
        found = available.get("-".join(parts[:end]))
        if found is not None:
            return found
    return None


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template | None
    problem: str  # why it does not compile ("" when it does)


def _compile_uncached(source: str) -> _Compiled:
    try:
        ast = ENVIRONMENT.parse(source)
        issues = forbidden_usage(ast)
        if issues:
            return _Compiled(None, issues[0].message)
        return _Compiled(compile_template(ast), "")
    except (TemplateSyntaxError, SyntaxError, RecursionError, ValueError, OverflowError) as exc:
        return _Compiled(None, str(exc)[:200])


_CACHE: CompileCache[_Compiled] = CompileCache(1024, _compile_uncached)


def snippet_calls_of(source: str) -> list[SnippetCall]:
    """The includes of one section's text (none when it does not parse)."""
    try:
        return snippet_calls(ENVIRONMENT.parse(source))[0]
    except TemplateSyntaxError:
        return []


@dataclass(slots=True)
class _Includes:
    library: SnippetLibrary
    locale: str
    depth: int = 0
    count: int = 0

    def include(self, key: str, version: int | None) -> str:
        """``snippet(key, version=…)``: the snippet's text, rendered under the current budget."""
        label = f"{key!r}" + (f" version {version}" if version is not None else "")
        text = self.library.get((key, version))
        if text is None:
            served = "is not" if version is not None else "has no stable release"
            raise SnippetFailed(
                "snippet_unavailable", f"The snippet {label} {served} available here."
            )
        if self.depth >= MAX_SNIPPET_DEPTH:
            raise SnippetFailed(
                "snippet_too_deep",
                f"Including {label} goes deeper than {MAX_SNIPPET_DEPTH} levels of snippets.",
            )
        self.count += 1
        if self.count > MAX_SNIPPET_INCLUDES:
            raise SnippetFailed(
                "too_many_snippets", f"A render includes at most {MAX_SNIPPET_INCLUDES} snippets."
            )
        locale = snippet_locale(self.locale, text.locales)
        if locale is None:
            raise SnippetFailed(
                "snippet_locale_missing",
                f"The snippet {key!r} (version {text.number}) has no {self.locale} template.",
            )
        templates = []
        for section in SECTIONS:
            source = text.templates[locale].get(section) or ""
            if not source:
                continue
            compiled = _CACHE.get(source)
            if compiled.template is None:
                raise SnippetFailed(
                    "snippet_invalid",
                    f"The snippet {key!r} (version {text.number}) does not compile: "
                    f"{compiled.problem}",
                )
            templates.append(compiled.template)
        budget = current_budget()
        # The text is counted where the including template prints it: not twice.
        output = budget.output
        outer_locale = self.locale
        self.depth += 1
        self.locale = locale
        try:
            context = new_context({})
            parts = [render_template(t, context, budget).strip() for t in templates]
        except (SnippetFailed, BudgetExceeded):
            raise
        except Exception as exc:
            raise SnippetFailed(
                "snippet_error",
                f"The snippet {key!r} (version {text.number}) failed: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
            ) from exc
        finally:
            self.depth -= 1
            self.locale = outer_locale
            budget.output = output
        return "\n\n".join(part for part in parts if part)


@contextmanager
def includes(library: SnippetLibrary | None, *, locale: str) -> Iterator[None]:
    """Within it, ``snippet(...)`` renders from ``library`` for sections in ``locale`` (None: no
    snippet is available, and an include fails with ``snippet_unavailable``)."""
    token = SNIPPET_INCLUDER.set(
        _Includes(library, locale).include if library is not None else None
    )
    try:
        yield
    finally:
        SNIPPET_INCLUDER.reset(token)
