"""The render budget holds before the work, not after it (registry.sandbox, issue 12 finding 4).

Every operation is charged by what it touches before it runs, values a template builds are
weighed with their nested values (a shared one counted each time it appears), and a render past
its wall-clock deadline is refused. The assertions are on the refusal and on the budget's
counters (how far the render got), never on how long it took; the deadline is tested with a
clock the test controls, and through the real HTTP path with a loop no machine runs in 1 ms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings
from promptregistry import Prompt
from promptregistry.core import resolve
from promptregistry.errors import RenderError

from registry.errors import RenderFailed
from registry.rendering import Sections, render_sections
from registry.sandbox import (
    CALL_STEPS,
    ENVIRONMENT,
    BudgetExceeded,
    RenderBudget,
    budget_scope,
    compile_template,
    new_context,
    render_template,
)
from releases.services import release_deploy
from tests.api.helpers import assert_problem, error_codes
from tests.factories import make_version
from tests.sdk.test_prompt import served

NESTING = (
    "{% set ns = namespace(l=[1]) %}{% for i in range(26) %}{% set ns.l = [ns.l, ns.l] %}"
    "{% endfor %}{{ ns.l }}"
)
MAX_IN_A_LOOP = (
    "{% set big = range(100000)|list %}{% for i in range(1000) %}{{ big|max }}{% endfor %}"
)


def run(
    text: str, budget: RenderBudget | None = None, **variables: Any
) -> tuple[RenderBudget, BudgetExceeded | None]:
    """Render ``text`` under ``budget`` (no deadline by default); the budget as the render left
    it, and the refusal if there was one."""
    budget = budget if budget is not None else RenderBudget(deadline=None)
    template = compile_template(ENVIRONMENT.parse(text))
    with budget_scope(budget):
        try:
            render_template(template, new_context(variables), budget)
        except BudgetExceeded as exc:
            return budget, exc
    return budget, None


# --- the two reproducers ------------------------------------------------------------------


def test_a_list_nesting_itself_is_refused_while_it_is_small():
    budget, refused = run(NESTING)

    assert refused is not None
    assert refused.code == "render_too_large"
    # Refused after about twenty doublings, having walked each new list's two items only:
    # printing it would have walked 2**26 of them.
    assert budget.steps < 500
    assert budget.output == 0


def test_a_filter_over_a_large_list_in_a_loop_is_charged_the_list_each_time():
    budget, refused = run(MAX_IN_A_LOOP)

    assert refused is not None
    assert refused.code == "render_too_complex"
    # Each max() printed 99999 (5 characters): it ran at most 10 of the 1000 times asked, each
    # charged its 100,000 items before running.
    assert budget.output <= 5 * 10
    assert budget.steps > budget.max_steps


@pytest.mark.parametrize("text", [NESTING, MAX_IN_A_LOOP])
def test_the_reproducers_are_refused_by_the_render_functions(text):
    with pytest.raises(RenderFailed) as caught:
        render_sections(sections=Sections(system=text), variables={}, deadline_ms=None)

    assert [p.code for p in caught.value.problems] in (
        ["render_too_large"],
        ["render_too_complex"],
    )


# --- nested values: every way to share one value -------------------------------------------------


@pytest.mark.parametrize(
    "doubling",
    [
        "[ns.l, ns.l]",
        "[ns.l] + [ns.l]",
        "(ns.l, ns.l)",
        "(ns.l,) + (ns.l,)",
        "{'a': ns.l, 'b': ns.l}",
        "dict(a=ns.l, b=ns.l)",
        "[ns.l] * 2",
        "[ns.l, ns.l]|list",
        "[ns.l, ns.l][:]",
    ],
)
def test_any_way_of_doubling_a_shared_value_is_refused_early(doubling):
    text = (
        "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}"
        f"{{% set ns.l = {doubling} %}}{{% endfor %}}{{{{ ns.l|length }}}}"
    )

    budget, refused = run(text)

    assert refused is not None
    assert refused.code == "render_too_large"
    assert budget.steps < 2000  # about 20 doublings, each weighing a few items


@pytest.mark.parametrize(
    "use",
    [
        "{{ a }}",
        "{{ a ~ '' }}",
        "{{ a|string }}",
        "{{ a|tojson }}",
        "{{ a|pprint }}",
        "{{ '%s' % (a,) }}",
        "{{ '{}'.format(a) }}",
        "{{ [a]|join }}",
        "{{ a|upper }}",
    ],
)
def test_a_value_that_would_print_longer_than_a_prompt_is_refused_before_printing(use):
    # 50 references to one 10,000-character text: little memory, 500,000 characters of print.
    text = "{% set a = [s] * 10 %}{% set a = [a, a, a, a, a] %}" + use

    budget, refused = run(text, RenderBudget(max_chars=200_000, deadline=None), s="x" * 10_000)

    assert refused is not None
    assert refused.code == "render_too_large"
    assert budget.output == 0


def test_a_shared_value_is_weighed_once_and_counted_each_time_it_appears():
    budget = RenderBudget(deadline=None)
    with budget_scope(budget):
        inner = ["ab" * 100, 12]
        weight = budget.weigh(inner)
        assert weight > 200
        steps = budget.steps
        # What [inner, inner, inner] prints as: brackets, and inner three times with separators.
        assert budget.weigh([inner, inner, inner]) == 2 + 3 * (weight + 2)
        assert budget.steps == steps + 4  # the new list and its three items; inner is known


# --- every operation is charged by what it touches ------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{{ big|max }}",
        "{{ big|sort|first }}",
        "{{ big|unique|list|length }}",
        "{{ big|sum }}",
        "{{ big|join(',')|length }}",
        "{{ big|map('string')|list|length }}",
        "{{ big|select|list|length }}",
        "{{ big|list|length }}",
        "{{ -1 in big }}",
        "{{ big == big2 }}",
        "{{ big is in big2 }}",
        "{{ big.index(999) }}",
        "{{ big.count(3) }}",
        "{{ big[:]|length }}",
        "{{ [big]|length }}",
    ],
)
def test_an_operation_over_a_list_costs_its_length(text):
    small, _ = run(text, big=list(range(1000)), big2=list(range(1000)))
    large, _ = run(text, big=list(range(2000)), big2=list(range(2000)))

    # Twice the items, at least a thousand more steps: the cost follows the input.
    assert large.steps - small.steps >= 1000


@pytest.mark.parametrize(
    "text",
    [
        "{{ doc|upper|length }}",
        "{{ doc|wordcount }}",
        "{{ doc.count('y') }}",
        "{{ doc.split()|length }}",
        "{{ 'y' in doc }}",
    ],
)
def test_an_operation_over_a_text_costs_its_length(text):
    budget, refused = run(text, doc="x " * 5000)

    assert refused is None
    assert budget.work >= 10_000


def test_a_text_method_in_a_loop_is_refused_by_the_text_it_reads():
    text = "{% for i in range(100000) %}{{ doc.count('y') }}{% endfor %}"

    budget, refused = run(text, doc="x" * 100_000)

    assert refused is not None
    assert refused.code == "render_too_large"
    assert budget.output <= 21  # at most 21 counts of the 100,000 asked


def test_a_lazy_filter_charges_each_item_it_yields():
    budget, refused = run("{{ range(10000)|map('string')|map('upper')|list|length }}")

    assert refused is None
    assert budget.steps >= 3 * 10_000  # range's items, then each map's


def test_a_list_or_dict_literal_costs_its_items():
    budget, _ = run("{% for i in range(100) %}{% set l = [i, i, i, {'a': i}] %}{% endfor %}")

    assert budget.steps >= 100 * (4 + 1 + 1)


def test_printing_a_variable_counts_it_once():
    budget, refused = run("{{ items }}{{ items }}", items=[["a"] * 10] * 100)

    assert refused is None
    assert budget.steps < 1000  # the 100 rows are one list, walked once


# --- the deadline ---------------------------------------------------------------------------------


class Clock:
    """A clock that moves only when read: ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.readings = 0.0, step, 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.step
        return self.now


