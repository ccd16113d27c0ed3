"""The Jinja environment prompts render in, and the budget that bounds one render.

The ``rendering`` modules own the contract (what is checked, cached, rendered and how errors
read); this module owns the sandbox it runs in: one ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``
and no autoescape (prompts are text, not HTML), no loader, and a budget per render, so that a
template can refuse to run but never hold a worker's memory or CPU:

- output: ``max_chars`` characters across the four sections (counted by ``rendering``);
- work: ``max_chars * WORK_FACTOR`` characters built on the way (filter results, ``~``, ``+``,
  ``%``, call results, text captured by macros and ``{% set %}``/``{% filter %}`` blocks);
- steps: ``max_steps`` loop iterations and calls (macros, methods, globals, mapped filters;
  a call counts ``CALL_STEPS``);
- single values: operations that build a large value in one go (``'x' * n``, ``center(n)``,
  ``'%*d'``, ``replace('', s)``, ``10 ** n``, ``join``, ``lipsum(n)``) are checked *before* they
  run against ``max_chars``, since afterwards the memory is already spent.

Each is wired through a hook Jinja documents: the sandbox's intercepted binary operators and
``call``, ``Environment.call_filter``, the ``code_generator_class`` (buffers that count what they
capture) and ``nodes.EnvironmentAttribute`` calls added to ``for`` loops. It is defence in layers,
not a proof: the service should still run renders under a worker time limit.

Pure module: no Django, no I/O; limits come from the caller through ``RenderBudget``. The server
(``registry.rendering``) and this SDK (``promptregistry.core.rendering``) both render in it: one
implementation, so a local render and ``POST …/render`` can never drift apart.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum, pass_eval_context

MAX_RENDER_CHARS = 200_000
# Steps: a loop iteration is one, a call (macro, method, global, mapped filter) costs CALL_STEPS
# because it costs about that much more time. A million steps is about a second of CPU at worst
# (exponentially recursive macros); prompts use a few thousand.
MAX_RENDER_STEPS = 1_000_000
CALL_STEPS = 5
# Text built along the way may be this many times the output cap: a chain of filters over a
# long document builds several copies of it.
WORK_FACTOR = 10

_MAX_INT_BITS = 4096


class BudgetExceeded(Exception):
    """A render went over one of its budgets; ``code`` is the problem code to report."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Unprintable(TypeError):
    """A template printed a function, class or iterator instead of a value."""


def _size(value: object) -> int:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


@dataclass(slots=True)
class RenderBudget:
    """What one render may still spend, across its four sections."""

    max_chars: int = MAX_RENDER_CHARS
    max_steps: int = MAX_RENDER_STEPS
    output: int = 0
    work: int = 0
    steps: int = 0

    def emit(self, chunk: str) -> None:
        self.output += len(chunk)
        if self.output > self.max_chars:
            raise BudgetExceeded(
                "render_too_large",
                f"The rendered prompt is longer than {self.max_chars} characters.",
            )

    def charge(self, value: object) -> None:
        self.work += _size(value)
        if self.work > self.max_chars * WORK_FACTOR:
            raise BudgetExceeded(
                "render_too_large",
                f"The template builds more than {self.max_chars * WORK_FACTOR} characters of "
                "text on the way to its output.",
            )

    def step(self, weight: int = 1) -> None:
        self.steps += weight
        if self.steps > self.max_steps:
            raise BudgetExceeded(
                "render_too_complex",
                f"The template runs more than {self.max_steps} steps (a loop iteration is one, "
                f"a call {CALL_STEPS}).",
            )

    def allow(self, size: int, what: str) -> None:
        """Refuse *before* building a value of ``size`` characters that could not be output."""
        if size > self.max_chars:
            raise BudgetExceeded(
                "render_too_large",
                f"{what} would build more than the {self.max_chars} characters a prompt may have.",
            )


# One budget per render; a ContextVar so concurrent renders (threads, async) never share one.
_BUDGET: ContextVar[RenderBudget | None] = ContextVar("prompt_render_budget", default=None)


