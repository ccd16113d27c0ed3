"""The rendering engine (registry.rendering, registry.sandbox): pure, no database.

What it must guarantee (STYLE R10): templates run sandboxed and strict, compile once per text,
cannot grow past their budget, and every failure is a domain error naming section, locale and
line, never a Jinja exception or an escape from the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import rendering
from registry.errors import Problem, RenderFailed, Severity, TemplateInvalid
from registry.rendering import (
    SECTIONS,
    Sections,
    compile_cache_clear,
    compile_cache_info,
    render_sections,
    template_check,
    to_messages,
    variables_used,
)
from registry.sandbox import CALL_STEPS, ENVIRONMENT, GLOBAL_NAMES

# Anything that would show the sandbox leaked Python internals into a prompt.
LEAKS = ("<class", "built-in", "<function", "<module", "<bound method", "mappingproxy", " at 0x")


def render(template: str, section: str = "instruction", /, **variables: Any) -> str:
    # No deadline: which of the counted budgets refuses a template must not depend on the
    # machine's speed (the deadline has its own tests, on a clock they control).
    rendered = render_sections(
        sections=Sections(**{section: template}),
        variables=variables,
        locale="fr-CA",
        deadline_ms=None,
    )
    return str(getattr(rendered, section))


def problem_of(
    error: pytest.ExceptionInfo[RenderFailed] | pytest.ExceptionInfo[TemplateInvalid],
) -> Problem:
    assert len(error.value.problems) == 1
    return error.value.problems[0]


def codes(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(problem.code, problem.pointer) for problem in problems]


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    compile_cache_clear()
    yield
    compile_cache_clear()


# --- Sections and messages ----------------------------------------------------------------------


def test_sections_round_trip_through_a_mapping() -> None:
    sections = Sections(system="s", context="c", instruction="i", format="f")
    assert sections.as_dict() == {"system": "s", "context": "c", "instruction": "i", "format": "f"}
    assert Sections.from_mapping(sections.as_dict()) == sections
    assert tuple(sections.as_dict()) == SECTIONS


def test_a_missing_or_null_section_is_empty() -> None:
    assert Sections.from_mapping({"system": None, "instruction": "i"}) == Sections(instruction="i")


def test_an_unknown_or_non_text_section_is_refused_not_dropped() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        Sections.from_mapping({"instructions": "i", "system": 3}, pointer="/templates/fr")
    assert codes(caught.value.problems) == [
        ("unknown_section", "/templates/fr/instructions"),
        ("invalid_section", "/templates/fr/system"),
    ]


def test_messages_are_a_system_message_and_one_user_message() -> None:
    rendered = Sections(system="You help.", context="Ctx", instruction="Do it.", format="JSON")
    assert to_messages(rendered) == [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Ctx\n\nDo it.\n\nJSON"},
    ]


def test_empty_sections_are_left_out_of_the_messages() -> None:
    assert to_messages(Sections(instruction="Do it.", format="JSON")) == [
        {"role": "user", "content": "Do it.\n\nJSON"}
    ]
    assert to_messages(Sections(system="You help.")) == [{"role": "system", "content": "You help."}]
    assert to_messages(Sections()) == []


# --- rendering ----------------------------------------------------------------------------------


def test_sections_render_with_their_variables() -> None:
    sections = Sections(
        system="You are {{ persona }}.",
        instruction=(
            "Reply to {{ customer.name|title }} about:\n"
            "{% for item in items %}- {{ loop.index }}. {{ item }}\n{% endfor %}"
        ),
        format="{{ {'ok': vip}|tojson }}",
    )
    rendered = render_sections(
        sections=sections,
        variables={
            "persona": "a support agent",
            "customer": {"name": "ann lee"},
            "items": ["refund", "delay"],
            "vip": True,
        },
        locale="en",
    )
    assert rendered == Sections(
        system="You are a support agent.",
        instruction="Reply to Ann Lee about:\n- 1. refund\n- 2. delay",
        format='{"ok": true}',
    )


@pytest.mark.parametrize(
    "later",
    ["{{ x }}", "{{ m() }}", "{{ ns.v }}", "{% block b %}{{ self.a() }}{% endblock %}"],
)
def test_a_section_never_sees_what_an_earlier_one_set(later: str) -> None:
    # The sections of one render share one context (built once per render): what a section
    # sets, defines or declares as a block must be gone when the next one runs.
    first = (
        "{% set x = 1 %}{% macro m() %}M{% endmacro %}{% set ns = namespace(v=2) %}"
        "{% block a %}A{% endblock %}"
    )
    with pytest.raises(RenderFailed) as caught:
        render_sections(sections=Sections(system=first, instruction=later), variables={})
    assert problem_of(caught).code in {"undefined", "render_error"}
    assert problem_of(caught).pointer == "/templates/instruction"


def test_rendered_sections_are_stripped_at_the_edges_only() -> None:
    text = "\n{% if true %}\n  Line one.\n\n  Line two.\n{% endif %}\n"
    assert render(text) == "Line one.\n\n  Line two."


def test_jinja_globals_work_without_being_declared() -> None:
    text = (
        "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }} {{ dict(a=1)['a'] }} {% set c = cycler('x', 'y') %}"
        "{{ c.next() }}{{ c.next() }} {% set j = joiner('|') %}{{ j() }}a{{ j() }}b"
    )
    assert render(text) == "3 1 xy a|b"


def test_common_filters_and_methods_work() -> None:
    text = (
        "{{ names|join(', ') }}|{{ names|map('upper')|list }}|{{ '%05d'|format(7) }}|"
        "{{ '{:>4}'.format('x') }}|{{ text|indent(2) }}|{{ text|replace('a', 'b') }}|"
        "{{ ', '.join(names) }}|{{ text|wordwrap(3) }}|{{ names|batch(1)|list|length }}"
    )
    out = render(text, names=["a", "b"], text="a a\na")
    assert out == "a, b|['A', 'B']|00007|   x|a a\n  a|b b\nb|a, b|a a\na|2"


def test_a_none_optional_variable_renders_and_tests_false() -> None:
    assert render("{% if tone %}{{ tone }}{% else %}neutral{% endif %}", tone=None) == "neutral"


def test_rendering_leaves_the_variables_unchanged() -> None:
    items = ["b", "a"]
    assert render("{{ items|sort|join }}", items=items) == "ab"
    assert items == ["b", "a"]


# --- every error becomes a domain error -------------------------------------------------------


def test_an_undefined_variable_is_a_render_failure_with_its_line() -> None:
    with pytest.raises(RenderFailed) as caught:
        render("Hello\n{{ customer }}")
    problem = problem_of(caught)
    assert (problem.code, problem.pointer, problem.line) == (
        "undefined",
        "/templates/fr-CA/instruction",
        2,
    )
    assert "instruction section (fr-CA), line 2" in problem.detail
    assert "'customer' is undefined" in problem.detail


def test_a_missing_key_of_an_object_is_undefined() -> None:
    with pytest.raises(RenderFailed) as caught:
        render("{{ order.total }}", order={"id": 1})
    assert problem_of(caught).code == "undefined"


def test_a_sandbox_refusal_at_render_time_is_template_forbidden() -> None:
    # The attribute name arrives in a variable, so only the sandbox can see it.
    with pytest.raises(TemplateInvalid) as caught:
        render("{{ text|attr(name) }}", text="", name="__class__")
    assert problem_of(caught).code == "template_forbidden"


def test_syntax_errors_of_every_section_are_listed_before_anything_renders() -> None:
    sections = Sections(system="{% if %}", context="fine", instruction="a\n{{ x }", format="ok")
    with pytest.raises(TemplateInvalid) as caught:
        render_sections(sections=sections, variables={}, locale="de")
    assert [(p.code, p.pointer, p.line) for p in caught.value.problems] == [
        ("template_syntax", "/templates/de/system", 1),
        ("template_syntax", "/templates/de/instruction", 2),
    ]


@pytest.mark.parametrize(
    ("text", "raised"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ 'a' + 1 }}", "TypeError"),
        ("{{ 10.0 ** 400 }}", "OverflowError"),
        ("{{ '{'.format() }}", "ValueError"),
        ("{{ '{}{}'.format(1) }}", "IndexError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ],
)
def test_any_other_exception_is_a_render_error_naming_section_and_locale(
    text: str, raised: str
) -> None:
    with pytest.raises(RenderFailed) as caught:
        render(text, "format")
    problem = problem_of(caught)
    assert (problem.code, problem.pointer) == ("render_error", "/templates/fr-CA/format")
    assert problem.detail.startswith("The format section (fr-CA), line 1: " + raised)


@pytest.mark.parametrize(
    "text",
    ["{{ (1).upper ~ items }}", "{{ 'a' if (1).upper else 'b' }}", "{{ (1).upper and 1 }}"],
)
def test_a_constant_expression_is_evaluated_when_rendering_not_when_saving(text: str) -> None:
    # Jinja's optimizer would evaluate these while compiling and raise from the compiler.
    assert [p for p in check(("items",), system=text) if p.severity is Severity.ERROR] == []
    with pytest.raises(RenderFailed) as caught:
        render(text, items=[1])
    assert problem_of(caught).code == "undefined"


def test_printing_a_function_or_iterator_is_a_render_error() -> None:
    with pytest.raises(RenderFailed) as caught:
        render("{{ names|map('upper') }}", names=["a"])
    assert "|list" in problem_of(caught).detail
    for text in ("{{ cycler }}", "{{ lipsum }}", "{{ range }}", "{{ self }}", "{{ [dict] }}"):
        with pytest.raises(RenderFailed):
            render(text)


def test_the_original_exception_is_kept_as_the_cause() -> None:
    with pytest.raises(RenderFailed) as caught:
        render("{{ 1 / 0 }}")
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        render_sections(sections=Sections(), variables={}, max_chars=0)


# --- the compile cache --------------------------------------------------------------------------


def test_equal_text_compiles_once() -> None:
    text = "Hello {{ name }}"
    render_sections(sections=Sections(system=text, instruction=text), variables={"name": "A"})
    render_sections(sections=Sections(context=text), variables={"name": "B"})
    info = compile_cache_info()
    assert (info.misses, info.hits, info.size) == (1, 2, 1)


def test_template_check_and_render_share_the_cache() -> None:
    sections = Sections(instruction="Hi {{ name }}")
    template_check(sections, locale="en", declared=["name"])
    render_sections(sections=sections, variables={"name": "A"})
    assert compile_cache_info().misses == 1


def test_the_cache_keeps_the_most_recently_used_entries() -> None:
    from promptregistry.core.compile_cache import CompileCache

    cache = CompileCache(2, str.upper)
    cache.get("a")
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # evicts b
    cache.get("a")
    cache.get("b")
    assert cache.info() == rendering.CompileCacheInfo(hits=2, misses=4, size=2, maxsize=2)


def test_a_lone_surrogate_hashes_instead_of_crashing() -> None:
    assert render("{{ text }}\ud800x", text="t") == "t\ud800x"


# --- budgets --------------------------------------------------------------------------------------


def test_the_output_cap_stops_a_render_early() -> None:
    with pytest.raises(RenderFailed) as caught:
        render("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
    assert problem_of(caught).code == "render_too_large"


def test_the_output_cap_counts_all_sections_together() -> None:
    half = "{% for i in range(60) %}" + "x" * 10 + "{% endfor %}"  # 600 characters
    sections = Sections(system=half, instruction=half)
    render_sections(sections=sections, variables={}, max_chars=1200)
    with pytest.raises(RenderFailed) as caught:
        render_sections(sections=sections, variables={}, max_chars=1000, locale="en")
    assert problem_of(caught).pointer == "/templates/en/instruction"


def test_an_empty_loop_is_stopped_by_the_step_budget() -> None:
    text = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderFailed) as caught:
        render(text)
    assert problem_of(caught).code == "render_too_complex"


def test_the_step_budget_can_be_chosen() -> None:
    # ten iterations, and one call (range) costing CALL_STEPS
    text = "{% for i in range(10) %}{% endfor %}done"
    assert (
        render_sections(
            sections=Sections(system=text), variables={}, max_steps=10 + CALL_STEPS
        ).system
        == "done"
    )
    with pytest.raises(RenderFailed):
        render_sections(sections=Sections(system=text), variables={}, max_steps=9 + CALL_STEPS)


@pytest.mark.parametrize(
    "text",
    [
        # captured text: no output until the block ends
        "{% filter upper %}{% for i in range(100000) %}{% for j in range(100000) %}x"
        "{% endfor %}{% endfor %}{% endfilter %}",
        "{% set big %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        # values doubling in a namespace
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        # one operation building a huge value
        "{{ 'x' * 1000000000 }}",
        "{{ (['x' * 100000] * 100000)|join }}",
        "{{ 10 ** 10000000 }}",
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.rjust(1000000000) }}",
        "{{ '%1000000000d'|format(1) }}",
        "{{ '%*d' % (1000000000, 1) }}",
        "{{ '%.1000000000f' % 1.5 }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '{:{w}}'.format(1, w=1000000000) }}",
        "{{ text|replace('', text) }}",
        "{{ text.replace('', text) }}",
        "{{ text|indent(100000) }}",
        "{{ text|wordwrap(1, wrapstring=text) }}",
        "{{ [1]|batch(1000000000)|list }}",
        "{{ [1]|slice(1000000000)|list }}",
        "{{ range(100000)|map('center', 100000)|join }}",
        "{{ range(100000)|map('center', 100000)|list|length }}",
        "{{ lipsum(100000) }}",
        "{{ {'a': 1}|tojson(indent=1000000000) }}",
        "{{ ('\t' * 1000).expandtabs(1000000) }}",
    ],
)
def test_a_template_cannot_exhaust_memory_or_time(text: str) -> None:
    with pytest.raises(RenderFailed) as caught:
        render(text, text="abc\n" * 500)
    assert problem_of(caught).code in {"render_too_large", "render_too_complex"}


# --- template_check ---------------------------------------------------------------------------


def check(declared: tuple[str, ...] = (), locale: str = "fr", **sections: str) -> list[Problem]:
    return template_check(Sections(**sections), locale=locale, declared=declared)


def test_a_good_template_has_no_problems() -> None:
    problems = check(
        ("name", "items"),
        system="Hi {{ name }}",
        instruction="{% for i in items %}{{ i }}{% endfor %}{{ range(2)|list }}",
    )
    assert problems == []


def test_a_syntax_error_names_section_locale_and_line() -> None:
    [problem] = check(instruction="ok\nok\n{% for x in %}")
    assert (problem.code, problem.pointer, problem.line) == (
        "template_syntax",
        "/templates/fr/instruction",
        3,
    )
    assert problem.detail.startswith("The instruction section (fr), line 3:")


def test_an_unknown_filter_is_a_syntax_error_even_inside_an_if() -> None:
    [problem] = check(("x",), system="{% if x %}{{ x|nosuch }}{% endif %}")
    assert problem.code == "template_syntax"
    assert "nosuch" in problem.detail


def test_undeclared_and_unused_variables() -> None:
    problems = check(("name", "tone"), system="{{ name }}", instruction="\n{{ customer }}")
    assert [(p.code, p.pointer, p.line, p.severity) for p in problems] == [
        ("undeclared_variable", "/templates/fr/instruction", 2, Severity.ERROR),
        ("unused_variable", "/templates/fr", None, Severity.WARNING),
    ]
    assert "'tone'" in problems[1].detail


def test_names_the_template_binds_itself_are_not_variables() -> None:
    text = (
        "{% set greeting = 'hi' %}{{ greeting }}"
        "{% for item in items %}{{ item }}{{ loop.index }}{% endfor %}"
        "{% macro m(arg) %}{{ arg }}{{ caller() }}{% endmacro %}{% call m(1) %}x{% endcall %}"
        "{% with w = 1 %}{{ w }}{% endwith %}"
        "{{ range(1)|list }}{{ dict(a=1) }}{{ namespace(a=1).a }}{{ cycler(1).next() }}"
        "{{ joiner()() }}{{ lipsum(1) }}"
    )
    assert check(("items",), system=text) == []
    assert variables_used(Sections(system=text)) == frozenset({"items"})


def test_unused_warnings_are_skipped_when_a_section_cannot_be_parsed() -> None:
    problems = check(("name",), system="{% if %}")
    assert [p.code for p in problems] == ["template_syntax"]


def test_a_section_longer_than_the_limit_is_a_problem() -> None:
    problems = template_check(
        Sections(context="x" * 11), locale="fr", declared=(), max_section_chars=10
    )
    assert codes(problems) == [("section_too_long", "/templates/fr/context")]


def test_the_pointer_prefix_can_be_chosen() -> None:
    problems = template_check(
        Sections(system="{{ x }}"), locale="fr", declared=(), pointer="/versions/3/templates"
    )
    assert codes(problems) == [("undeclared_variable", "/versions/3/templates/fr/system")]


def test_variables_used_ignores_a_section_with_a_syntax_error() -> None:
    sections = Sections(system="{{ a }}", instruction="{{ b }", format="{{ c|nosuch }}")
    assert variables_used(sections) == frozenset({"a"})


@pytest.mark.parametrize(
    "text",
    [
        "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
        "{{ x" + ".a" * 5000 + " }}",
        "{% for i in x %}" * 25 + "{% endfor %}" * 25,
        "{{ " + "9" * 5000 + " }}",
        "{{ 0x" + "f" * 5000 + " }}",
    ],
)
def test_a_template_beyond_python_limits_is_a_syntax_problem(text: str) -> None:
    problems = check(("x",), system=text)
    assert [p.code for p in problems] == ["template_syntax"]
    with pytest.raises(TemplateInvalid):
        render(text, x=[1])


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ ''['__class__'] }}",
        "{{ ()|attr('__class__') }}",
        "{{ x._private }}",
        "{{ x.mro }}",
        "{{ x.func_globals }}",
        "{{ x.gi_frame }}",
        "{{ x|map(attribute='__class__')|list }}",
        "{{ x|map(attribute='a.__class__')|list }}",
        "{{ x|map('attr', '__class__')|list }}",
        "{{ x|selectattr('__class__')|list }}",
        "{{ x|sort(attribute='__class__') }}",
        "{{ x|groupby('_y') }}",
        "{{ x|sum(attribute='__len__') }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ '{0[_y]}'.format(x) }}",
        "{{ '{0:{1.__class__}}'.format(1, x) }}",
        "{{ x.append(1) }}",
        "{{ x.update({}) }}",
        "{% include 'other' %}",
        "{% import 'other' as o %}",
        "{% from 'other' import m %}",
        "{% extends 'base' %}",
        "{% if true %}{{ (x.__class__) is defined }}{% endif %}",
    ],
)
def test_forbidden_constructs_are_refused_when_saving(text: str) -> None:
    problems = check(("x",), instruction="\n" + text)
    assert ("template_forbidden", "/templates/fr/instruction", 2) in [
        (p.code, p.pointer, p.line) for p in problems
    ]
    # and never run: rendering refuses the same text before executing it
    with pytest.raises(TemplateInvalid) as caught:
        render(text, x=[{"a": 1}])
    assert caught.value.problems[0].code == "template_forbidden"


# --- properties: the sandbox never leaks --------------------------------------------------------


class Secretive:
    """A value with private state and methods, standing in for anything the sandbox holds."""

    _token = "secret-token"
    public = "visible"

    def __init__(self) -> None:
        self.__secret = "dunder-secret"

    def method(self) -> str:
        return "called"


FORBIDDEN_NAMES = [
    "__class__",
    "__globals__",
    "__subclasses__",
    "__init__",
    "__dict__",
    "__builtins__",
    "__mro__",
    "__base__",
    "__code__",
    "__self__",
    "__func__",
    "__module__",
    "__reduce_ex__",
    "_Secretive__secret",
    "_token",
    "_private",
    "mro",
    "func_globals",
    "f_globals",
    "gi_frame",
]
BASES = [
    "''",
    "()",
    "[]",
    "{}",
    "(1)",
    "cycler",
    "lipsum",
    "joiner",
    "namespace",
    "range",
    "dict",
    "self",
    "value",
    "obj",
    "obj.method",
    "''.format",
    "value.items",
    "(value|list)",
]
# Each form applies one access to an expression; filters are parenthesized so chains parse.
ACCESS_FORMS = ["{expr}.{name}", "{expr}['{name}']", "({expr}|attr('{name}'))", "{expr}.{name}()"]
WRAPPERS = [
    "{{{{ {expr} }}}}",
    "{{{{ ({expr})|string }}}}",
    "{{{{ [{expr}] }}}}",
    "{{% set v = {expr} %}}{{{{ v }}}}",
    "{{% if {expr} %}}yes{{% endif %}}",
    "{{{{ {expr} is defined }}}}",
    "{{{{ ({expr})|default('d') }}}}",
    "{{{{ '%s'|format({expr}) }}}}",
]


def _variables() -> dict[str, Any]:
    return {"value": {"a": "b"}, "obj": Secretive()}


def _assert_no_leak(text: str) -> None:
    for leak in (*LEAKS, "secret-token", "dunder-secret"):
        assert leak not in text, text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(BASES),
    chain=st.lists(
        st.tuples(st.sampled_from(ACCESS_FORMS), st.sampled_from(FORBIDDEN_NAMES)),
        min_size=1,
        max_size=3,
    ),
    wrapper=st.sampled_from(WRAPPERS),
)
def test_forbidden_access_is_refused_or_never_runs(
    base: str, chain: list[tuple[str, str]], wrapper: str
) -> None:
    expr = base
    for form, name in chain:
        expr = form.format(expr=expr, name=name)
    text = wrapper.format(expr=expr)
    problems = template_check(Sections(instruction=text), locale="en", declared=("value", "obj"))
    assert "template_forbidden" in [problem.code for problem in problems], text
    try:
        out = render(text, **_variables())
    except TemplateInvalid:
        return
    _assert_no_leak(out)  # pragma: no cover - reaching here is itself the failure
    pytest.fail(f"rendered a forbidden template: {text!r}")


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(BASES),
    name=st.sampled_from(FORBIDDEN_NAMES),
    form=st.sampled_from(["|attr(name)", "[name]", "|map(attribute=name)|list"]),
    wrapper=st.sampled_from(WRAPPERS),
)
def test_a_forbidden_name_arriving_in_a_variable_never_leaks(
    base: str, name: str, form: str, wrapper: str
) -> None:
    # The static check cannot see the name; the sandbox must refuse it at run time.
    text = wrapper.format(expr=f"({base}){form}")
    try:
        out = render(text, name=name, **_variables())
    except (TemplateInvalid, RenderFailed):
        return
    _assert_no_leak(out)


def test_an_object_in_a_variable_shows_only_its_public_data() -> None:
    obj = Secretive()
    assert render("{{ obj.public }}", obj=obj) == "visible"
    for text in ("{{ obj._token }}", "{{ obj.__dict__ }}", "{{ obj._Secretive__secret }}"):
        with pytest.raises(TemplateInvalid):
            render(text, obj=obj)
    for name in ("_token", "__dict__", "__class__", "_Secretive__secret"):
        with pytest.raises(TemplateInvalid):
            render("{{ obj|attr(name) }}", obj=obj, name=name)
        with pytest.raises(TemplateInvalid):
            render("{{ obj[name] }}", obj=obj, name=name)
    with pytest.raises(RenderFailed):
        render("{{ obj }}", obj=obj)  # not data: refused rather than printed as a repr


def test_a_template_cannot_change_its_inputs() -> None:
    items = ["a"]
    with pytest.raises(TemplateInvalid):
        render("{{ items.append('b') }}", items=items)
    with pytest.raises(TemplateInvalid):
        render("{% set f = items.append %}{{ f('b') }}", items=items)
    assert items == ["a"]


# --- property: rendering is total ----------------------------------------------------------------

TOKENS = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    " ",
    "\n",
    "x",
    "items",
    "name",
    "i",
    "for",
    "in",
    "endfor",
    "if",
    "endif",
    "else",
    "set",
    "=",
    "macro",
    "endmacro",
    "(",
    ")",
    "[",
    "]",
    "'a'",
    "1",
    "0",
    "-1",
    "|",
    "upper",
    "join",
    "length",
    "center",
    "list",
    "attr",
    "default",
    ".",
    ",",
    "~",
    "+",
    "*",
    "/",
    "//",
    "%",
    "**",
    "range",
    "loop",
    "_x",
    "__class__",
    "is",
    "defined",
    "not",
    "none",
    "raw",
    "endraw",
    "filter",
    "endfilter",
    "999999",
    "9" * 4400,
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_any_text_is_checked_and_rendered_to_text_or_a_domain_error(text: str) -> None:
    sections = Sections(system=text, instruction=text)
    problems = template_check(sections, locale="en", declared=("items", "name"))
    assert all(isinstance(problem, Problem) for problem in problems)
    try:
        rendered = render_sections(
            sections=sections, variables={"items": ["a", "b"], "name": "N"}, max_chars=20_000
        )
    except (TemplateInvalid, RenderFailed) as exc:
        failure: TemplateInvalid | RenderFailed = exc
        assert failure.problems
        return
    assert isinstance(rendered.system, str)
    _assert_no_leak(rendered.system)


def test_the_environment_is_sandboxed_strict_and_plain_text() -> None:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    assert isinstance(ENVIRONMENT, ImmutableSandboxedEnvironment)
    assert ENVIRONMENT.undefined is StrictUndefined
    assert ENVIRONMENT.autoescape is False
    assert ENVIRONMENT.loader is None
    assert (
        frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "snippet"})
        == GLOBAL_NAMES
    )
    assert render("<b>{{ text }}</b>", text="a & <b>") == "<b>a & <b></b>"
