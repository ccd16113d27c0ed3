"""Any template, however built, renders within its budget or is refused with a clear problem.

Templates are generated from a grammar of the Jinja constructs authors have (loops, ``set``,
namespaces, list and dict literals, filters, method calls, comparisons, macros and recursion,
captured blocks), over variables of every shape including large ones, and rendered by the
server's ``render_sections`` under a small budget and its wall-clock deadline. Each render must:

- end as text, or as a ``RenderFailed``/``TemplateInvalid`` whose problems carry the known codes
  (a ``render_error`` only for the ordinary errors of a wrong operation, such as ``'a' + 1``);
  never another exception, never a ``MemoryError`` or ``RecursionError`` in disguise;
- keep its memory (tracemalloc's peak) under a bound tied to the budget;
- end: the sandbox enforces the render's own deadline, so no example may hang the run. No
  wall-clock threshold is asserted here (a loaded machine would make it flaky): a render past
  its deadline is one of the clear refusals (``render_too_slow``).
"""

from __future__ import annotations

import tracemalloc

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from registry.errors import RenderFailed, TemplateInvalid
from registry.rendering import Sections, render_sections
from registry.sandbox import WORK_FACTOR

MAX_CHARS = 20_000
MAX_STEPS = 200_000
DEADLINE_MS = 250
# Whatever a render keeps alive is text (charged by the character) or containers (charged one
# step per item, and weighed): allow 64 bytes per character and per step, and a fixed megabyte
# for the compiled template and Jinja's own frames.
MEMORY_BOUND = 64 * (MAX_CHARS * WORK_FACTOR + MAX_STEPS) + 1_000_000

VARIABLES = {
    "items": [3, 1, 2, 5, 4],
    "text": "abc de " * 150,
    "rows": [{"a": i % 3, "b": "x" * i} for i in range(20)],
    "big": list(range(20_000)),
}
CODES = {
    "render_too_large",
    "render_too_complex",
    "render_too_slow",
    "render_error",
    "undefined",
    "template_forbidden",
    "template_syntax",
}
# What a render_error may be: a wrong operation on the wrong value, reported by Python.
ORDINARY_ERRORS = (
    "TypeError",
    "ValueError",
    "ZeroDivisionError",
    "OverflowError",
    "KeyError",
    "IndexError",
    "AttributeError",
    # Jinja's own word for a filter given the wrong kind of value (``reverse`` of a number).
    "FilterArgumentError",
    "The template prints",
)

PRELUDE = (
    "{% set ns = namespace(v=[1]) %}"
    "{% macro twice(x) %}{{ x }}{{ x }}{% endmacro %}"
    "{% macro tree(x, d) %}{% if d > 0 %}{{ tree(x, d - 1) }}{{ tree(x, d - 1) }}{% endif %}"
    "{{ x }}{% endmacro %}"
)

ATOMS = st.sampled_from(
    [
        "0",
        "1",
        "7",
        "100000",
        "'a'",
        "'xy '",
        "none",
        "items",
        "text",
        "rows",
        "big",
        "ns.v",
        "i",
        "range(3)",
        "range(1000)",
        "range(100000)",
        "lipsum(2)",
    ]
)
FILTERS = st.sampled_from(
    [
        "list",
        "max",
        "min",
        "sum",
        "sort",
        "unique",
        "join",
        "join(', ')",
        "length",
        "string",
        "tojson",
        "pprint",
        "upper",
        "title",
        "trim",
        "reverse",
        "first",
        "last",
        "items",
        "dictsort",
        "select",
        "reject",
        "batch(3)",
        "slice(2)",
        "map('string')",
        "map(attribute='a')",
        "selectattr('a')",
        "groupby('a')",
        "center(50)",
        "indent(4)",
        "replace('a', 'bb')",
        "wordcount",
        "wordwrap(20)",
        "truncate(30)",
        "int",
        "abs",
        "default(1)",
        "count",
    ]
)
TIMES = st.sampled_from(["2", "3", "1000", "100000"])


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        pair.map(lambda p: f"[{p[0]}, {p[1]}]"),
        pair.map(lambda p: f"({p[0]}, {p[1]})"),
        pair.map(lambda p: f"{{'k': {p[0]}, 'j': {p[1]}}}"),
        pair.map(lambda p: f"dict(a={p[0]}, b={p[1]})"),
        pair.map(lambda p: f"({p[0]} ~ {p[1]})"),
        pair.map(lambda p: f"({p[0]} + {p[1]})"),
        pair.map(lambda p: f"({p[0]} in {p[1]})"),
        pair.map(lambda p: f"({p[0]} == {p[1]})"),
        pair.map(lambda p: f"({p[0]} if {p[1]} else 0)"),
        st.tuples(inner, TIMES).map(lambda p: f"({p[0]} * {p[1]})"),
        st.tuples(inner, FILTERS).map(lambda p: f"({p[0]})|{p[1]}"),
        inner.map(lambda e: f"(({e})|string).upper()"),
        inner.map(lambda e: f"(({e})|string).split()"),
        inner.map(lambda e: f"(({e})|list)[:]"),
        inner.map(lambda e: f"'%s'|format({e})"),
        inner.map(lambda e: f"twice({e})"),
        st.tuples(inner, st.sampled_from(["2", "8", "30"])).map(lambda p: f"tree({p[0]}, {p[1]})"),
    )