@contextmanager
def budget_scope(budget: RenderBudget) -> Iterator[RenderBudget]:
    """Charge everything the templates do inside the ``with`` block to ``budget``."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _budget() -> RenderBudget:
    # Outside budget_scope (Jinja folding constants at compile time) a fresh default budget still
    # applies the per-value limits.
    budget = _BUDGET.get()
    return budget if budget is not None else RenderBudget()


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


def _check_printf(fmt: str, args: object) -> None:
    """``'%*d' % (n, 1)``, ``'%.999999999f'|format(x)``: widths and precisions are sizes."""
    budget = _budget()
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
    budget = _budget()
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
            for value in (*_ints(args), *_ints(dict(kwargs))):
                budget.allow(value, "A format width")


def _replace_size(text: str, old: str, new: str, count: object) -> int:
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(0, len(new) - len(old))


def _counted_items(items: Iterable[object], separator: int, what: str) -> list[object]:
    """Materialize what a join will glue together, refusing as soon as it is too long."""
    budget = _budget()
    total = 0
    kept: list[object] = []
    for item in items:
        total += len(str(item)) + separator
        budget.allow(total, what)
        kept.append(item)
    return kept


def _check_str_method(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    budget = _budget()
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
    elif name == "format":
        _check_format_string(owner, args, kwargs)
    elif name == "format_map" and args and isinstance(args[0], Mapping):
        _check_format_string(owner, (), args[0])


def _check_repeat(left: object, right: object) -> None:
    for sequence, times in ((left, right), (right, left)):
        if isinstance(times, int) and isinstance(sequence, str | list | tuple):
            weight = (
                len(sequence)
                if isinstance(sequence, str)
                else sum(max(1, _size(item)) for item in sequence)
            )
            _budget().allow(weight * max(times, 0), "Repeating a value")
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > _MAX_INT_BITS
    ):
        raise BudgetExceeded("render_too_large", "A multiplication gives too large a number.")


def _check_power(base: object, exponent: object) -> None:
    # 10 ** 10000000 would run until the worker is killed; a prompt needs no such number.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and abs(base).bit_length() * max(exponent, 0) > _MAX_INT_BITS
    ):
        raise BudgetExceeded("render_too_large", "A power gives too large a number.")


# --- the environment -----------------------------------------------------------------------------


class _CaptureBuffer(list[str]):
    """The buffer of a macro, ``{% set %}``, ``{% filter %}`` or call block, charged as it grows.

    Captured text is not yielded until its block ends, so counting only the output would let
    ``{% filter upper %}`` around nested loops fill memory first.
    """

    __slots__ = ("_budget",)

    def __init__(self) -> None:
        super().__init__()
        self._budget = _budget()

    def append(self, item: str) -> None:
        self._budget.charge(item)
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = tuple(items)
        for item in items:
            self._budget.charge(item)
        super().extend(items)


class _PromptCodeGenerator(CodeGenerator):
    """Jinja's code generator, with captured text and filter and ``~`` results charged."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.prompt_buffer()")

    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        self.write("environment.prompt_charge(")
        super().visit_Filter(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # "~" is not an interceptable operator, and doubling a namespace value in a loop
        # reaches a gigabyte in 30 iterations.
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
            _check_printf(left, right)
        result = super().call_binop(context, operator, left, right)
        _budget().charge(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if getattr(obj, "__func__", None) is _PromptEnvironment.prompt_iter:
            return obj(*args)  # our own loop counter (count_loop_iterations), not a template call
        budget = _budget()
        budget.step(CALL_STEPS)
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
        # map() applies its filter to each item through here: range(100000)|map(...) counts.
        budget = _budget()
        budget.step(CALL_STEPS)
        result = super().call_filter(name, value, args, kwargs, context, eval_ctx)
        budget.charge(result)
        return result

    # Called from the generated code (see _PromptCodeGenerator and count_loop_iterations).

    def prompt_buffer(self) -> _CaptureBuffer:
        return _CaptureBuffer()

    def prompt_charge(self, value: Any) -> Any:
        _budget().charge(value)
        return value

    def prompt_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _budget()
        for item in iterable:
            budget.step()
            yield item


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _printable(value: object, depth: int = 0) -> bool:
    if type(value) in _PLAIN or isinstance(value, str | int | float):
        return True
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises the undefined (or security) error here
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
    ``<generator object …>`` in a prompt, and ``{{ cycler }}`` a class name."""
    if type(value) in _PLAIN or isinstance(value, Undefined) or _printable(value):
        return value
    raise Unprintable(
        f"The template prints a {type(value).__name__} object, not a value; call it, or turn it "
        "into text with a filter such as |list or |join."
    )


ENVIRONMENT = _PromptEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    finalize=_finalize,
    # No constant folding: the optimizer evaluates expressions while compiling, outside any
    # render's budget, and under StrictUndefined it raises from the compiler itself
    # ("{{ (1).upper ~ x }}"). Templates run when rendered, never when saved.
    optimized=False,
)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's lorem ipsum, bounded: ``lipsum(100000)`` would build text for minutes."""
    if isinstance(n, int) and isinstance(max, int):
        _budget().allow(n * max * 12, f"lipsum({n})")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


ENVIRONMENT.globals["lipsum"] = _lipsum
# Names a template may use without declaring them: range, dict, lipsum, cycler, joiner, namespace.
GLOBAL_NAMES = frozenset(ENVIRONMENT.globals)


def _guard_filter(name: str, check: Callable[..., None]) -> None:
    """Wrap a built-in filter so ``check`` sees its arguments before it builds anything.

    ``check`` takes the arguments a template writes (value first), whatever Jinja passes first:
    some filters get the environment or eval context as a leading argument (``jinja_pass_arg``,
    which functools.wraps copies onto the wrapper so Jinja keeps passing it).
    """
    original = ENVIRONMENT.filters[name]
    skip = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*args[skip:], **kwargs)
        return original(*args, **kwargs)

    ENVIRONMENT.filters[name] = guarded


def _center_check(value: Any, width: Any = 80) -> None:
    if isinstance(width, int):
        _budget().allow(width, f"center({width})")


def _indent_check(text: Any, width: Any = 4, first: Any = False, blank: Any = False) -> None:
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(text)
    _budget().allow(len(text) + (text.count("\n") + 1) * unit, "indent()")


def _count_check(value: Any, count: Any, fill_with: Any = None) -> None:
    if isinstance(count, int):
        _budget().allow(count, "batch() or slice()")


def _replace_check(text: Any, old: Any, new: Any, count: Any = None) -> None:
    _budget().allow(_replace_size(str(text), str(old), str(new), count), "replace()")


def _format_check(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_printf(str(value), kwargs or args)


def _wordwrap_check(
    text: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> None:
    separator = str(wrapstring if wrapstring is not None else ENVIRONMENT.newline_sequence)
    text = str(text)
    # At most one line per two characters (a letter and a space), so one separator each.
    _budget().allow(len(text) + (len(text) // 2 + 1) * len(separator), "wordwrap()")


def _tojson_check(value: Any, indent: Any = None) -> None:
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if width > 16:
        # Indentation repeats per nesting level and line; no prompt needs more than a few spaces.
        raise BudgetExceeded("render_too_large", "tojson() indents by at most 16.")


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
    """Jinja's ``join``, counting as it goes: ``range(100000)|map(...)`` is lazy until here."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = _counted_items(value, len(str(d)), "join()")
    result: str = _jinja_join(eval_ctx, items, d)
    return result


ENVIRONMENT.filters["join"] = _join


def count_loop_iterations(ast: nodes.Template) -> None:
    """Make every ``for`` loop of a parsed template iterate through ``prompt_iter`` (one step
    per item), before it is compiled.

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
