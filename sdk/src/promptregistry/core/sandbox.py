"""The Jinja environment prompts render in, and how a render is charged to its budget.

The ``rendering`` modules own the contract (what is checked, cached, rendered and how errors
read); this module owns the sandbox it runs in: one ``ImmutableSandboxedEnvironment`` with
``StrictUndefined`` and no autoescape (prompts are text, not HTML), no loader, and a budget per
render (``budget.RenderBudget``), so that a template can refuse to run but never hold a worker's
memory or CPU. Every operation is charged by what it touches, *before* it runs wherever the size
is known:

- output: ``max_chars`` characters across the four sections;
- work: ``max_chars * WORK_FACTOR`` characters of text built or read on the way (a filter or a
  method over text is charged its input's length before it runs, its result after; ``~``, ``+``,
  ``%``, text captured by macros and ``{% set %}``/``{% filter %}`` blocks);
- steps: ``max_steps`` (default 1,000,000): a loop iteration is one, a call (macro, method,
  global, filter) ``CALL_STEPS``, and an operation over a list, tuple or dict one per item: a
  filter's input (``big|max`` over 100,000 items costs 100,000 before ``max`` runs), the right
  side of ``in`` and both sides of a comparison, each item a lazy filter (``map``, ``select``)
  yields;
- values: every list, tuple and dict a template builds (literals, slices, filter and call
  results, ``+``) is weighed: the characters it would print as, a value nested in it counted each
  time it appears, remembered per container so a new one costs its length. A value heavier than
  the work budget is refused as it is built, so ``[ns.l, ns.l]`` in a loop stops after about
  twenty doublings; printing a value (``{{ x }}``, ``~``, ``|string``, ``|tojson``, ``%``,
  ``format``, ``join``) is refused when its weight exceeds ``max_chars``, before anything walks it;
- single values: operations that build a large value in one go (``'x' * n``, ``center(n)``,
  ``'%*d'``, ``replace('', s)``, ``10 ** n``, ``join``, ``lipsum(n)``) are checked before they run
  against ``max_chars`` (``sandbox_checks``);
- time: a wall-clock deadline per render (``deadline``, default 250 ms), read every few charges,
  refuses the render (``render_too_slow``) when what no counter sees (one large comparison in a
  loop) adds up.

Each is wired through a hook Jinja documents: the sandbox's intercepted binary operators and
``call``, the filters and tests in the environment (wrapped), the ``code_generator_class``
(literals, slices, comparisons, ``~`` and buffers that count what they capture) and
``nodes.EnvironmentAttribute`` calls added to ``for`` loops. The service still runs renders under
a worker time limit behind all of this.

Pure module: no Django, no I/O; limits come from the caller through ``RenderBudget``: on the
server from the settings ``PROMPT_RENDER_MAX_CHARS``, ``PROMPT_RENDER_MAX_STEPS`` and
``PROMPT_RENDER_DEADLINE_MS``, in the SDK from ``Client(render_deadline_ms=…)``. The server
(``registry.rendering``) and this SDK (``promptregistry.core.rendering``) both render in it: one
implementation, so a local render and ``POST …/render`` can never drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame, operators
from jinja2.environment import Template
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum, pass_eval_context

from .budget import (
    CALL_STEPS,
    MAX_RENDER_CHARS,
    MAX_RENDER_STEPS,
    RENDER_DEADLINE_MS,
    WORK_FACTOR,
    BudgetExceeded,
    RenderBudget,
    budget_scope,
    current_budget,
)
from .sandbox_checks import (
    FILTER_CHECKS,
    check_power,
    check_printf,
    check_repeat,
    check_str_method,
    counted_items,
)

__all__ = [
    "CALL_STEPS",
    "ENVIRONMENT",
    "GLOBAL_NAMES",
    "MAX_RENDER_CHARS",
    "MAX_RENDER_STEPS",
    "RENDER_DEADLINE_MS",
    "SNIPPET_INCLUDER",
    "WORK_FACTOR",
    "BudgetExceeded",
    "RenderBudget",
    "SnippetFailed",
    "Unprintable",
    "budget_scope",
    "compile_template",
    "count_loop_iterations",
    "new_context",
    "render_template",
]

# Filters whose cost does not depend on their input's size (len(), a default, an attribute).
_CONSTANT_FILTERS = frozenset({"attr", "count", "d", "default", "first", "last", "length"})
# Filters that go through a list's items without turning them into text: charged one step per
# item. Every other filter turns its input into text, so a list given to one is weighed first.
_ITEM_FILTERS = frozenset(
    {
        "batch",
        "dictsort",
        "groupby",
        "items",
        "join",  # its items are weighed one by one (sandbox_checks.counted_items)
        "list",
        "map",
        "max",
        "min",
        "random",
        "reject",
        "rejectattr",
        "reverse",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)
# Tests that compare their value with their argument, item by item.
_COMPARING_TESTS = frozenset(
    {"in", "eq", "equalto", "==", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">="}
    | {"lessthan", "greaterthan"}
)
_CONTAINERS = (list, tuple, dict)


class Unprintable(TypeError):
    """A template printed a function, class or iterator instead of a value."""


def _counted(items: Iterable[Any], budget: RenderBudget) -> Iterator[Any]:
    """A lazy filter's result, one step per item it yields."""
    for item in items:
        budget.step()
        yield item


