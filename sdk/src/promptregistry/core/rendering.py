"""Rendering a prompt's four sections: the server's rendering contract, applied locally.

A copy of what decides output and failures in the server's ``registry/rendering.py`` (and its
sandbox, ``sandbox``), so that the SDK renders what ``POST …/render`` would:

1. templates run in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``, no autoescape
   and no loader, under the same bounded budget (200,000 characters, 1,000,000 steps and a
   250 ms deadline by default, the server's defaults; all are parameters; see ``sandbox``);
2. before anything runs, a section is refused when it reaches what the sandbox forbids
   (attributes starting with ``_``, introspection names, mutating calls, includes): committed
   versions never do, since the server refuses them when they are saved;
3. compiled templates are cached by their text, so a section compiles once per process
   (``compile_sections``; the bundle keeps each version's compiled sections, so a render from
   it goes straight to ``render_compiled``);
4. each rendered section is stripped of leading and trailing whitespace;
5. every failure is a ``RenderError`` listing problems with the server's codes and pointers
   (``/templates/{locale}/{section}``), never a Jinja exception.

``to_messages`` turns rendered sections into OpenAI chat messages exactly as the server does,
with the conversation histories of ``messages`` variables inserted where they go (``history``):
a render answers a ``RenderedSections``, the four sections as a dict that also carries them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.environment import Template
from jinja2.exceptions import SecurityError

from promptregistry.errors import RenderError

from .compile_cache import CompileCache, CompileCacheInfo
from .history import HistoryBlock, place_history
from .sandbox import (
    ENVIRONMENT,
    MAX_RENDER_CHARS,
    MAX_RENDER_STEPS,
    RENDER_DEADLINE_MS,
    BudgetExceeded,
    RenderBudget,
    SnippetFailed,
    Unprintable,
    budget_scope,
    compile_template,
    new_context,
    render_template,
)
from .snippets import SnippetLibrary, includes
from .template_rules import Issue, forbidden_usage

__all__ = [
    "MAX_RENDER_CHARS",
    "MAX_RENDER_STEPS",
    "RENDER_DEADLINE_MS",
    "SECTIONS",
    "CompiledSections",
    "RenderedSections",
    "compile_cache_clear",
    "compile_cache_info",
    "compile_sections",
    "render_compiled",
    "render_sections",
    "to_messages",
]

SECTIONS = ("system", "context", "instruction", "format")
COMPILE_CACHE_SIZE = 4096


def _problem(code: str, detail: str, pointer: str, line: int | None = None) -> dict[str, object]:
    problem: dict[str, object] = {"code": code, "detail": detail, "pointer": pointer}
    if line is not None:
        problem["line"] = line
    return problem


def _sections(data: Mapping[str, object], *, pointer: str = "") -> dict[str, str]:
    """The four sections of ``data``; a missing or null one is empty. An unknown key or a
    section that is not text is refused (the server's ``Sections.from_mapping``)."""
    problems: list[dict[str, object]] = []
    values = dict.fromkeys(SECTIONS, "")
    for key, value in data.items():
        at = f"{pointer}/{key}"
        if key not in SECTIONS:
            problems.append(
                _problem(
                    "unknown_section",
                    f"'{key}' is not a section; the sections are {', '.join(SECTIONS)}.",
                    at,
                )
            )
        elif value is None:
            values[key] = ""
        elif isinstance(value, str):
            values[key] = value
        else:
            problems.append(_problem("invalid_section", f"The {key} section must be text.", at))
    if problems:
        raise RenderError(problems, "The prompt's templates are not valid.")
    return values


# --- static checks ---------------------------------------------------------------------------


# --- compiling, cached by text ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template | None  # None when the text has issues
    issues: tuple[Issue, ...]


def _compile_uncached(source: str) -> _Compiled:
    try:
        ast = ENVIRONMENT.parse(source)
        issues = forbidden_usage(ast)
        if issues:
            return _Compiled(None, tuple(issues))
        template = compile_template(ast)
    except TemplateSyntaxError as exc:
        return _Compiled(None, (Issue("template_syntax", exc.message or str(exc), exc.lineno),))
    except (SyntaxError, RecursionError):
        # Python's own limits on the generated code: about 20 nested blocks, deep expressions.
        message = "The template nests blocks or expressions too deeply."
        return _Compiled(None, (Issue("template_syntax", message, None),))
    except (ValueError, OverflowError) as exc:
        # A literal Python refuses to convert, such as an integer of over 4300 digits.
        message = f"The template has a literal that cannot be read ({str(exc)[:80]})."
        return _Compiled(None, (Issue("template_syntax", message, None),))
    return _Compiled(template, ())


_CACHE: CompileCache[_Compiled] = CompileCache(COMPILE_CACHE_SIZE, _compile_uncached)


def compile_cache_info() -> CompileCacheInfo:
    """Hits, misses and size of the compiled-template cache."""
    return _CACHE.info()


def compile_cache_clear() -> None:
    _CACHE.clear()


# --- rendering --------------------------------------------------------------------------------


def _where(section: str, locale: str, line: int | None) -> str:
    place = f"The {section} section" + (f" ({locale})" if locale else "")
    return place + (f", line {line}" if line is not None else "")


def _pointer(pointer: str, locale: str, section: str) -> str:
    return "/".join(part for part in (pointer, locale, section) if part)


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at (Jinja rewrites tracebacks to template lines)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass(frozen=True, slots=True)
class CompiledSections:
    """The four sections of one locale, compiled and checked: what ``render_compiled`` runs.

    Holds only templates that compiled without issues; a caller may keep it as long as the text
    it came from (the SDK keeps one per version and locale of its bundle)."""

    templates: tuple[tuple[str, Template], ...]  # (section, template), empty sections left out


def compile_sections(
    sections: Mapping[str, object], *, locale: str = "", pointer: str = "/templates"
) -> CompiledSections:
    """Compile every non-empty section (cached by text); if any has a syntax error or a
    forbidden construct, raise ``RenderError`` listing the problems of all sections."""
    sources = _sections(sections)
    templates: list[tuple[str, Template]] = []
    invalid: list[dict[str, object]] = []
    for section in SECTIONS:
        source = sources[section]
        if not source:
            continue
        compiled = _CACHE.get(source)
        if compiled.template is not None:
            templates.append((section, compiled.template))
        for issue in compiled.issues:
            invalid.append(
                _problem(
                    issue.code,
                    f"{_where(section, locale, issue.line)}: {issue.message}",
                    _pointer(pointer, locale, section),
                    issue.line,
                )
            )
    if invalid:
        raise RenderError(invalid, "The prompt's templates are not valid.")
    return CompiledSections(tuple(templates))


def render_sections(
    *,
    sections: Mapping[str, object],
    variables: Mapping[str, object],
    locale: str = "",
    max_chars: int = MAX_RENDER_CHARS,
    max_steps: int = MAX_RENDER_STEPS,
    deadline_ms: float | None = RENDER_DEADLINE_MS,
    pointer: str = "/templates",
    snippets: SnippetLibrary | None = None,
) -> dict[str, str]:
    """Render the four sections with already validated variables (``variables_validate``).

    1. Compile every non-empty section (``compile_sections``: cached; every problem of every
       section raised at once as a ``RenderError``).
    2. Render the sections in order under one budget (``sandbox``: ``max_chars`` characters of
       output in total, ``max_steps`` steps, a deadline of ``deadline_ms`` milliseconds); going
       over raises ``RenderError`` (``render_too_large``, ``render_too_complex``,
       ``render_too_slow``) as soon as it happens.
    3. Strip each rendered section of leading and trailing whitespace.

    Returns ``{"system", "context", "instruction", "format"}`` → text. Errors name section,
    locale and line: ``undefined``, ``template_forbidden``, ``render_error``, the snippets'
    (``snippets.SnippetFailed``) and the above. ``snippets``: what ``snippet(...)`` includes.
    """
    return render_compiled(
        compile_sections(sections, locale=locale, pointer=pointer),
        variables=variables,
        locale=locale,
        max_chars=max_chars,
        max_steps=max_steps,
        deadline_ms=deadline_ms,
        pointer=pointer,
        snippets=snippets,
    )


class RenderedSections(dict[str, str]):
    """The four rendered sections (a plain ``dict`` to read and compare), and ``history``: the
    conversation histories of the version's ``messages`` variables, as ``(place, messages)``
    pairs, which ``to_messages`` inserts. Equal to a dict of the same sections."""

    __slots__ = ("history",)

    def __init__(self, sections: Mapping[str, str], history: Sequence[HistoryBlock] = ()) -> None:
        super().__init__(sections)
        self.history: tuple[HistoryBlock, ...] = tuple(history)


def _check_limits(max_chars: int, max_steps: int, deadline_ms: float | None) -> None:
    if max_chars < 1 or max_steps < 1 or (deadline_ms is not None and deadline_ms <= 0):
        raise ValueError("max_chars, max_steps and deadline_ms must be positive.")


def render_compiled(
    compiled: CompiledSections,
    *,
    variables: Mapping[str, object],
    locale: str = "",
    max_chars: int = MAX_RENDER_CHARS,
    max_steps: int = MAX_RENDER_STEPS,
    deadline_ms: float | None = RENDER_DEADLINE_MS,
    pointer: str = "/templates",
    history: Sequence[HistoryBlock] = (),
    snippets: SnippetLibrary | None = None,
) -> RenderedSections:
    """Steps 2 and 3 of ``render_sections``, for sections compiled by ``compile_sections``;
    ``history`` (``variables.histories``) travels with the result to ``to_messages``."""
    _check_limits(max_chars, max_steps, deadline_ms)
    rendered = dict.fromkeys(SECTIONS, "")
    budget = RenderBudget(
        max_chars=max_chars,
        max_steps=max_steps,
        deadline=deadline_ms / 1000 if deadline_ms is not None else None,
    )
    context = new_context(variables)
    with budget_scope(budget), includes(snippets, locale=locale):
        for section, template in compiled.templates:
            try:
                rendered[section] = render_template(template, context, budget).strip()
            except Exception as exc:
                # Total: whatever the template raised leaves as a RenderError naming section,
                # locale and line.
                raise _render_error(exc, section=section, locale=locale, pointer=pointer) from exc
    return RenderedSections(rendered, history)


def _render_error(exc: Exception, *, section: str, locale: str, pointer: str) -> RenderError:
    """Map anything raised while rendering one section to a ``RenderError`` with the code the
    server would answer."""
    line = _template_line(exc)
    at = _pointer(pointer, locale, section)

    def error(code: str, message: str, summary: str | None = None) -> RenderError:
        return RenderError(
            [_problem(code, f"{_where(section, locale, line)}: {message}", at, line)], summary
        )

    if isinstance(exc, BudgetExceeded | SnippetFailed):
        return error(exc.code, exc.detail)
    if isinstance(exc, SecurityError):
        return error("template_forbidden", str(exc), "The prompt's templates are not valid.")
    if isinstance(exc, UndefinedError):
        return error("undefined", exc.message or str(exc))
    if isinstance(exc, TemplateSyntaxError):
        return error(
            "template_syntax", exc.message or str(exc), "The prompt's templates are not valid."
        )
    if isinstance(exc, Unprintable):
        return error("render_error", str(exc))
    message = f"{type(exc).__name__}: {exc}"
    return error("render_error", message[:300])


def to_messages(rendered: Mapping[str, str]) -> list[dict[str, str]]:
    """OpenAI chat messages: the system section as a ``system`` message, then one ``user``
    message of context, instruction and format joined by blank lines. Empty sections are left
    out, and so is a message with nothing in it. A ``RenderedSections``' histories go where they
    were declared (after the context by default), splitting the user message there
    (``history.place_history``, which the server calls too)."""
    history = rendered.history if isinstance(rendered, RenderedSections) else ()
    return place_history(rendered, history)