def test_a_render_past_its_deadline_is_refused_inside_a_loop():
    clock = Clock(0.01)  # 10 ms per reading: the 26th reading is past 250 ms

    budget, refused = run(
        "{% for i in range(100000) %}{% endfor %}", RenderBudget(deadline=0.25, clock=clock)
    )

    assert refused is not None
    assert refused.code == "render_too_slow"
    assert "250 ms" in refused.detail
    assert clock.readings == 26
    # The clock is read once every 64 steps: the loop stopped at the reading that was late.
    assert budget.steps <= 26 * 64 + CALL_STEPS


def test_a_render_within_its_deadline_reads_the_clock_rarely():
    clock = Clock(0.0)

    budget, refused = run(
        "{% for i in range(6400) %}{{ i }}{% endfor %}", RenderBudget(deadline=0.25, clock=clock)
    )

    assert refused is None
    assert clock.readings <= 1 + budget.steps // 64


def test_a_large_single_charge_reads_the_clock_at_once():
    clock = Clock(1.0)

    _, refused = run("{{ big|max }}", RenderBudget(deadline=0.25, clock=clock), big=[1] * 100)

    assert refused is not None
    assert refused.code == "render_too_slow"


def test_no_deadline_never_reads_the_clock_during_the_render():
    clock = Clock(1.0)

    _, refused = run(
        "{% for i in range(1000) %}{% endfor %}", RenderBudget(deadline=None, clock=clock)
    )

    assert refused is None
    assert clock.readings == 0


