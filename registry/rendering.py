"""The rendering engine (STYLE R10): sandboxed, strict, cached and total.

Everything that turns a prompt's four sections into text goes through this module: the admin
preview, ``POST …/render``, ``run_prompt`` and (as a copy) the SDK. The contract (DESIGN.md,
"Rendering contract"):

- one module-level ``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` and no autoescape
  (prompts are text, not HTML), and no loader: a section stands alone, so ``include``, ``import``
  and ``extends`` are refused;
- ``template_check`` refuses, without running anything, what the sandbox would refuse at render
  time (attributes starting with ``_``, introspection names, mutating calls), so an author sees
  the problem when saving, with its line, instead of a failed render in production;
- compiled templates are cached by the SHA-256 of their text, so equal text compiles once;
- a render is bounded: its output, the text it builds along the way and the loop iterations and
  calls it makes all have a budget, so a template cannot hold a worker's memory or CPU;
- every failure is a domain error (``TemplateInvalid``, ``RenderFailed``) listing ``Problem``s,
  never a Jinja exception, so the API answers 400 and not 500.

The budget is enforced through hooks Jinja documents for this: the sandbox's intercepted binary
operators and ``call``, the environment's ``code_generator_class`` (buffers that count what is
captured by macros, ``{% set %}`` and ``{% filter %}`` blocks) and AST nodes calling the
environment (``nodes.EnvironmentAttribute``) to count loop iterations. It is best effort against
hostile templates, in layers; the service should still run renders under a worker time limit.

Pure module: no Django, no models; limits come in as parameters.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2 import meta as jinja_meta
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum, pass_eval_context

from registry.errors import Problem, RenderFailed, Severity, TemplateInvalid

SECTIONS = ("system", "context", "instruction", "format")

MAX_SECTION_CHARS = 50_000
MAX_RENDER_CHARS = 200_000
# Loop iterations plus calls (macros, methods, globals). Jinja's own range() stops at 100,000
# items, so one full range loop fits; nested ones do not. About a second of CPU at worst.
MAX_RENDER_STEPS = 1_000_000
# Text built along the way (filter results, concatenations, captured blocks) may be this many
# times the output cap: a chain of filters over a long document builds several copies of it.
WORK_FACTOR = 10
COMPILE_CACHE_SIZE = 4096

_MAX_INT_BITS = 4096

# Attribute names refused statically besides those starting with "_": the ways to walk from a
# value to code and frames (the sandbox refuses most at run time; refusing them when saving
# gives the author a line number instead of a failed render).
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
# Methods the immutable sandbox refuses to call on lists, dicts, sets and deques. Values reaching
# a template are JSON data, whose members are never callable, so calling one of these names is
# always an attempt to change a value.
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
# Filters taking an attribute name (or a dotted path): the positional index of that argument
# after the filtered value. Every filter's ``attribute=`` keyword is checked as well.
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


@dataclass(frozen=True, slots=True)
class Sections:
    """The four sections of a localized template, as written or as rendered."""

    system: str = ""
    context: str = ""
    instruction: str = ""
    format: str = ""

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


# --- the render budget --------------------------------------------------------------------------


class _Exhausted(Exception):
    """A render went over one of its budgets (raised inside the template, mapped below)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _Unprintable(TypeError):
    """A template printed a function, class or iterator instead of a value."""


def _size(value: object) -> int:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


@dataclass(slots=True)
class _Budget:
    """What one ``render_sections`` call may still spend, across its four sections."""

    max_chars: int = MAX_RENDER_CHARS
    max_steps: int = MAX_RENDER_STEPS
    output: int = 0
    work: int = 0
    steps: int = 0

    def emit(self, chunk: str) -> None:
        self.output += len(chunk)
        if self.output > self.max_chars:
            raise _Exhausted(
                "render_too_large",
                f"The rendered prompt is longer than {self.max_chars} characters.",
            )

    def charge(self, value: object) -> None:
        self.work += _size(value)
        if self.work > self.max_chars * WORK_FACTOR:
            raise _Exhausted(
                "render_too_large",
                f"The template builds more than {self.max_chars * WORK_FACTOR} characters of "
                "text on the way to its output.",
            )

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _Exhausted(
                "render_too_complex",
                f"The template runs more than {self.max_steps} loop iterations and calls.",
            )

    def allow(self, size: int, what: str) -> None:
        """Refuse *before* building a value of ``size`` characters that could not be output."""
        if size > self.max_chars:
            raise _Exhausted(
                "render_too_large",
                f"{what} would build more than the {self.max_chars} characters a prompt may have.",
            )


