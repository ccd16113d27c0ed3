"""Rendering a prompt's four sections: the server's rendering contract, applied locally.

A copy of what decides output and failures in the server's ``registry/rendering.py`` (and its
sandbox, ``sandbox``), so that the SDK renders what ``POST …/render`` would:

1. templates run in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``, no autoescape
   and no loader, under the same bounded budget (200,000 characters and 1,000,000 steps by
   default, the server's defaults; both are parameters);
2. before anything runs, a section is refused when it reaches what the sandbox forbids
   (attributes starting with ``_``, introspection names, mutating calls, includes): committed
   versions never do, since the server refuses them when they are saved;
3. compiled templates are cached by their text, so a section compiles once per process;
4. each rendered section is stripped of leading and trailing whitespace;
5. every failure is a ``RenderError`` listing problems with the server's codes and pointers
   (``/templates/{locale}/{section}``), never a Jinja exception.

``to_messages`` turns rendered sections into OpenAI chat messages exactly as the server does.
"""

from __future__ import annotations

import re
import string
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, cast

from jinja2 import TemplateSyntaxError, UndefinedError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError

from promptregistry.errors import RenderError

from .sandbox import (
    ENVIRONMENT,
    MAX_RENDER_CHARS,
    MAX_RENDER_STEPS,
    BudgetExceeded,
    RenderBudget,
    Unprintable,
    budget_scope,
    count_loop_iterations,
)

__all__ = [
    "MAX_RENDER_CHARS",
    "MAX_RENDER_STEPS",
    "SECTIONS",
    "compile_cache_clear",
    "compile_cache_info",
    "render_sections",
    "to_messages",
]

SECTIONS = ("system", "context", "instruction", "format")
COMPILE_CACHE_SIZE = 4096

# Attribute names refused statically besides those starting with "_": the ways from a value to
# code and frames (the server's list).
_INTROSPECTION_NAMES = frozenset(
    {
        "mro",
        "func_globals",
        "func_code",
        "func_closure",
        "func_defaults",
        "func_dict",
        "im_func",
        "im_self",
        "im_class",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
    }
)
# Methods the immutable sandbox refuses to call on lists, dicts, sets and deques.
_MUTATING_METHODS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "popleft",
        "remove",
        "reverse",
        "sort",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
        "appendleft",
        "extendleft",
        "rotate",
    }
)
# Filters taking an attribute name: the positional index of that argument after the value.
_ATTRIBUTE_ARGUMENTS = {
    "attr": 0,
    "selectattr": 0,
    "rejectattr": 0,
    "groupby": 0,
    "sum": 0,
    "sort": 2,
    "unique": 1,
    "min": 1,
    "max": 1,
}


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


@dataclass(frozen=True, slots=True)
class _Issue:
    code: str
    message: str
    line: int | None


def _forbidden_name(name: object) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in _INTROSPECTION_NAMES)


def _forbidden_path(path: object) -> str | None:
    if not isinstance(path, str):
        return None
    for part in re.split(r"[.\[\]]", path):
        if _forbidden_name(part):
            return part
    return None


def _format_fields(fmt: str) -> Iterator[str]:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return
    for _literal, field, spec, _conversion in parsed:
        if field:
            yield field
        if spec and "{" in spec:
            yield from _format_fields(spec)


def _const_str(node: nodes.Node | None) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


def _forbidden(ast: nodes.Template) -> list[_Issue]:
    """What the template would do that the sandbox refuses (or that can never work), by line:
    forbidden attributes and items, forbidden attribute arguments of filters and format
    fields, mutating calls, include/import/extends, and unknown filters and tests."""
    issues: list[_Issue] = []

    def refuse(node: nodes.Node, message: str, code: str = "template_forbidden") -> None:
        issues.append(_Issue(code, message, node.lineno))

    for node in ast.find_all(
        (
            nodes.Getattr,
            nodes.Getitem,
            nodes.Filter,
            nodes.Test,
            nodes.Call,
            nodes.Extends,
            nodes.Include,
            nodes.Import,
            nodes.FromImport,
        )
    ):
        if isinstance(node, nodes.Getattr) and _forbidden_name(node.attr):
            refuse(node, f"Templates cannot reach the attribute '{node.attr}'.")
        elif isinstance(node, nodes.Getitem) and _forbidden_name(_const_str(node.arg)):
            refuse(node, f"Templates cannot reach the item '{_const_str(node.arg)}'.")
        elif isinstance(node, nodes.Filter | nodes.Test):
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            known = ENVIRONMENT.filters if isinstance(node, nodes.Filter) else ENVIRONMENT.tests
            if node.name not in known:
                refuse(node, f"There is no {kind} named '{node.name}'.", "template_syntax")
                continue
            candidates = [kw.value for kw in node.kwargs if kw.key == "attribute"]
            index = _ATTRIBUTE_ARGUMENTS.get(node.name) if kind == "filter" else None
            if index is not None and len(node.args) > index:
                candidates.append(node.args[index])
            if node.name == "map" and _const_str(node.args[0] if node.args else None) == "attr":
                candidates.extend(node.args[1:2])
            for candidate in candidates:
                part = _forbidden_path(_const_str(candidate))
                if part is not None:
                    refuse(node, f"Templates cannot reach the attribute '{part}'.")
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            method = node.node.attr
            if method in _MUTATING_METHODS:
                refuse(node, f"Templates cannot change values; '{method}()' is not allowed.")
            fmt = _const_str(node.node.node)
            if method in {"format", "format_map"} and fmt is not None:
                for field in _format_fields(fmt):
                    part = _forbidden_path(field)
                    if part is not None:
                        refuse(node, f"Templates cannot reach the attribute '{part}'.")
        elif isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            refuse(node, "Sections stand alone: include, import and extends are not available.")
    return issues