def _charged_result(result: Any, budget: RenderBudget) -> Any:
    if isinstance(result, Iterator) and not isinstance(result, str | bytes):
        return _counted(result, budget)
    budget.charge(result)
    return result


# --- the environment -----------------------------------------------------------------------------


class _CaptureBuffer(list[str]):
    """The buffer of a macro, ``{% set %}``, ``{% filter %}`` or call block, charged as it grows.

    Captured text is not yielded until its block ends, so counting only the output would let
    ``{% filter upper %}`` around nested loops fill memory first.
    """

    __slots__ = ("_budget",)

    def __init__(self) -> None:
        super().__init__()
        self._budget = current_budget()

    def append(self, item: str) -> None:
        self._budget.charge(item)
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = tuple(items)
        for item in items:
            self._budget.charge(item)
        super().extend(items)


class _PromptCodeGenerator(CodeGenerator):
    """Jinja's code generator, with what the template builds, compares and joins charged."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.prompt_buffer()")

    def _charged(self, hook: str, visit: Callable[[], None]) -> None:
        self.write(f"environment.{hook}(")
        visit()
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        # A literal may nest a value in itself: [ns.l, ns.l] doubles what printing walks.
        self.write("environment.prompt_charge(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.prompt_charge(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # a target ({% for a, b in … %}), not a value
            super().visit_Tuple(node, frame)
            return
        self.write("environment.prompt_charge(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        # A slice copies: big[:] in a loop copies big each time.
        self.write("environment.prompt_charge(")
        super().visit_Getitem(node, frame)
        self.write(")")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        self.write("(")
        self._operand(node.expr, frame)
        for operand in node.ops:
            self.visit(operand, frame)
        self.write(")")

    def visit_Operand(self, node: nodes.Operand, frame: Frame) -> None:
        # `x in big` and `a == b` go through big, or through both lists, item by item.
        self.write(f" {operators[node.op]} ")
        self._operand(node.expr, frame)

    def _operand(self, expr: nodes.Expr, frame: Frame) -> None:
        if isinstance(expr, nodes.Const):
            self.visit(expr, frame)
        else:
            self._charged("prompt_touch", lambda: self.visit(expr, frame))

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # "~" turns each operand into text, and doubling a namespace value in a loop reaches a
        # gigabyte in 30 iterations: operands are weighed before, the result charged after.
        # Jinja's own visit_Concat, with each operand wrapped.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.prompt_charge({join}((")
        for arg in node.nodes:
            if isinstance(arg, nodes.Const):
                self.visit(arg, frame)
            else:
                self._charged("prompt_text", lambda arg=arg: self.visit(arg, frame))
            self.write(", ")
        self.write(")))")


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _PromptCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        if operator == "*":
            check_repeat(left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            budget.printable(right, "A %-format")
            check_printf(left, right)
        result = super().call_binop(context, operator, left, right)
        budget.charge(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if getattr(obj, "__func__", None) is _PromptEnvironment.prompt_iter:
            return obj(*args)  # our own loop counter (count_loop_iterations), not a template call
        budget = current_budget()
        budget.step(CALL_STEPS)
        # The sandbox hands out str.format wrapped; the wrapper keeps the method in __wrapped__.
        target = getattr(obj, "__wrapped__", obj)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            # A method of a text goes through it: text.upper() in a loop costs the text each time.
            budget.charge_text(len(owner))
            name = getattr(target, "__name__", "")
            for value in (*args, *kwargs.values()):
                budget.printable(value, f"{name}()")
            if name == "join" and args:
                args = (counted_items(args[0], len(owner), "join()"), *args[1:])
            else:
                check_str_method(owner, name, args, kwargs)
        elif type(owner) in _CONTAINERS:
            budget.touch(owner)  # index(), count(), copy() go through the items
        result = super().call(context, obj, *args, **kwargs)
        budget.charge(result)
        return result

    # Called from the generated code (see _PromptCodeGenerator and count_loop_iterations).

    def prompt_buffer(self) -> _CaptureBuffer:
        return _CaptureBuffer()

    def prompt_charge(self, value: Any) -> Any:
        current_budget().charge(value)
        return value

    def prompt_touch(self, value: Any) -> Any:
        current_budget().touch(value)
        return value

    def prompt_text(self, value: Any) -> Any:
        current_budget().printable(value, "Joining with ~")
        return value

    def prompt_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = current_budget()
        for item in iterable:
            budget.step()
            yield item


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _printable(value: object, seen: set[int], depth: int = 0) -> bool:
    """Only data prints: text, numbers, and lists and dicts of them (32 levels at most).

    ``seen`` holds the containers already found printable, so a value nested many times in
    another is looked at once."""
    if type(value) in _PLAIN or isinstance(value, str | int | float):
        return True
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises the undefined (or security) error here
    if depth >= 32 or type(value) not in _CONTAINERS:
        return False
    if id(value) in seen:
        return True
    if isinstance(value, dict):
        printable = all(
            _printable(key, seen, depth + 1) and _printable(item, seen, depth + 1)
            for key, item in value.items()
        )
    else:
        printable = all(_printable(item, seen, depth + 1) for item in value)  # type: ignore[attr-defined]
    if printable:
        seen.add(id(value))
    return printable


def _finalize(value: object) -> object:
    """Refuse to print anything but data: ``{{ items|map('upper') }}`` would otherwise put
    ``<generator object …>`` in a prompt, and ``{{ cycler }}`` a class name; and refuse, before
    walking it, a value that would print longer than the prompt may be."""
    if type(value) in _PLAIN or isinstance(value, Undefined):
        return value
    if type(value) in _CONTAINERS:
        current_budget().printable(value, "Printing a value")
        if _printable(value, set()):
            return value
    elif _printable(value, set()):
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
        current_budget().allow(n * max * 12, f"lipsum({n})")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


ENVIRONMENT.globals["lipsum"] = _lipsum


class SnippetFailed(Exception):
    """An include (``snippet("brand.voice")``) that cannot be served: ``code`` is the problem's
    code (``snippet_unavailable``, ``snippet_locale_missing``, ``snippet_too_deep``,
    ``too_many_snippets``, ``snippet_invalid``, ``snippet_error``), ``detail`` its sentence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# What ``snippet(...)`` calls during a render: set by ``promptregistry.core.snippets`` around the