# One budget per render; a ContextVar so concurrent renders (threads, async) never share one.
_BUDGET: ContextVar[_Budget | None] = ContextVar("prompt_render_budget", default=None)


def _current_budget() -> _Budget:
    # Outside render_sections (Jinja folding constants at compile time) a fresh default budget
    # still applies the per-value limits.
    budget = _BUDGET.get()
    return budget if budget is not None else _Budget()


# --- pre-checks of the operations that build a large value in one go ---------------------------

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _width(digits: str) -> int:
    # int() refuses strings over 4300 digits; anything over nine digits is too wide anyway.
    return int(digits) if len(digits) <= 9 else 10**9


def _ints(values: object) -> Iterator[int]:
    items: Iterable[object]
    if isinstance(values, Mapping):
        items = values.values()
    elif isinstance(values, tuple | list):
        items = values
    else:
        items = (values,)
    for item in items:
        if isinstance(item, int):
            yield item


def _check_printf(fmt: str, args: object, budget: _Budget) -> None:
    """``'%*d' % (n, 1)``, ``'%.999999999f'|format(x)``: widths and precisions are sizes."""
    starred = False
    for spec in _PRINTF_SPEC.finditer(fmt):
        for part in spec.groups():
            if part == "*":
                starred = True
            elif part:
                budget.allow(_width(part), "A %-format width")
    if starred:
        for value in _ints(args):
            budget.allow(value, "A %-format width")


