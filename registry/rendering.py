"""The rendering engine (STYLE R10): sandboxed, strict, cached and total.

Everything that turns a prompt's four sections into text goes through this module: the admin
preview, ``POST …/render``, ``runs.execution.run_prepare`` and the SDK (whose sandbox this module
uses). The contract (DESIGN.md, "Rendering contract"):

- templates run in ``sandbox.ENVIRONMENT``: an ``ImmutableSandboxedEnvironment`` with
  ``StrictUndefined``, no autoescape (prompts are text) and no loader, so a section stands alone;
- ``template_check`` refuses, without running anything, what the sandbox would refuse at render
  time (attributes starting with ``_``, introspection names, mutating calls, includes), so an
  author sees the problem when saving, with its line, instead of a failed render in production;
- compiled templates are cached by the SHA-256 of their text, so equal text compiles once;
- a render is bounded (``sandbox.RenderBudget``): output, text built on the way, steps charged
  by what each operation touches (before it runs where the size is known), the weight of every
  value built, and a wall-clock deadline, so a template cannot hold a worker's memory or CPU;
- a conversation history (a ``messages`` variable) is not text: it travels with the rendered
  sections (``Sections.history``) and ``to_messages`` inserts it where the variable declares
  (``promptregistry.core.history.place_history``, the very function the SDK calls);
- every failure is a domain error (``TemplateInvalid``, ``RenderFailed``) listing ``Problem``s
  with section, locale and line, never a Jinja exception, so the API answers 400 and not 500.

Pure module: no Django, no models; limits come in as parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError, nodes
from jinja2 import meta as jinja_meta
from jinja2.environment import Environment, Template
from jinja2.exceptions import SecurityError
from promptregistry.core.compile_cache import CompileCache, CompileCacheInfo
from promptregistry.core.history import HistoryBlock, place_history
from promptregistry.core.snippets import SnippetLibrary, includes
from promptregistry.core.template_rules import (
    SNIPPET_GLOBAL,
    Issue,
    SnippetCall,
    forbidden_usage,
    snippet_calls,
)

from registry.errors import Problem, RenderFailed, Severity, TemplateInvalid
from registry.sandbox import (
    ENVIRONMENT,
    GLOBAL_NAMES,
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

SECTIONS = ("system", "context", "instruction", "format")

MAX_SECTION_CHARS = 50_000
COMPILE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Sections:
    """The four sections of a localized template, as written or as rendered; once rendered,
    ``history`` holds the conversation histories to insert, as ``(place, messages)`` pairs
    (``registry.variables.histories``). Never part of ``as_dict``: it is not a section."""

    system: str = ""
    context: str = ""
    instruction: str = ""
    format: str = ""
    history: tuple[HistoryBlock, ...] = ()

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SECTIONS}

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, pointer: str = "") -> Sections:
        """Build sections from JSON/YAML; a missing or null section is empty.

        An unknown key is refused rather than dropped ("instructions" for "instruction" would
        otherwise lose the author's text without a word), as is a section that is not text.
        """
        problems: list[Problem] = []
        values: dict[str, str] = {}
        for key, value in data.items():
            at = f"{pointer}/{key}"
            if key not in SECTIONS:
                problems.append(
                    Problem(
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
                problems.append(Problem("invalid_section", f"The {key} section must be text.", at))
        if problems:
            raise TemplateInvalid(problems)
        return cls(**values)


# --- compiling, cached by content hash ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template | None  # None when the text has issues
    issues: tuple[Issue, ...]
    names: tuple[tuple[str, int], ...]  # variables the text uses, with the line of first use
    kinds: tuple[tuple[str, str], ...] = ()  # a type guessed for each, from how the text uses it
    snippets: tuple[SnippetCall, ...] = ()  # the snippets it includes (literal keys only)


@dataclass(frozen=True, slots=True)
class VariableUse:
    """A variable a template uses: where first, and the type its use suggests (a
    ``VariableType`` value), for an editor that offers to declare it."""

    name: str
    line: int
    kind: str


# Filters whose input says what a variable holds (the first that applies wins; see _kinds).
_LIST_FILTERS = frozenset(
    {"join", "first", "last", "sort", "unique", "map", "select", "reject", "selectattr",
     "rejectattr", "sum", "batch", "slice", "list"}
)  # fmt: skip
_NUMBER_FILTERS = frozenset({"round", "abs", "filesizeformat"})
_OBJECT_FILTERS = frozenset({"dictsort", "items"})
_ARITHMETIC = (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)


def _kinds(ast: nodes.Template, used: Collection[str]) -> tuple[tuple[str, str], ...]:
    """A guess at each used variable's type, from the parsed template (no second parser):
    iterated or joined: ``list``; an attribute or key read: ``object``; compared with or
    computed against a number: ``number``; only ever tested (``{% if flag %}``): ``boolean``;
    anything else: ``string``. A guess only: the author confirms it when declaring."""
    evidence: dict[str, set[str]] = {}

    def note(node: nodes.Node, kind: str) -> None:
        if isinstance(node, nodes.Name) and node.name in used:
            evidence.setdefault(node.name, set()).add(kind)

    tested: set[int] = set()
    for node in ast.find_all((nodes.For, nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.For):
            note(node.iter, "list")
            if isinstance(node.iter, nodes.Filter):
                note(node.iter.node, "list")
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            note(node.node, "list" if isinstance(node.arg.value, int) else "object")
        elif isinstance(node, nodes.Getattr | nodes.Getitem):
            note(node.node, "object")
        elif node.name in _LIST_FILTERS:
            note(node.node, "list")
        elif node.name in _NUMBER_FILTERS:
            note(node.node, "number")
        elif node.name in _OBJECT_FILTERS:
            note(node.node, "object")
    for node in ast.find_all(nodes.Compare):
        operands = [node.expr, *(op.expr for op in node.ops)]
        if any(isinstance(o, nodes.Const) and type(o.value) in (int, float) for o in operands):
            for operand in operands:
                note(operand, "number")
    for node in ast.find_all(_ARITHMETIC):
        sides = (node.left, node.right)
        if any(isinstance(o, nodes.Const) and type(o.value) in (int, float) for o in sides):
            for side in sides:
                note(side, "number")
    for node in ast.find_all((nodes.If, nodes.CondExpr)):
        test = node.test.node if isinstance(node.test, nodes.Not) else node.test
        if isinstance(test, nodes.Name):
            tested.add(id(test))
    only_tested = set(used)
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and id(name) not in tested:
            only_tested.discard(name.name)
    kinds = {}
    for name in used:
        found = evidence.get(name, set())
        kind = next((k for k in ("list", "object", "number") if k in found), None)
        kinds[name] = kind or ("boolean" if name in only_tested else "string")
    return tuple(sorted(kinds.items()))


class _VariableTracker(jinja_meta.TrackingCodeGenerator):
    """``jinja2.meta.find_undeclared_variables`` without its optimizer, which would evaluate
    constant expressions (and raise from them) while only looking for names."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.optimizer = None


def _names(ast: nodes.Template) -> tuple[tuple[str, int], ...]:
    tracker = _VariableTracker(ENVIRONMENT)
    tracker.visit(ast)
    used = tracker.undeclared_identifiers - GLOBAL_NAMES
    first: dict[str, int] = {}
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in used:
            first[name.name] = min(first.get(name.name, name.lineno), name.lineno)
    return tuple(sorted(first.items()))


def _compile_uncached(source: str) -> _Compiled:
    names: tuple[tuple[str, int], ...] = ()
    try:
        ast = ENVIRONMENT.parse(source)
        issues = forbidden_usage(ast)
        kinds: tuple[tuple[str, str], ...] = ()
        if not any(issue.code == "template_syntax" for issue in issues):
            names = _names(ast)
            kinds = _kinds(ast, {name for name, _line in names})
        calls = tuple(snippet_calls(ast)[0])
        if issues:
            return _Compiled(None, tuple(issues), names, kinds, calls)
        template = compile_template(ast)
    except TemplateSyntaxError as exc:
        issue = Issue("template_syntax", exc.message or str(exc), exc.lineno)
        return _Compiled(None, (issue,), names)
    except (SyntaxError, RecursionError):
        # Python's own limits on the generated code: about 20 nested blocks, deep expressions.
        message = "The template nests blocks or expressions too deeply."
        return _Compiled(None, (Issue("template_syntax", message, None),), names)
    except (ValueError, OverflowError) as exc:
        # A literal Python refuses to convert, such as an integer of over 4300 digits.
        message = f"The template has a literal that cannot be read ({str(exc)[:80]})."
        return _Compiled(None, (Issue("template_syntax", message, None),), names)
    return _Compiled(template, (), names, kinds, calls)


def _content_key(source: str) -> str:
    # surrogatepass: JSON may carry a lone surrogate, which must hash, not crash.
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


_CACHE: CompileCache[_Compiled] = CompileCache(
    COMPILE_CACHE_SIZE, _compile_uncached, key=_content_key
)


def compile_cache_info() -> CompileCacheInfo:
    """Hits, misses and size of the compiled-template cache (for tests and the admin)."""
    return _CACHE.info()


def compile_cache_clear() -> None:
    _CACHE.clear()


# --- the public functions -----------------------------------------------------------------------


def _where(section: str, locale: str, line: int | None) -> str:
    place = f"The {section} section" + (f" ({locale})" if locale else "")
    return place + (f", line {line}" if line is not None else "")


def _pointer(pointer: str, locale: str, section: str) -> str:
    return "/".join(part for part in (pointer, locale, section) if part)


def variables_used(sections: Sections) -> frozenset[str]:
    """The variables the sections refer to (Jinja's globals such as ``range`` are not variables).

    A section with a syntax error contributes nothing: what it uses cannot be known.
    """
    used: set[str] = set()
    for section in SECTIONS:
        source = getattr(sections, section)
        if source:
            used.update(name for name, _line in _CACHE.get(source).names)
    return frozenset(used)


def snippets_used(sections: Sections) -> tuple[SnippetCall, ...]:
    """The snippets the sections include (``snippet("key")`` follows the snippet's stable
    release, ``version=N`` pins one), in order; a section with a syntax error contributes none."""
    calls: list[SnippetCall] = []
    for section in SECTIONS:
        source = getattr(sections, section)
        if SNIPPET_GLOBAL in source:
            calls.extend(_CACHE.get(source).snippets)
    return tuple(calls)


def templates_snippet_refs(
    templates: Mapping[str, Mapping[str, str]],
) -> tuple[tuple[str, int | None], ...]:
    """The distinct includes ``(key, pinned version or None)`` of a version's templates (locale
    -> sections), every locale, in a stable order."""
    refs: set[tuple[str, int | None]] = set()
    for sections in templates.values():
        for section in SECTIONS:
            source = sections.get(section) or ""
            # An include names the global: a text without the word includes nothing, and is not
            # compiled here (the release cache reads every served version's templates at load).
            if SNIPPET_GLOBAL in source:
                refs.update((call.key, call.version) for call in _CACHE.get(source).snippets)
    return tuple(sorted(refs, key=lambda ref: (ref[0], ref[1] or 0)))


def template_variables(source: str) -> tuple[VariableUse, ...]:
    """The variables one section's text uses, by name, each with its first line and a guessed
    type; empty when the text does not parse (what it uses cannot be known). Cached with the
    compiled template, so an editor may ask on every keystroke."""
    if not source:
        return ()
    compiled = _CACHE.get(source)
    kinds = dict(compiled.kinds)
    return tuple(
        VariableUse(name, line, kinds.get(name, "string")) for name, line in compiled.names
    )


def template_check(
    sections: Sections,
    *,
    locale: str,
    declared: Collection[str],
    pointer: str = "/templates",
    max_section_chars: int = MAX_SECTION_CHARS,
    inserted: Collection[str] = (),
) -> list[Problem]:
    """Every problem in one locale's sections, without rendering anything.

    Pointers are ``{pointer}/{locale}/{section}``. Per section: ``section_too_long`` (not parsed
    further), ``template_syntax`` (with its line; unknown filters and tests included),
    ``template_forbidden`` (see ``_forbidden``), ``undeclared_variable`` for each variable used
    but not declared. Then, as warnings, ``unused_variable`` for each declared variable that no
    section of this locale uses; skipped when a section could not be parsed, since its variables
    are unknown. The ``inserted`` variables (histories, which the render inserts as messages
    rather than through the text) are declared but never warned about.
    """
    problems: list[Problem] = []
    used: set[str] = set()
    declared_names = list(dict.fromkeys(declared))
    all_parsed = True
    for section in SECTIONS:
        source: str = getattr(sections, section)
        at = _pointer(pointer, locale, section)
        if len(source) > max_section_chars:
            all_parsed = False
            problems.append(
                Problem(
                    "section_too_long",
                    f"{_where(section, locale, None)} is longer than {max_section_chars} "
                    "characters.",
                    at,
                )
            )
            continue
        if not source:
            continue
        compiled = _CACHE.get(source)
        for issue in compiled.issues:
            all_parsed = all_parsed and issue.code != "template_syntax"
            problems.append(
                Problem(
                    issue.code,
                    f"{_where(section, locale, issue.line)}: {issue.message}",
                    at,
                    issue.line,
                )
            )
        for name, line in compiled.names:
            used.add(name)
            if name not in declared_names:
                problems.append(
                    Problem(
                        "undeclared_variable",
                        f"{_where(section, locale, line)}: '{name}' is not a declared variable.",
                        at,
                        line,
                    )
                )
    if all_parsed:
        for name in declared_names:
            if name not in used and name not in inserted:
                problems.append(
                    Problem(
                        "unused_variable",
                        f"The variable '{name}' is declared but no section of "
                        f"{locale or 'this locale'} uses it.",
                        _pointer(pointer, locale, ""),
                        severity=Severity.WARNING,
                    )
                )
    return problems


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at (Jinja rewrites tracebacks to template lines)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_sections(
    *,
    sections: Sections,
    variables: Mapping[str, object],
    locale: str = "",
    max_chars: int = MAX_RENDER_CHARS,
    max_steps: int = MAX_RENDER_STEPS,
    deadline_ms: float | None = RENDER_DEADLINE_MS,
    pointer: str = "/templates",
    history: Sequence[HistoryBlock] = (),
    snippets: SnippetLibrary | None = None,
) -> Sections:
    """Render the four sections with already validated variables (``variables_validate``);
    ``history`` (``registry.variables.histories`` of the same values) travels with the result.

    1. Compile every non-empty section (cached by content hash); if any has a syntax error or a
       forbidden construct, raise ``TemplateInvalid`` listing the problems of all sections.
    2. Render the sections in order under one budget (``sandbox``): ``max_chars`` characters of
       output in total, ``max_chars * WORK_FACTOR`` characters built or read on the way,
       ``max_steps`` steps (loop iterations, calls, and the items every operation touches), and
       ``deadline_ms`` milliseconds of wall-clock time (None: no deadline). Going over raises
       ``RenderFailed`` (``render_too_large``, ``render_too_complex``, ``render_too_slow``) as
       soon as it happens.
    3. Strip each rendered section of leading and trailing whitespace: authors' templates end
       with a newline and ``{% if %}`` blocks leave blank lines at the edges, and a chat message
       should carry neither. Whitespace inside a section is kept as rendered.

    ``snippets`` is what ``snippet(...)`` includes (``promptregistry.core.snippets``: what the
    environment being served serves of each snippet); None: no include can be served.

    Errors name section, locale and line: ``undefined`` (``RenderFailed``, e.g. a missing key of
    an object), the include's codes (``RenderFailed``: ``snippet_unavailable``, ``snippet_locale_missing``,
    ``snippet_too_deep``, ``too_many_snippets``…), ``template_forbidden`` (``TemplateInvalid``: the sandbox refused an access),
    ``render_error`` (``RenderFailed``: anything else raised while rendering, such as a division
    by zero). No Jinja exception escapes.
    """
    if max_chars < 1 or max_steps < 1 or (deadline_ms is not None and deadline_ms <= 0):
        raise ValueError("max_chars, max_steps and deadline_ms must be positive.")
    templates: dict[str, Template | None] = {}
    invalid: list[Problem] = []
    for section in SECTIONS:
        source: str = getattr(sections, section)
        compiled = _CACHE.get(source) if source else None
        templates[section] = compiled.template if compiled is not None else None
        for issue in compiled.issues if compiled is not None else ():
            invalid.append(
                Problem(
                    issue.code,
                    f"{_where(section, locale, issue.line)}: {issue.message}",
                    _pointer(pointer, locale, section),
                    issue.line,
                )
            )
    if invalid:
        raise TemplateInvalid(invalid)

    rendered: dict[str, str] = {}
    deadline = deadline_ms / 1000 if deadline_ms is not None else None
    budget = RenderBudget(max_chars=max_chars, max_steps=max_steps, deadline=deadline)
    context = new_context(variables)
    with budget_scope(budget), includes(snippets, locale=locale):
        for section, template in templates.items():
            if template is None:
                rendered[section] = ""
                continue
            try:
                rendered[section] = render_template(template, context, budget).strip()
            except Exception as exc:
                # Total: whatever the template raised (Jinja's errors, the budget's, a
                # ZeroDivisionError) leaves as a domain error naming section, locale and line.
                raise _domain_error(exc, section=section, locale=locale, pointer=pointer) from exc
    return Sections(**rendered, history=tuple(history))


def _domain_error(
    exc: Exception, *, section: str, locale: str, pointer: str
) -> TemplateInvalid | RenderFailed:
    """Map anything raised while rendering one section to the registry's errors."""
    line = _template_line(exc)
    at = _pointer(pointer, locale, section)

    def problem(code: str, message: str) -> Problem:
        return Problem(code, f"{_where(section, locale, line)}: {message}", at, line)

    if isinstance(exc, BudgetExceeded | SnippetFailed):
        return RenderFailed([problem(exc.code, exc.detail)])
    if isinstance(exc, SecurityError):
        return TemplateInvalid([problem("template_forbidden", str(exc))])
    if isinstance(exc, UndefinedError):
        return RenderFailed([problem("undefined", exc.message or str(exc))])
    if isinstance(exc, TemplateSyntaxError):
        return TemplateInvalid([problem("template_syntax", exc.message or str(exc))])
    if isinstance(exc, Unprintable):
        return RenderFailed([problem("render_error", str(exc))])
    message = f"{type(exc).__name__}: {exc}"
    return RenderFailed([problem("render_error", message[:300])])


def to_messages(rendered: Sections) -> list[dict[str, str]]:
    """OpenAI chat messages: the system section as a ``system`` message, then one ``user``
    message of context, instruction and format joined by blank lines. Empty sections are left
    out, and so is a message with nothing in it. The rendered histories go where they were
    declared (after the context by default), splitting the user message there; the SDK's
    function, so a local render gives the same messages."""
    return place_history(rendered.as_dict(), rendered.history)


def with_conversation(rendered: Sections, conversation: HistoryBlock | None) -> Sections:
    """``rendered`` with a caller's conversation (``registry.variables.conversation_block``)
    inserted after everything else it holds; ``None``: as it is."""
    if conversation is None:
        return rendered
    return dataclasses.replace(rendered, history=(*rendered.history, conversation))


def conversation_messages(conversation: HistoryBlock) -> list[dict[str, Any]]:
    """The chat messages a conversation inserts, as JSON (what a call record keeps)."""
    return place_history({}, (conversation,))