# render (a context variable, so two threads rendering at once never see each other's).
SNIPPET_INCLUDER: ContextVar[Callable[[str, int | None], str] | None] = ContextVar(
    "promptregistry_snippet_includer", default=None
)


def _snippet(key: str, version: int | None = None) -> str:
    """``{{ snippet("brand.voice") }}``: the snippet's text as the render's environment serves it
    (``version=3``: that committed version). Its arguments are literals (``template_rules``)."""
    include = SNIPPET_INCLUDER.get()
    if include is None:
        raise SnippetFailed(
            "snippet_unavailable", f"Snippets are not available here; {key!r} cannot be included."
        )
    return include(key, version)


ENVIRONMENT.globals["snippet"] = _snippet
# Names a template may use without declaring them: range, dict, lipsum, cycler, joiner, namespace,
# snippet.
GLOBAL_NAMES = frozenset(ENVIRONMENT.globals)
# Jinja's default template globals are a ChainMap over these, copied key by key into every
# render's context: the largest cost of a small render. Nothing adds globals after this.
_GLOBALS = dict(ENVIRONMENT.globals)
_jinja_join = ENVIRONMENT.filters["join"]


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: Any = "", attribute: Any = None) -> str:
    """Jinja's ``join``, counting as it goes: ``range(100000)|map(...)`` is lazy until here."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = counted_items(value, len(str(d)), "join()")
    result: str = _jinja_join(eval_ctx, items, d)
    return result


ENVIRONMENT.filters["join"] = _join


def _metered_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter so it is charged by its input before it runs, and by its result after.

    Jinja passes some filters the environment or eval context first (``jinja_pass_arg``, which
    functools.wraps copies onto the wrapper so Jinja keeps passing it); the value is next.
    """
    skip = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0
    check = FILTER_CHECKS.get(name)
    constant, items = name in _CONSTANT_FILTERS, name in _ITEM_FILTERS

    @functools.wraps(original)
    def metered(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step(CALL_STEPS)
        if not constant and len(args) > skip:
            value = args[skip]
            if items or type(value) not in _CONTAINERS:
                budget.touch(value)
            else:
                budget.printable(value, f"The {name} filter")
            if not items:
                for argument in (*args[skip + 1 :], *kwargs.values()):
                    budget.printable(argument, f"The {name} filter")
        if check is not None:
            check(*args[skip:], **kwargs)
        return _charged_result(original(*args, **kwargs), budget)

    return metered


def _metered_test(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    comparing = name in _COMPARING_TESTS

    @functools.wraps(original)
    def metered(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.step()
        if comparing:
            for value in args:
                budget.touch(value)
        return original(*args, **kwargs)

    return metered


for _name, _filter in list(ENVIRONMENT.filters.items()):
    ENVIRONMENT.filters[_name] = _metered_filter(_name, _filter)
for _name, _test in list(ENVIRONMENT.tests.items()):
    ENVIRONMENT.tests[_name] = _metered_test(_name, _test)


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


def compile_template(ast: nodes.Template) -> Template:
    """A parsed template (already checked by ``template_rules``), counted and compiled."""
    count_loop_iterations(ast)
    code = ENVIRONMENT.compile(ast)
    return ENVIRONMENT.template_class.from_code(ENVIRONMENT, code, _GLOBALS)


def new_context(variables: Mapping[str, object]) -> Context:
    """The context one render's sections run in, one after the other (``render_template``)."""
    return Context(ENVIRONMENT, {**_GLOBALS, **variables}, None, {})


def render_template(template: Template, context: Context, budget: RenderBudget) -> str:
    """Render one compiled template in ``context`` (from ``new_context``), its output counted
    chunk by chunk so an oversized render stops as soon as it is known to be (call inside
    ``budget_scope``).

    ``Template.generate`` without its per-call overhead: the context is built once per render
    and its template-level names (``{% set %}`` outside blocks, ``{% block %}``) are reset here,
    so no section sees another's; Jinja's traceback rewriting (template lines in errors) runs
    only when something is raised.
    """
    context.vars = {}
    context.exported_vars = set()
    context.blocks = (
        {name: [block] for name, block in template.blocks.items()} if template.blocks else {}
    )
    stream = template.root_render_func(context)
    chunks: list[str] = []
    append = chunks.append
    # RenderBudget.emit, inlined: this loop runs for every chunk of every prompt.
    output, limit = budget.output, budget.max_chars
    try:
        for chunk in stream:
            output += len(chunk)
            if output > limit:
                budget.output = output - len(chunk)
                budget.emit(chunk)  # raises render_too_large
            append(chunk)
    except Exception:
        ENVIRONMENT.handle_exception()  # raises it again, its traceback in template lines
    finally:
        budget.output = output
        # A generator: closing it on an abort releases the template's frames at once.
        stream.close()
    return "".join(chunks)