EXPRESSIONS = st.recursive(ATOMS, _compound, max_leaves=6)


def _statements(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    body = st.lists(inner, min_size=1, max_size=3).map("".join)
    return st.one_of(
        st.tuples(COUNTS, body).map(
            lambda p: f"{{% for i in range({p[0]}) %}}{p[1]}{{% endfor %}}"
        ),
        st.tuples(EXPRESSIONS, body).map(lambda p: f"{{% for i in {p[0]} %}}{p[1]}{{% endfor %}}"),
        st.tuples(EXPRESSIONS, body, body).map(
            lambda p: f"{{% if {p[0]} %}}{p[1]}{{% else %}}{p[2]}{{% endif %}}"
        ),
        body.map(lambda b: f"{{% set t %}}{b}{{% endset %}}{{{{ t|length }}}}"),
        body.map(lambda b: f"{{% filter upper %}}{b}{{% endfilter %}}"),
    )


COUNTS = st.sampled_from(["2", "30", "1000", "100000"])
SIMPLE_STATEMENTS = st.one_of(
    EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"),
    EXPRESSIONS.map(lambda e: f"{{% set ns.v = {e} %}}"),
    # What grows: a value doubled or nested in itself, work over a large list, printing.
    st.sampled_from(
        [
            "{% set ns.v = [ns.v, ns.v] %}",
            "{% set ns.v = ns.v + ns.v %}",
            "{% set ns.v = ns.v ~ ns.v %}",
            "{% set ns.v = {'a': ns.v, 'b': [ns.v]} %}",
            "{{ big|max }}",
            "{{ ns.v }}",
            "{{ ns.v|tojson }}",
            "text ",
        ]
    ),
)
TEMPLATES = st.lists(
    st.recursive(SIMPLE_STATEMENTS, _statements, max_leaves=5), min_size=1, max_size=4
).map(lambda statements: PRELUDE + "".join(statements))


def _assert_clear_problems(error: RenderFailed | TemplateInvalid) -> None:
    assert error.problems
    for problem in error.problems:
        assert problem.code in CODES, problem
        assert problem.pointer == "/templates/en/instruction"
        if problem.code == "render_error":
            detail = problem.detail.split(": ", 1)[1]
            assert detail.startswith(ORDINARY_ERRORS), problem


@settings(
    max_examples=120,
    deadline=None,  # the sandbox's own deadline bounds each render; see the docstring
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(TEMPLATES)
def test_any_template_renders_within_its_budget_or_is_refused_clearly(text):
    tracemalloc.start()
    try:
        try:
            rendered = render_sections(
                sections=Sections(instruction=text),
                variables=VARIABLES,
                locale="en",
                max_chars=MAX_CHARS,
                max_steps=MAX_STEPS,
                deadline_ms=DEADLINE_MS,
            )
        except (RenderFailed, TemplateInvalid) as exc:
            _assert_clear_problems(exc)
            event(exc.problems[0].code)  # --hypothesis-show-statistics shows the mix
        else:
            assert len(rendered.instruction) <= MAX_CHARS
            event("rendered")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, (peak, text)