def _check_format_string(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``'{:>999999999}'.format(x)`` and nested widths (``'{:{w}}'``) are sizes too."""
    budget = _current_budget()
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # malformed: the call itself raises, and that becomes a render error
    for _literal, _field, spec, _conversion in fields:
        if not spec:
            continue
        for digits in _DIGITS.findall(spec):
            budget.allow(_width(digits), "A format width")
        if "{" in spec:
            for value in _ints(args):
                budget.allow(value, "A format width")
            for value in _ints(dict(kwargs)):
                budget.allow(value, "A format width")


def _replace_size(text: str, old: str, new: str, count: object) -> int:
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(0, len(new) - len(old))


def _counted_items(items: Iterable[object], separator: int, what: str) -> list[object]:
    """Materialize what a join will glue together, refusing as soon as it is too long."""
    budget = _current_budget()
    total = 0
    kept: list[object] = []
    for item in items:
        total += len(str(item)) + separator
        budget.allow(total, what)
        kept.append(item)
    return kept


def _check_str_method(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    budget = _current_budget()
    if name in {"center", "ljust", "rjust", "zfill"}:
        width = args[0] if args else kwargs.get("width")
        if isinstance(width, int):
            budget.allow(width, f"{name}({width})")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            budget.allow(len(owner) + owner.count("\t") * tabsize, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        if isinstance(old, str) and isinstance(new, str):
            budget.allow(_replace_size(owner, old, new, count), "replace()")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.allow(len(owner) * max(1, longest), "translate()")
    elif name in {"format", "format_map"}:
        _check_format_string(owner, args, kwargs if name == "format" else {})
        if name == "format_map" and args and isinstance(args[0], Mapping):
            _check_format_string(owner, (), args[0])


def _check_repeat(left: object, right: object) -> None:
    budget = _current_budget()
    for sequence, times in ((left, right), (right, left)):
        if isinstance(times, int) and isinstance(sequence, str | list | tuple):
            weight = (
                len(sequence)
                if isinstance(sequence, str)
                else sum(max(1, _size(item)) for item in sequence)
            )
            budget.allow(weight * max(times, 0), "Repeating a value")
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise _Exhausted("render_too_large", "A multiplication gives too large a number.")


def _check_power(base: object, exponent: object) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # 10 ** 10 ** 10 would run until the worker is killed; a prompt needs no such number.
        if abs(base).bit_length() * exponent > _MAX_INT_BITS:
            raise _Exhausted("render_too_large", "A power gives too large a number.")


# --- the environment -----------------------------------------------------------------------------


class _CaptureBuffer(list[str]):
    """The buffer of a macro, ``{% set %}``, ``{% filter %}`` or call block, charged as it grows.

    Text captured this way is not yielded until the block ends, so counting only the output would
    let ``{% filter upper %}`` around nested loops fill memory first.
    """

    __slots__ = ("_budget",)

    def __init__(self) -> None:
        super().__init__()
        self._budget = _current_budget()

    def append(self, item: str) -> None:
        self._budget.charge(item)
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = tuple(items)
        for item in items:
            self._budget.charge(item)
        super().extend(items)


class _PromptCodeGenerator(CodeGenerator):
    """Jinja's code generator, with captured text and filter/concat results charged."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.prompt_buffer()")

    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        self.write("environment.prompt_charge(")
        super().visit_Filter(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # "~" is not an interceptable operator, and doubling a namespace value 30 times in a loop
        # reaches a gigabyte in 30 steps.
        self.write("environment.prompt_charge(")
        super().visit_Concat(node, frame)
        self.write(")")


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _PromptCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right, _current_budget())
        result = super().call_binop(context, operator, left, right)
        _current_budget().charge(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _current_budget()
        budget.step()
        # The sandbox hands out str.format wrapped; the wrapper keeps the method in __wrapped__.
        target = getattr(obj, "__wrapped__", obj)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name == "join" and args:
                args = (_counted_items(args[0], len(owner), "join()"), *args[1:])
            else:
                _check_str_method(owner, name, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        budget.charge(result)
        return result

    def call_filter(
        self,
        name: str,
        value: Any,
        args: Any = None,
        kwargs: Any = None,
        context: Context | None = None,
        eval_ctx: EvalContext | None = None,
    ) -> Any:
        # map() applies a filter per item through here, so range(100000)|map(...) is counted.
        budget = _current_budget()
        budget.step()
        result = super().call_filter(name, value, args, kwargs, context, eval_ctx)
        budget.charge(result)
        return result

    # Called from the generated code (see _PromptCodeGenerator and _instrument).

    def prompt_buffer(self) -> _CaptureBuffer:
        return _CaptureBuffer()

    def prompt_charge(self, value: Any) -> Any:
        _current_budget().charge(value)
        return value

    def prompt_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _current_budget()
        for item in iterable:
            budget.step()
            yield item


_SCALARS = (str, int, float, type(None))


def _printable(value: object, depth: int = 0) -> bool:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises the undefined (or security) error here
    if isinstance(value, _SCALARS):
        return True
    if depth >= 32:
        return False
    if isinstance(value, list | tuple):
        return all(_printable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            _printable(key, depth + 1) and _printable(item, depth + 1)
            for key, item in value.items()
        )
    return False


def _finalize(value: object) -> object:
    """Refuse to print anything but data: ``{{ items|map('upper') }}`` would otherwise put
    ``<generator object …>`` in a prompt, and ``{{ cycler }}`` a class and a memory address."""
    if isinstance(value, Undefined) or _printable(value):
        return value
    raise _Unprintable(
        f"The template prints a {type(value).__name__} object, not a value; call it, or turn it "
        "into text with a filter such as |list or |join."
    )


ENVIRONMENT = _PromptEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    finalize=_finalize,
)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    """Jinja's lorem ipsum, bounded: ``lipsum(100000)`` would build text for minutes."""
    if isinstance(n, int) and isinstance(max, int):
        _current_budget().allow(n * max * 12, f"lipsum({n})")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


ENVIRONMENT.globals["lipsum"] = _lipsum
_GLOBAL_NAMES = frozenset(ENVIRONMENT.globals)


def _guard_filter(name: str, check: Callable[..., None]) -> None:
    """Wrap a built-in filter so ``check`` sees its arguments before it builds anything."""
    original = ENVIRONMENT.filters[name]

    # functools.wraps copies ``jinja_pass_arg``, so Jinja passes the same leading argument
    # (environment or eval context) to the wrapper as to the filter.
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    ENVIRONMENT.filters[name] = guarded


def _center_check(value: Any, width: Any = 80) -> None:
    if isinstance(width, int):
        _current_budget().allow(width, f"center({width})")


def _indent_check(text: Any, width: Any = 4, first: Any = False, blank: Any = False) -> None:
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(text)
    _current_budget().allow(len(text) + (text.count("\n") + 1) * unit, "indent()")


def _count_check(value: Any, count: Any, fill_with: Any = None) -> None:
    if isinstance(count, int):
        _current_budget().allow(count, "batch() or slice()")


def _replace_check(eval_ctx: Any, text: Any, old: Any, new: Any, count: Any = None) -> None:
    size = _replace_size(str(text), str(old), str(new), count)
    _current_budget().allow(size, "replace()")


def _format_check(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_printf(str(value), kwargs or args, _current_budget())


def _wordwrap_check(
    environment: Any,
    text: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> None:
    separator = str(wrapstring if wrapstring is not None else environment.newline_sequence)
    text = str(text)
    # At most one line per two characters (a word and a space), so one separator each.
    _current_budget().allow(len(text) + (len(text) // 2 + 1) * len(separator), "wordwrap()")


def _tojson_check(eval_ctx: Any, value: Any, indent: Any = None) -> None:
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if width > 16:
        # Indentation repeats per nesting level and line; no prompt needs more than a few spaces.
        raise _Exhausted("render_too_large", "tojson() indents by at most 16.")


_guard_filter("center", _center_check)
_guard_filter("indent", _indent_check)
_guard_filter("batch", _count_check)
_guard_filter("slice", _count_check)
_guard_filter("replace", _replace_check)
_guard_filter("format", _format_check)
_guard_filter("wordwrap", _wordwrap_check)
_guard_filter("tojson", _tojson_check)
_jinja_join = ENVIRONMENT.filters["join"]


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: Any = "", attribute: Any = None) -> str:
    """Jinja's ``join``, counting as it goes: ``range(100000)|map(...)|join`` is lazy until here."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = _counted_items(value, len(str(d)), "join()")
    result: str = _jinja_join(eval_ctx, items, d)
    return result


ENVIRONMENT.filters["join"] = _join


# --- static checks ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Issue:
    """A problem found in a section's text, before its pointer and locale are known."""

    code: str
    message: str
    line: int | None


def _forbidden_name(name: object) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in _INTROSPECTION_NAMES)


def _forbidden_path(path: object) -> str | None:
    """The forbidden part of an attribute path (``"a.__class__"``, ``"x[_y]"``), if any."""
    if not isinstance(path, str):
        return None
    for part in re.split(r"[.\[\]]", path):
        if _forbidden_name(part):
            return part
    return None


def _format_fields(fmt: str) -> Iterator[str]:
    """Field names of a ``str.format`` string, nested ones (``{0:{1.x}}``) included."""
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
    """What the template would do that the sandbox refuses (or that can never work), by line.

    Walks the AST without running anything:

    1. attribute access (``x.__class__``, ``x.mro``) and constant item access
       (``x['__class__']``) to a name starting with ``_`` or an introspection name;
    2. the same names as constant attribute arguments of filters (``|attr('__class__')``,
       ``|map(attribute='__class__')``, ``|map('attr', '__class__')``, ``|selectattr('_x')``);
    3. fields of constant ``str.format`` strings (``'{0.__class__}'.format(x)``);
    4. calls to methods that mutate (``items.append(x)``);
    5. ``include``, ``import`` and ``extends``: there is no loader, a section stands alone;
    6. unknown filters and tests, which Jinja only reports at render time inside an ``if``.
    """
    issues: list[_Issue] = []

    def refuse(node: nodes.Node, message: str, code: str = "template_forbidden") -> None:
        issues.append(_Issue(code, message, node.lineno))

    for node in ast.find_all(
        (nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Test, nodes.Call, nodes.Extends)
        + (nodes.Include, nodes.Import, nodes.FromImport)
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


def _instrument(ast: nodes.Template) -> None:
    """Make every ``for`` loop iterate through ``environment.prompt_iter``, one step per item.

    An empty loop body yields no output and calls nothing, so without this
    ``{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}``
    would spin for hours unseen by every other budget.
    """
    for loop in ast.find_all(nodes.For):
        counted = nodes.Call(
            nodes.EnvironmentAttribute("prompt_iter"),
            [loop.iter],
            [],
            None,
            None,
            lineno=loop.iter.lineno,
        )
        counted.set_environment(ENVIRONMENT)
        loop.iter = counted


# --- compiling, cached by content hash ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template | None  # None when the text has issues
    issues: tuple[_Issue, ...]
    names: tuple[tuple[str, int], ...]  # variables the text uses, with the line of first use


def _names(ast: nodes.Template) -> tuple[tuple[str, int], ...]:
    used = jinja_meta.find_undeclared_variables(ast) - _GLOBAL_NAMES
    first: dict[str, int] = {}
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in used:
            first[name.name] = min(first.get(name.name, name.lineno), name.lineno)
    return tuple(sorted(first.items()))


def _compile_uncached(source: str) -> _Compiled:
    names: tuple[tuple[str, int], ...] = ()
    try:
        ast = ENVIRONMENT.parse(source)
        issues = _forbidden(ast)
        if not any(issue.code == "template_syntax" for issue in issues):
            names = _names(ast)
        if issues:
            return _Compiled(None, tuple(issues), names)
        _instrument(ast)
        code = ENVIRONMENT.compile(ast)
    except TemplateSyntaxError as exc:
        issue = _Issue("template_syntax", exc.message or str(exc), exc.lineno)
        return _Compiled(None, (issue,), names)
    except (SyntaxError, RecursionError):
        # Python's own limits on the generated code: about 20 nested blocks, deep expressions.
        issue = _Issue("template_syntax", "The template nests blocks or expressions too deeply.", 1)
        return _Compiled(None, (issue,), names)
    template = ENVIRONMENT.template_class.from_code(
        ENVIRONMENT, code, ENVIRONMENT.make_globals(None)
    )
    return _Compiled(template, (), names)


class CompileCacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int


class _CompileCache:
    """A bounded LRU of compiled sections keyed by the SHA-256 of their text."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, _Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str) -> _Compiled:
        # surrogatepass: JSON may carry a lone surrogate, which must hash, not crash.
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
            self.misses += 1
        # Compiled outside the lock: two threads meeting the same new text both compile it and
        # the second store wins. Equal text compiles to an equal template, and a lock held over a
        # compile would make every render wait for every other new template.
        entry = _compile_uncached(source)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
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


def template_check(
    sections: Sections,
    *,
    locale: str,
    declared: Collection[str],
    pointer: str = "/templates",
    max_section_chars: int = MAX_SECTION_CHARS,
) -> list[Problem]:
    """Every problem in one locale's sections, without rendering anything.

    Pointers are ``{pointer}/{locale}/{section}``. Per section: ``section_too_long`` (not parsed
    further), ``template_syntax`` (with its line; unknown filters and tests included),
    ``template_forbidden`` (see ``_forbidden``), ``undeclared_variable`` for each variable used
    but not declared. Then, as warnings, ``unused_variable`` for each declared variable that no
    section of this locale uses; skipped when a section could not be parsed, since its variables
    are unknown.
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
            if name not in used:
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


def _render_one(template: Template, variables: Mapping[str, object], budget: _Budget) -> str:
    chunks: list[str] = []
    stream = template.generate(dict(variables))
    try:
        # Counted chunk by chunk, so an oversized render stops as soon as it is known to be,
        # instead of after the whole text has been built.
        for chunk in stream:
            budget.emit(chunk)
            chunks.append(chunk)
    finally:
        stream.close()
    return "".join(chunks)


def render_sections(
    *,
    sections: Sections,
    variables: Mapping[str, object],
    locale: str = "",
    max_chars: int = MAX_RENDER_CHARS,
    max_steps: int = MAX_RENDER_STEPS,
    pointer: str = "/templates",
) -> Sections:
    """Render the four sections with already validated variables (``variables_validate``).

    1. Compile every non-empty section (cached by content hash); if any has a syntax error or a
       forbidden construct, raise ``TemplateInvalid`` listing the problems of all sections.
    2. Render the sections in order under one budget: ``max_chars`` characters of output in
       total, ``max_chars * WORK_FACTOR`` characters built on the way, ``max_steps`` loop
       iterations and calls. Going over raises ``RenderFailed`` (``render_too_large``,
       ``render_too_complex``) as soon as it happens.
    3. Strip each rendered section of leading and trailing whitespace: authors' templates end
       with a newline and ``{% if %}`` blocks leave blank lines at the edges, and a chat message
       should carry neither. Whitespace inside a section is kept as rendered.

    Errors name section, locale and line: ``undefined`` (``RenderFailed``, e.g. a missing key of
    an object), ``template_forbidden`` (``TemplateInvalid``: the sandbox refused an access),
    ``render_error`` (``RenderFailed``: anything else raised while rendering, such as a division
    by zero). No Jinja exception escapes.
    """
    if max_chars < 1 or max_steps < 1:
        raise ValueError("max_chars and max_steps must be positive.")
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

    budget = _Budget(max_chars=max_chars, max_steps=max_steps)
    token = _BUDGET.set(budget)
    rendered: dict[str, str] = {}
    try:
        for section, template in templates.items():
            if template is None:
                rendered[section] = ""
                continue
            try:
                rendered[section] = _render_one(template, variables, budget).strip()
            except Exception as exc:
                raise _domain_error(exc, section=section, locale=locale, pointer=pointer) from exc
    finally:
        _BUDGET.reset(token)
    return Sections(**rendered)


def _domain_error(
    exc: Exception, *, section: str, locale: str, pointer: str
) -> TemplateInvalid | RenderFailed:
    """Map anything raised while rendering one section to the registry's errors."""
    line = _template_line(exc)
    at = _pointer(pointer, locale, section)

    def problem(code: str, message: str) -> Problem:
        return Problem(code, f"{_where(section, locale, line)}: {message}", at, line)

    if isinstance(exc, _Exhausted):
        return RenderFailed([problem(exc.code, exc.detail)])
    if isinstance(exc, SecurityError):
        return TemplateInvalid([problem("template_forbidden", str(exc))])
    if isinstance(exc, UndefinedError):
        return RenderFailed([problem("undefined", exc.message or str(exc))])
    if isinstance(exc, TemplateSyntaxError):
        return TemplateInvalid([problem("template_syntax", exc.message or str(exc))])
    if isinstance(exc, _Unprintable):
        return RenderFailed([problem("render_error", str(exc))])
    message = f"{type(exc).__name__}: {exc}"
    return RenderFailed([problem("render_error", message[:300])])


def to_messages(rendered: Sections) -> list[dict[str, str]]:
    """OpenAI chat messages: the system section as a ``system`` message, then one ``user``
    message of context, instruction and format joined by blank lines. Empty sections are left
    out, and so is a message with nothing in it."""
    messages: list[dict[str, str]] = []
    if rendered.system:
        messages.append({"role": "system", "content": rendered.system})
    user = [text for text in (rendered.context, rendered.instruction, rendered.format) if text]
    if user:
        messages.append({"role": "user", "content": "\n\n".join(user)})
    return messages
