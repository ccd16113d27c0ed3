"""registry.selectors: prompt lists, a version with its content, render and diff."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.errors import (
    LocaleInvalid,
    PromptNotFound,
    RenderFailed,
    VariablesInvalid,
    VersionNotFound,
)
from registry.models import PromptVersion
from registry.selectors import (
    Change,
    prompt_get,
    prompt_list,
    version_content,
    version_diff,
    version_get,
    version_render,
    version_translation_status,
)
from tests.factories import PromptFactory, make_version

pytestmark = pytest.mark.django_db


# --- prompt_list / prompt_get -----------------------------------------------------------------------


def test_prompt_list_annotates_latest_commit_draft_and_count_in_one_query(
    django_assert_num_queries,
):
    busy = PromptFactory(key="support.busy")
    make_version(busy)
    make_version(busy)
    make_version(busy, commit=False)
    PromptFactory(key="support.empty")
    only_draft = PromptFactory(key="support.draft-only")
    make_version(only_draft, commit=False)

    with django_assert_num_queries(1):
        rows = {p.key: (p.latest_number, p.draft_number, p.version_count) for p in prompt_list()}

    assert rows == {
        "support.busy": (2, 3, 3),
        "support.draft-only": (None, 1, 1),
        "support.empty": (None, None, 0),
    }


def test_prompt_list_costs_one_query_however_many_prompts(django_assert_num_queries):
    for n in range(12):
        make_version(PromptFactory(key=f"bulk.p{n}"))

    with django_assert_num_queries(1):
        assert len(list(prompt_list())) == 12


def test_prompt_list_is_ordered_by_key():
    for key in ["b.two", "a.one", "c.three"]:
        PromptFactory(key=key)

    assert [p.key for p in prompt_list()] == ["a.one", "b.two", "c.three"]


def test_prompt_list_searches_key_and_description_case_insensitively():
    PromptFactory(key="support.refund-reply", description="Answers a refund.")
    PromptFactory(key="sales.recap", description="Recap of a REFUND call.")
    PromptFactory(key="search.rewrite", description="Rewrites queries.")

    assert [p.key for p in prompt_list(search="refund")] == ["sales.recap", "support.refund-reply"]
    assert [p.key for p in prompt_list(search="SEARCH")] == ["search.rewrite"]


def test_prompt_list_filters_by_whole_tag():
    PromptFactory(key="a", tags=["support", "customer-facing"])
    PromptFactory(key="b", tags=["support-internal"])
    PromptFactory(key="c", tags=["sales"])

    assert [p.key for p in prompt_list(tag="support")] == ["a"]
    assert [p.key for p in prompt_list(tag="support-internal")] == ["b"]
    assert [p.key for p in prompt_list(tag="supp")] == []
    assert [p.key for p in prompt_list(tag="support", search="b")] == []


def test_prompt_get_finds_by_key_or_says_which_is_missing(prompt):
    assert prompt_get(key="support.refund-reply") == prompt

    with pytest.raises(PromptNotFound, match=r"support\.nope"):
        prompt_get(key="support.nope")


# --- version_get --------------------------------------------------------------------------------------


def _wide_content(locales: int, variables: int) -> dict[str, Any]:
    names = [f"var{i}" for i in range(variables)]
    text = " ".join(f"{{{{ {n} }}}}" for n in names)
    codes = ["en", "fr", "de", "es", "it", "pt-BR", "nl", "sv"][:locales]
    return {
        "variables": [{"name": n, "type": "string"} for n in names],
        "templates": {loc: {"system": f"[{loc}]", "instruction": text} for loc in codes},
    }


def _queries_to_read(prompt, number: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        version = version_get(prompt=prompt, number=number)
        version_content(version)
        version_translation_status(version)
        version_render(
            version=version,
            locale="fr",
            variables={v.name: "x" for v in version.variables.all()},
        )
    return len(queries)


def test_version_get_reads_a_version_in_a_fixed_number_of_queries():
    small = PromptFactory(key="small")
    make_version(small, **_wide_content(locales=1, variables=1))
    large = PromptFactory(key="large")
    make_version(large, **_wide_content(locales=8, variables=12))

    assert _queries_to_read(small, 1) == _queries_to_read(large, 1) == 3


def test_version_get_says_which_version_is_missing(prompt):
    make_version(prompt)

    with pytest.raises(VersionNotFound, match="no version 7"):
        version_get(prompt=prompt, number=7)


def test_version_get_does_not_find_another_prompts_version(prompt):
    make_version(PromptFactory())

    with pytest.raises(VersionNotFound):
        version_get(prompt=prompt, number=1)


# --- version_render ----------------------------------------------------------------------------------

GREETING = {
    "variables": [
        {"name": "customer_name", "type": "string"},
        {"name": "tone", "type": "string", "required": False, "default": "warm"},
    ],
    "templates": {
        "en": {
            "system": "You are a support agent.",
            "context": "",
            "instruction": "Greet {{ customer_name }} in a {{ tone }} tone.",
            "format": "One line.",
        },
        "fr": {"system": "Agent.", "instruction": "Salue {{ customer_name }}, ton {{ tone }}."},
        "pt-BR": {"instruction": "Cumprimente {{ customer_name }} ({{ tone }})."},
    },
}


@pytest.fixture
def greeting(prompt) -> PromptVersion:
    make_version(prompt, **GREETING)
    return version_get(prompt=prompt, number=1)


@pytest.mark.parametrize(
    ("asked", "used"),
    [
        ("fr-CA", "fr"),
        ("fr", "fr"),
        ("FR_ca", "fr"),
        ("pt-BR", "pt-BR"),
        ("pt", "en"),
        ("de-AT", "en"),
        (None, "en"),
    ],
)
def test_render_falls_back_from_region_to_language_to_default(greeting, asked, used):
    result = version_render(version=greeting, locale=asked, variables={"customer_name": "Ana"})

    assert result.locale == used


def test_render_reports_the_requested_locale_normalized(greeting):
    result = version_render(version=greeting, locale="fr_ca", variables={"customer_name": "Ana"})

    assert (result.requested_locale, result.locale) == ("fr-CA", "fr")


def test_render_applies_defaults_and_builds_chat_messages(greeting):
    result = version_render(version=greeting, locale="en", variables={"customer_name": "Ana"})

    assert result.variables == {"customer_name": "Ana", "tone": "warm"}
    assert result.rendered.instruction == "Greet Ana in a warm tone."
    assert result.sections.instruction == GREETING["templates"]["en"]["instruction"]
    assert result.messages == [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Greet Ana in a warm tone.\n\nOne line."},
    ]


def test_render_uses_a_given_value_over_the_default(greeting):
    result = version_render(
        version=greeting, locale="fr", variables={"customer_name": "Ana", "tone": "sec"}
    )

    assert result.rendered.instruction == "Salue Ana, ton sec."


def test_render_lists_every_variable_problem(greeting):
    with pytest.raises(VariablesInvalid) as exc_info:
        version_render(version=greeting, locale="en", variables={"tone": 3, "customer": "Ana"})

    assert sorted((p.code, p.pointer) for p in exc_info.value.problems) == [
        ("missing_variable", "/variables/customer_name"),
        ("unknown_variable", "/variables/customer"),
        ("wrong_type", "/variables/tone"),
    ]


def test_render_refuses_an_invalid_locale(greeting):
    with pytest.raises(LocaleInvalid):
        version_render(version=greeting, locale="not a locale", variables={"customer_name": "A"})


def test_render_failures_are_domain_errors(prompt):
    make_version(
        prompt,
        variables=[{"name": "count", "type": "integer"}],
        templates={"en": {"instruction": "{{ 10 // count }} each."}},
    )
    version = version_get(prompt=prompt, number=1)

    with pytest.raises(RenderFailed) as exc_info:
        version_render(version=version, locale="en", variables={"count": 0})

    assert [(p.code, p.pointer) for p in exc_info.value.problems] == [
        ("render_error", "/templates/en/instruction")
    ]


# --- version_diff -----------------------------------------------------------------------------------


def test_diff_shows_locales_sections_variables_and_model_changes(prompt):
    make_version(
        prompt,
        variables=[
            {"name": "customer_name", "type": "string"},
            {"name": "order_id", "type": "string"},
        ],
        model={
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.2, "max_tokens": 100},
        },
        templates={
            "en": {
                "system": "You are a support agent.",
                "instruction": "Greet {{ customer_name }}.\nMention {{ order_id }}.",
            },
            "fr": {"instruction": "Salue {{ customer_name }} ({{ order_id }})."},
        },
    )
    make_version(
        prompt,
        variables=[
            {"name": "customer_name", "type": "object"},
            {"name": "tone", "type": "string", "required": False, "default": "warm"},
        ],
        model={
            "provider": "local",
            "model": "echo-2",
            "parameters": {"temperature": 0.5, "seed": 3},
        },
        templates={
            "en": {
                "system": "You are a support agent.",
                "instruction": "Greet {{ customer_name }}.\nBe {{ tone }}.",
            },
            "de": {"instruction": "Begrüße {{ customer_name }} ({{ tone }})."},
        },
    )

    diff = version_diff(
        before=version_get(prompt=prompt, number=1), after=version_get(prompt=prompt, number=2)
    )

    changes = {(d.locale, d.section): d.change for d in diff.templates}
    assert changes == {
        ("en", "system"): Change.UNCHANGED,
        ("en", "context"): Change.UNCHANGED,
        ("en", "instruction"): Change.CHANGED,
        ("en", "format"): Change.UNCHANGED,
        **{("de", s): Change.ADDED for s in ("system", "context", "instruction", "format")},
        **{("fr", s): Change.REMOVED for s in ("system", "context", "instruction", "format")},
    }
    # The default locale comes first, then the others by tag, every section in contract order.
    assert [(d.locale, d.section) for d in diff.templates][:5] == [
        ("en", "system"),
        ("en", "context"),
        ("en", "instruction"),
        ("en", "format"),
        ("de", "system"),
    ]
    system = next(d for d in diff.templates if (d.locale, d.section) == ("en", "system"))
    assert system.before == system.after == "You are a support agent."
    instruction = next(d for d in diff.templates if (d.locale, d.section) == ("en", "instruction"))
    assert [(r.tag, r.before, r.after) for r in instruction.rows] == [
        ("equal", ["Greet {{ customer_name }}."], ["Greet {{ customer_name }}."]),
        ("replace", ["Mention {{ order_id }}."], ["Be {{ tone }}."]),
    ]
    assert "-Mention {{ order_id }}." in instruction.unified
    assert "+Be {{ tone }}." in instruction.unified

    variables = {d.name: d.change for d in diff.variables}
    assert variables == {
        "customer_name": Change.CHANGED,
        "order_id": Change.REMOVED,
        "tone": Change.ADDED,
    }
    changed = next(d for d in diff.variables if d.name == "customer_name")
    assert (changed.before["type"], changed.after["type"]) == ("string", "object")

    model = {d.name: (d.change, d.before, d.after) for d in diff.model}
    assert model == {
        "model": (Change.CHANGED, "echo-1", "echo-2"),
        "parameters.temperature": (Change.CHANGED, 0.2, 0.5),
        "parameters.max_tokens": (Change.REMOVED, 100, None),
        "parameters.seed": (Change.ADDED, None, 3),
    }
    assert not diff.is_empty
    assert (diff.prompt, diff.before_number, diff.after_number) == (prompt.key, 1, 2)


def test_diff_shows_response_schema_and_fallback_changes(prompt):
    model = {"provider": "local", "model": "echo-1"}
    make_version(prompt, model=model)
    make_version(
        prompt,
        model={
            **model,
            "response_schema": {"type": "object"},
            "fallbacks": [{"provider": "local", "model": "echo-small"}],
        },
    )

    diff = version_diff(
        before=version_get(prompt=prompt, number=1), after=version_get(prompt=prompt, number=2)
    )

    assert [(d.name, d.change, d.before, d.after) for d in diff.model] == [
        ("response_schema", Change.CHANGED, None, {"type": "object"}),
        (
            "fallbacks",
            Change.CHANGED,
            [],
            [{"provider": "local", "model": "echo-small", "parameters": {}}],
        ),
    ]
    assert all(d.change is Change.UNCHANGED for d in diff.templates)
    assert not diff.is_empty


def test_diff_of_equal_content_is_empty_but_lists_every_section(prompt):
    make_version(prompt)
    make_version(prompt, message="Same content, new message.")

    diff = version_diff(
        before=version_get(prompt=prompt, number=1), after=version_get(prompt=prompt, number=2)
    )

    assert diff.is_empty
    assert [(d.section, d.change) for d in diff.templates] == [
        ("system", Change.UNCHANGED),
        ("context", Change.UNCHANGED),
        ("instruction", Change.UNCHANGED),
        ("format", Change.UNCHANGED),
    ]
    assert diff.variables == diff.model == []
