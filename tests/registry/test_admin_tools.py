"""Tools in the admin: edited in the workbench's model binding section (a JSON field) with each
problem in place and nothing saved, shown on a committed version's page, and diffed."""

from __future__ import annotations

import copy
import json

import pytest
from django.test import Client

from registry.models import PromptVersion
from tests.factories import make_version
from tests.registry.test_admin import EN, FR, existing_rows, url, version_form
from tests.registry.test_admin import author_client as author_client  # the admin's, logged in
from tests.registry.test_workbench import preview, preview_body

pytestmark = pytest.mark.django_db

LOOKUP = {
    "type": "function",
    "function": {
        "name": "order_lookup",
        "description": "Find an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    },
}


@pytest.fixture
def draft(prompt) -> PromptVersion:
    make_version(prompt, templates={"en": EN, "fr": FR})
    return make_version(prompt, commit=False, message="Tools.", templates={"en": EN, "fr": FR})


def test_the_workbench_saves_tools_from_the_binding_section(author_client: Client, draft) -> None:
    variables, templates = existing_rows(draft)

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft,
            variables=variables,
            templates=templates,
            tools=json.dumps([LOOKUP]),
            tool_choice='"auto"',
            parallel_tool_calls="false",
            _workbench="1",
        ),
    )

    assert response.status_code == 302, response.context and response.context["error_links"]
    draft.refresh_from_db()
    assert (draft.tools, draft.tool_choice, draft.parallel_tool_calls) == ([LOOKUP], "auto", False)


def test_duplicate_tool_names_are_shown_at_the_tools_field_and_nothing_saved(
    author_client: Client, draft
) -> None:
    variables, templates = existing_rows(draft)
    before = draft.content_hash

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft,
            variables=variables,
            templates=templates,
            tools=json.dumps([LOOKUP, copy.deepcopy(LOOKUP)]),
            _workbench="1",
        ),
    )

    assert response.status_code == 200
    (link,) = response.context["error_links"]
    assert link.anchor == "id_tools"
    assert link.text.startswith("Tool 2:")
    assert "order_lookup" in link.text
    draft.refresh_from_db()
    assert draft.content_hash == before
    assert draft.tools == []


def test_the_preview_puts_a_tools_remote_reference_at_the_tools_field(
    author_client: Client, prompt
) -> None:
    remote = copy.deepcopy(LOOKUP)
    remote["function"]["parameters"]["properties"]["order_id"] = {"$ref": "https://x.example/s"}
    model = {"provider": "local", "model": "echo-1", "tools": [remote]}

    data = preview(author_client, preview_body(prompt, model=model)).json()

    assert [(p["field"], p["code"]) for p in data["problems"]] == [
        ("tools", "schema_reference_refused")
    ]


def test_a_committed_versions_page_shows_its_tools_and_the_diff_lists_them(
    author_client: Client, prompt
) -> None:
    make_version(prompt, templates={"en": EN, "fr": FR})
    second = make_version(
        prompt,
        templates={"en": EN, "fr": FR},
        model={
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.2},
            "tools": [LOOKUP],
            "tool_choice": "auto",
        },
    )

    page = author_client.get(url("promptversion_change", second.pk)).content.decode()
    diff = author_client.get(url("promptversion_diff", second.pk))

    assert "order_lookup" in page
    assert [(d.name, d.before, d.after) for d, _, _ in diff.context["model"]] == [
        ("tools.order_lookup", None, LOOKUP),
        ("tool_choice", None, "auto"),
    ]