def test_the_deadline_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        render_sections(sections=Sections(system="x"), variables={}, deadline_ms=0)


# --- through the server, and through the SDK ------------------------------------------------------

SLOW = (
    "{% for i in range(600) %}{% for j in range(500) %}{% endfor %}{% endfor %}{{ customer_name }}"
)


@pytest.fixture
def slow_release(prompt, environments, manager):
    """``support.refund-reply`` whose instruction loops 300,000 times (within the step budget),
    stable in staging."""
    make_version(
        prompt,
        templates={"en": {"system": "You are a support agent.", "instruction": SLOW}},
    )
    release_deploy(
        prompt=prompt,
        environment=environments["staging"],
        version=1,
        actor=manager,
        reason="setup",
    )
    return prompt


@pytest.mark.django_db
@override_settings(PROMPT_RENDER_DEADLINE_MS=1)
def test_the_render_endpoint_answers_a_render_past_its_deadline_with_a_400(
    make_client, slow_release
):
    service = make_client("prompts:read")

    response = service.post(
        f"/api/v1/prompts/{slow_release.key}/render",
        json.dumps({"environment": "staging", "variables": {"customer_name": "Ana"}}),
        content_type="application/json",
    )

    body = assert_problem(response, 400, "/problems/render-failed")
    assert error_codes(body) == ["render_too_slow"]
    assert body["errors"][0]["pointer"] == "/templates/en/instruction"
    assert "1 ms" in body["errors"][0]["detail"]


@pytest.mark.django_db
def test_the_render_endpoint_renders_it_under_the_default_deadline(make_client, slow_release):
    service = make_client("prompts:read")

    with override_settings(PROMPT_RENDER_DEADLINE_MS=60_000):
        response = service.post(
            f"/api/v1/prompts/{slow_release.key}/render",
            json.dumps({"environment": "staging", "variables": {"customer_name": "Ana"}}),
            content_type="application/json",
        )

    assert response.status_code == 200, response.content[:500]


@pytest.fixture
def slow_prompt(make_client, slow_release) -> Callable[[float | None], Prompt]:
    bundle = served(make_client("prompts:read"), "staging")
    return lambda deadline: Prompt(
        resolve(bundle.releases[slow_release.key], subject="u", locale=None),
        source="live",
        render_deadline_ms=deadline,
    )


@pytest.mark.django_db
def test_an_sdk_prompt_renders_under_the_clients_deadline(slow_prompt):
    with pytest.raises(RenderError) as caught:
        slow_prompt(1).render(customer_name="Ana")

    assert [e["code"] for e in caught.value.errors] == ["render_too_slow"]
    assert slow_prompt(None).render(customer_name="Ana")[-1]["content"].endswith("Ana")


def test_the_client_refuses_a_deadline_that_is_not_positive():
    from promptregistry import Client

    with pytest.raises(ValueError, match="render_deadline_ms"):
        Client("http://127.0.0.1:9", api_key="k", environment="e", render_deadline_ms=0)