# --- compiling, cached by text ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template | None  # None when the text has issues
    issues: tuple[_Issue, ...]


def _compile_uncached(source: str) -> _Compiled:
    try:
        ast = ENVIRONMENT.parse(source)
        issues = _forbidden(ast)
        if issues:
            return _Compiled(None, tuple(issues))
        count_loop_iterations(ast)
        code = ENVIRONMENT.compile(ast)
    except TemplateSyntaxError as exc:
        return _Compiled(None, (_Issue("template_syntax", exc.message or str(exc), exc.lineno),))
    except (SyntaxError, RecursionError):
        # Python's own limits on the generated code: about 20 nested blocks, deep expressions.
        message = "The template nests blocks or expressions too deeply."
        return _Compiled(None, (_Issue("template_syntax", message, None),))
    except (ValueError, OverflowError) as exc:
        # A literal Python refuses to convert, such as an integer of over 4300 digits.
        message = f"The template has a literal that cannot be read ({str(exc)[:80]})."
        return _Compiled(None, (_Issue("template_syntax", message, None),))
    template = ENVIRONMENT.template_class.from_code(
        ENVIRONMENT, code, ENVIRONMENT.make_globals(None)
    )
    return _Compiled(template, ())


class CompileCacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int


class _CompileCache:
    """A bounded LRU of compiled sections keyed by their text.

    The server keys by the text's SHA-256; here the text itself is the key, because a bundle's
    strings are the same objects on every render and Python caches their hash, so a hit costs a
    dictionary lookup instead of hashing the text on the hot path. A key is the string a bundle
    already holds, so the cache adds little memory of its own."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, _Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str) -> _Compiled:
        with self._lock:
            entry = self._entries.get(source)
            if entry is not None:
                self._entries.move_to_end(source)
                self.hits += 1
                return entry
            self.misses += 1
        # Compiled outside the lock: two threads meeting the same new text both compile it and
        # the second store wins; equal text compiles to an equal template.
        entry = _compile_uncached(source)
        with self._lock:
            self._entries[source] = entry
            self._entries.move_to_end(source)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return entry

    def info(self) -> CompileCacheInfo:
        with self._lock:
            return CompileCacheInfo(self.hits, self.misses, len(self._entries), self.maxsize)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


_CACHE = _CompileCache(COMPILE_CACHE_SIZE)


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


def _render_one(template: Template, variables: Mapping[str, object], budget: RenderBudget) -> str:
    chunks: list[str] = []
    # A generator: closing it on an abort releases the template's frames at once.
    stream = cast(Generator[str, None, None], template.generate(dict(variables)))
    try:
        # Counted chunk by chunk, so an oversized render stops as soon as it is known to be.
        for chunk in stream:
            budget.emit(chunk)
            chunks.append(chunk)
    finally:
        stream.close()
    return "".join(chunks)


def render_sections(
    *,
    sections: Mapping[str, object],
    variables: Mapping[str, object],
    locale: str = "",
    max_chars: int = MAX_RENDER_CHARS,
    max_steps: int = MAX_RENDER_STEPS,
    pointer: str = "/templates",
) -> dict[str, str]:
    """Render the four sections with already validated variables (``variables_validate``).

    1. Compile every non-empty section (cached); if any has a syntax error or a forbidden
       construct, raise ``RenderError`` listing the problems of all sections.
    2. Render the sections in order under one budget (``max_chars`` characters of output in
       total, ``max_steps`` loop iterations and calls); going over raises ``RenderError``
       (``render_too_large``, ``render_too_complex``) as soon as it happens.
    3. Strip each rendered section of leading and trailing whitespace.

    Returns ``{"system", "context", "instruction", "format"}`` → text. Errors name section,
    locale and line: ``undefined``, ``template_forbidden``, ``render_error`` and the above.
    """
    if max_chars < 1 or max_steps < 1:
        raise ValueError("max_chars and max_steps must be positive.")
    sources = _sections(sections)
    templates: dict[str, Template | None] = {}
    invalid: list[dict[str, object]] = []
    for section in SECTIONS:
        source = sources[section]
        compiled = _CACHE.get(source) if source else None
        templates[section] = compiled.template if compiled is not None else None
        for issue in compiled.issues if compiled is not None else ():
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

    rendered: dict[str, str] = {}
    with budget_scope(RenderBudget(max_chars=max_chars, max_steps=max_steps)) as budget:
        for section, template in templates.items():
            if template is None:
                rendered[section] = ""
                continue
            try:
                rendered[section] = _render_one(template, variables, budget).strip()
            except Exception as exc:
                # Total: whatever the template raised leaves as a RenderError naming section,
                # locale and line.
                raise _render_error(exc, section=section, locale=locale, pointer=pointer) from exc
    return rendered


def _render_error(exc: Exception, *, section: str, locale: str, pointer: str) -> RenderError:
    """Map anything raised while rendering one section to a ``RenderError`` with the code the
    server would answer."""
    line = _template_line(exc)
    at = _pointer(pointer, locale, section)

    def error(code: str, message: str, summary: str | None = None) -> RenderError:
        return RenderError(
            [_problem(code, f"{_where(section, locale, line)}: {message}", at, line)], summary
        )

    if isinstance(exc, BudgetExceeded):
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
    out, and so is a message with nothing in it."""
    messages: list[dict[str, str]] = []
    system = rendered.get("system", "")
    if system:
        messages.append({"role": "system", "content": system})
    user = [text for text in (rendered.get(name, "") for name in SECTIONS[1:]) if text]
    if user:
        messages.append({"role": "user", "content": "\n\n".join(user)})
    return messages
