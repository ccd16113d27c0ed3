"""The versions of a prompt: POST/GET /prompts/{key}/versions, GET/PATCH/DELETE .../versions/{n},
POST .../commit, GET .../diff, POST .../render."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable
from registry.selectors import version_content
from tests.api.conftest import PROMPT
from tests.api.helpers import assert_problem, error_codes, errors_by_code
from tests.factories import content_data, make_version

pytestmark = pytest.mark.django_db

VERSIONS = f"{PROMPT}/versions"

EN = {
    "system": "You are a courteous support agent.",
    "instruction": "Greet {{ customer_name }} and answer the question.",
}
FR = {
    "system": "Tu es un agent du service client, toujours courtois.",
    "instruction": "Salue {{ customer_name }} et réponds à la question.",
}


def version_url(number: int, action: str = "") -> str:
    return f"{VERSIONS}/{number}" + (f"/{action}" if action else "")


def body(**overrides: Any) -> dict[str, Any]:
    return {"message": "Greet the customer by name.", **content_data(**overrides)}


def snapshot(version: PromptVersion) -> tuple[Any, ...]:
    """Everything a write could change about a version, to show that a refused one did not."""
    version = PromptVersion.objects.get(pk=version.pk)
    return (
        version.status,
        version.message,
        version.content_hash,
        version.updated_at,
        sorted(Variable.objects.filter(version=version).values_list("name", "type", "required")),
        sorted(
            LocalizedTemplate.objects.filter(version=version).values_list(
                "locale", "system", "context", "instruction", "format", "source_hash"
            )
        ),
    )


# --- POST /prompts/{key}/versions --------------------------------------------------------------


def test_it_opens_a_draft(author_client, committed):
    response = author_client.post(VERSIONS, body(), format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["number"] == 2
    assert data["status"] == "draft"
    assert data["parent"] == 1
    assert data["author"] == f"key:author-ci#{author_client.key.pk}"
    assert data["committed_at"] is None
    assert data["templates"]["en"] == {
        "context": "",
        "format": "",
        **content_data()["templates"]["en"],
    }
    version = PromptVersion.objects.get(prompt__key="support.refund-reply", number=2)
    assert version.status == PromptVersion.Status.DRAFT
    assert data["content_hash"] == version.content_hash == version_content(version).content_hash
    assert response["ETag"] == f'"{version.edit_tag}"'
    assert "no-cache" in response["Cache-Control"]
    assert "immutable" not in response["Cache-Control"]


def test_it_commits_at_once_with_commit_true(author_client, prompt):
    response = author_client.post(VERSIONS, {**body(), "commit": True}, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["number"] == 1
    assert data["status"] == "committed"
    assert data["committed_by"] == f"key:author-ci#{author_client.key.pk}"
    assert data["committed_at"] is not None
    assert "immutable" in response["Cache-Control"]
    assert PromptVersion.objects.get(prompt=prompt).status == PromptVersion.Status.COMMITTED


def test_it_refuses_a_second_draft_and_names_the_open_one(author_client, draft):
    response = author_client.post(VERSIONS, body(), format="json")

    problem = assert_problem(response, 409, "/problems/draft-exists")
    assert problem["draft_number"] == draft.number == 2
    assert PromptVersion.objects.filter(status="draft").count() == 1


def test_it_refuses_commit_true_without_a_message_and_keeps_no_draft(author_client, prompt):
    response = author_client.post(
        VERSIONS, {**body(), "message": "", "commit": True}, format="json"
    )

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert errors_by_code(problem)["missing_message"][0]["pointer"] == "/message"
    # version_create is one transaction: the draft it opened before the commit failed is gone.
    assert not PromptVersion.objects.exists()


def test_it_answers_404_for_versions_of_an_unknown_prompt(author_client):
    response = author_client.post("/api/v1/prompts/support.nothing/versions", body(), format="json")

    assert_problem(response, 404, "/problems/prompt-not-found")


def test_it_needs_templates_and_a_model(author_client, prompt):
    response = author_client.post(VERSIONS, {"message": "Empty.", "variables": []}, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert {e["pointer"] for e in problem["errors"]} >= {"/templates", "/model"}
    assert not PromptVersion.objects.exists()


def test_it_refuses_a_body_of_the_wrong_shape_with_pointers(author_client, prompt):
    response = author_client.post(
        VERSIONS,
        body(
            variables=[{"name": "customer_name", "type": "date"}],
            templates={"en": "Greet them."},
        ),
        format="json",
    )

    problem = assert_problem(response, 400, "/problems/validation-error")
    pointers = {e["pointer"] for e in problem["errors"]}
    assert "/variables/0/type" in pointers
    assert any(p.startswith("/templates/en") for p in pointers)


def test_it_lists_every_problem_of_invalid_content_at_once(author_client, prompt):
    data = body(
        variables=[{"name": "customer_name", "type": "string"}],
        model={
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temprature": 0.2},
            "response_schema": {"type": "nonsense"},
        },
        templates={
            "fr": {"instruction": "Bonjour {{ customer_name }}.\n{% if %}"},
            "de": {"instruction": "Hallo {{ customer_name }}, Bestellung {{ order_id }}."},
            "not a tag!!": {"instruction": "{{ customer_name }}"},
            "es": {"instruction": "{{ customer_name }} {{ ''.__class__.__mro__ }}"},
        },
    )

    response = author_client.post(VERSIONS, data, format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    found = errors_by_code(problem)
    assert set(found) >= {
        "template_syntax",
        "undeclared_variable",
        "template_forbidden",
        "unknown_parameter",
        "invalid_response_schema",
        "missing_default_locale",
        "invalid_locale",
    }
    syntax = found["template_syntax"][0]
    assert syntax["pointer"] == "/templates/fr/instruction"
    assert syntax["line"] == 2
    assert "instruction" in syntax["detail"]
    assert "fr" in syntax["detail"]
    assert "line 2" in syntax["detail"]
    assert found["undeclared_variable"][0]["pointer"] == "/templates/de/instruction"
    assert "order_id" in found["undeclared_variable"][0]["detail"]
    assert found["template_forbidden"][0]["pointer"] == "/templates/es/instruction"
    assert found["unknown_parameter"][0]["pointer"] == "/model/parameters/temprature"
    # The pointer names the value in the schema that is wrong, not just the schema.
    assert found["invalid_response_schema"][0]["pointer"] == "/model/response_schema/type"
    assert found["missing_default_locale"][0]["pointer"] == "/templates"
    assert found["invalid_locale"][0]["pointer"] == "/templates/not a tag!!"
    assert all(e.get("severity", "error") == "error" for e in problem["errors"])
    assert not PromptVersion.objects.exists()


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ customer_name.__class__ }}",
        "{{ ''|attr('__class__') }}",
    ],
)
def test_it_refuses_a_template_that_reaches_for_internals(author_client, prompt, template):
    data = body(templates={"en": {"instruction": "{{ customer_name }}", "context": template}})

    response = author_client.post(VERSIONS, data, format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    forbidden = errors_by_code(problem)["template_forbidden"]
    assert forbidden[0]["pointer"] == "/templates/en/context"
    assert forbidden[0]["line"] == 1
    assert not PromptVersion.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "code", "pointer"),
    [
        (
            {"templates": {"en": {"instruction": "Hi {{ customer_name }}.\n\n{{ 'x' | nope }}"}}},
            "template_syntax",
            "/templates/en/instruction",
        ),
        (
            {"templates": {"en": {"instruction": "{{ customer_name }} {{ order_id }}"}}},
            "undeclared_variable",
            "/templates/en/instruction",
        ),
        (
            {"model": {"provider": "local", "model": "echo-1", "parameters": {"top_k": 3}}},
            "unknown_parameter",
            "/model/parameters/top_k",
        ),
        (
            {"model": {"provider": "local", "model": "echo-1", "parameters": {"temperature": 9}}},
            "invalid_parameter",
            "/model/parameters/temperature",
        ),
        (
            {
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "response_schema": {"type": "object", "required": "category"},
                }
            },
            "invalid_response_schema",
            "/model/response_schema/required",
        ),
        (
            {"templates": {"fr": {"instruction": "Salue {{ customer_name }}."}}},
            "missing_default_locale",
            "/templates",
        ),
        (
            {"templates": {**content_data()["templates"], "en-": {"instruction": "x"}}},
            "invalid_locale",
            "/templates/en-",
        ),
        (
            {"variables": [{"name": "class", "type": "string"}]},
            "invalid_name",
            "/variables/0/name",
        ),
    ],
    ids=[
        "syntax",
        "undeclared-variable",
        "unknown-parameter",
        "parameter-out-of-range",
        "invalid-response-schema",
        "missing-default-locale",
        "bad-locale-tag",
        "reserved-variable-name",
    ],
)
def test_it_refuses_invalid_content_with_a_pointer(author_client, prompt, overrides, code, pointer):
    response = author_client.post(VERSIONS, body(**overrides), format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert pointer in [e["pointer"] for e in errors_by_code(problem)[code]]
    assert not PromptVersion.objects.exists()


def test_it_warns_of_an_unused_variable_in_the_created_answer(author_client, prompt):
    data = body(
        variables=[
            {"name": "customer_name", "type": "string"},
            {"name": "order_id", "type": "string"},
        ]
    )

    response = author_client.post(VERSIONS, data, format="json")

    assert response.status_code == 201, response.json()
    warnings = response.json()["warnings"]
    assert [(w["code"], w["severity"], w["pointer"]) for w in warnings] == [
        ("unused_variable", "warning", "/templates/en")
    ]
    assert "order_id" in warnings[0]["detail"]


def test_it_takes_an_optional_variable_declared_by_its_default(author_client, prompt):
    """As in an export file: a variable with a default and no ``required`` is optional."""
    data = body(
        variables=[
            {"name": "customer_name", "type": "string"},
            {"name": "tone", "type": "string", "default": "friendly"},
        ],
        templates={"en": {"instruction": "Greet {{ customer_name }} in a {{ tone }} way."}},
    )

    response = author_client.post(VERSIONS, data, format="json")

    assert response.status_code == 201, response.json()
    tone = response.json()["variables"][1]
    assert (tone["required"], tone["default"]) == (False, "friendly")


def test_it_normalizes_locale_tags(author_client, prompt):
    data = body(templates={"en": EN, "fr_ca": FR})

    response = author_client.post(VERSIONS, data, format="json")

    assert response.status_code == 201, response.json()
    assert sorted(response.json()["templates"]) == ["en", "fr-CA"]


# --- GET /prompts/{key}/versions ---------------------------------------------------------------


def test_it_lists_versions_newest_first(reader_client, draft):
    response = reader_client.get(VERSIONS)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(v["number"], v["status"], v["parent"]) for v in results] == [
        (2, "draft", 1),
        (1, "committed", None),
    ]
    assert results[1]["message"] == "First version."
    assert "templates" not in results[0]


def test_it_paginates_versions(reader_client, prompt):
    for _ in range(3):
        make_version(prompt)

    response = reader_client.get(VERSIONS, {"page_size": 2})

    assert response.json()["count"] == 3
    assert [v["number"] for v in response.json()["results"]] == [3, 2]


def test_it_answers_404_for_the_versions_of_an_unknown_prompt(reader_client):
    assert_problem(
        reader_client.get("/api/v1/prompts/support.nothing/versions"),
        404,
        "/problems/prompt-not-found",
    )


# --- GET /prompts/{key}/versions/{n} -----------------------------------------------------------


def test_it_serves_a_committed_version_as_immutable(reader_client, committed):
    response = reader_client.get(version_url(1))

    assert response.status_code == 200
    data = response.json()
    assert data["prompt"] == "support.refund-reply"
    assert data["number"] == 1
    assert data["status"] == "committed"
    assert data["variables"][0]["name"] == "customer_name"
    assert data["model"]["parameters"] == {"temperature": 0.2}
    assert data["translations"] == [{"locale": "en", "state": "source"}]
    assert response["ETag"] == f'"{committed.edit_tag}"'
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert "immutable" in cache_control
    assert any(part.startswith("max-age=") and int(part[8:]) > 0 for part in cache_control)


@pytest.mark.parametrize("header", ['"{h}"', "{h}", 'W/"{h}"', '"other", "{h}"', "*"])
def test_it_answers_304_to_a_matching_if_none_match(reader_client, committed, header):
    response = reader_client.get(
        version_url(1), HTTP_IF_NONE_MATCH=header.format(h=committed.edit_tag)
    )

    assert response.status_code == 304
    assert response.content == b""
    assert "Content-Length" not in response  # it would have to be the 200's (RFC 9110 8.6)
    assert response["ETag"] == f'"{committed.edit_tag}"'
    assert "immutable" in response["Cache-Control"]


def test_it_answers_200_to_an_if_none_match_of_other_content(reader_client, committed):
    response = reader_client.get(version_url(1), HTTP_IF_NONE_MATCH='"0123abc"')

    assert response.status_code == 200


def test_it_never_lets_a_draft_be_cached(reader_client, draft):
    response = reader_client.get(version_url(2))

    assert response.status_code == 200
    assert response.json()["status"] == "draft"
    assert response["ETag"] == f'"{draft.edit_tag}"'
    assert "no-cache" in response["Cache-Control"]
    assert "immutable" not in response["Cache-Control"]


def test_it_answers_a_draft_in_full_even_to_its_own_etag(reader_client, author_client, draft):
    """A draft's ETag is its content hash, which a new message leaves as it is: a 304 would
    serve the old message."""
    author_client.patch(version_url(2), {"message": "Reworded."}, format="json")

    response = reader_client.get(version_url(2), HTTP_IF_NONE_MATCH=f'"{draft.edit_tag}"')

    assert response.status_code == 200
    assert response.json()["message"] == "Reworded."


def test_it_shows_a_translation_left_behind_as_stale(reader_client, author_client, prompt):
    make_version(prompt, templates={"en": EN, "fr": FR})
    author_client.post(
        VERSIONS,
        body(templates={"en": {**EN, "format": "Two short paragraphs."}, "fr": FR}),
        format="json",
    )

    response = reader_client.get(version_url(2))

    assert response.json()["translations"] == [
        {"locale": "en", "state": "source"},
        {"locale": "fr", "state": "stale"},
    ]


@pytest.mark.parametrize("number", [2, 99])
def test_it_answers_404_for_an_unknown_version(reader_client, committed, number):
    problem = assert_problem(
        reader_client.get(version_url(number)), 404, "/problems/version-not-found"
    )
    assert str(number) in problem["detail"]


# --- PATCH /prompts/{key}/versions/{n} ---------------------------------------------------------


def test_it_replaces_only_the_parts_sent(author_client, draft):
    before = version_content(PromptVersion.objects.get(pk=draft.pk))
    templates = {"en": {**EN, "format": "One paragraph."}}

    response = author_client.patch(version_url(2), {"templates": templates}, format="json")

    assert response.status_code == 200, response.json()
    after = version_content(PromptVersion.objects.get(pk=draft.pk))
    assert after.variables == before.variables
    assert after.model == before.model
    assert after.templates["en"].format == "One paragraph."
    assert response.json()["content_hash"] == after.content_hash != draft.content_hash
    assert response["ETag"] == f'"{PromptVersion.objects.get(pk=draft.pk).edit_tag}"'
    assert PromptVersion.objects.get(pk=draft.pk).message == "Work in progress."


def test_it_changes_the_message_alone(author_client, draft):
    response = author_client.patch(version_url(2), {"message": "Warmer greeting."}, format="json")

    assert response.status_code == 200
    version = PromptVersion.objects.get(pk=draft.pk)
    assert version.message == "Warmer greeting."
    assert version.content_hash == draft.content_hash


def test_it_applies_an_edit_sent_with_the_current_etag(author_client, draft):
    response = author_client.patch(
        version_url(2),
        {"templates": {"en": {**EN, "context": "A loyal customer."}}},
        format="json",
        HTTP_IF_MATCH=f'"{draft.edit_tag}"',
    )

    assert response.status_code == 200, response.json()


def test_it_refuses_an_edit_of_a_draft_that_changed_since_it_was_read(author_client, draft):
    stale = draft.edit_tag
    author_client.patch(
        version_url(2), {"templates": {"en": {**EN, "format": "Short."}}}, format="json"
    )
    current = snapshot(draft)

    response = author_client.patch(
        version_url(2),
        {"templates": {"en": {**EN, "format": "Long."}}},
        format="json",
        HTTP_IF_MATCH=f'"{stale}"',
    )

    problem = assert_problem(response, 409, "/problems/draft-changed")
    assert problem["current_tag"] == PromptVersion.objects.get(pk=draft.pk).edit_tag
    assert snapshot(draft) == current


def test_it_refuses_to_edit_a_committed_version_and_changes_nothing(author_client, committed):
    before = snapshot(committed)

    response = author_client.patch(
        version_url(1),
        {"message": "Rewritten history.", "templates": {"en": {**EN, "format": "New."}}},
        format="json",
    )

    assert_problem(response, 409, "/problems/version-immutable")
    assert snapshot(committed) == before


def test_it_refuses_invalid_content_in_an_edit_and_changes_nothing(author_client, draft):
    before = snapshot(draft)

    response = author_client.patch(
        version_url(2),
        {"message": "Broken.", "templates": {"en": {"instruction": "{{ customer_name"}}},
        format="json",
    )

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert error_codes(problem) == ["template_syntax"]
    assert problem["errors"][0]["pointer"] == "/templates/en/instruction"
    assert snapshot(draft) == before


def test_it_answers_404_when_editing_an_unknown_version(author_client, committed):
    response = author_client.patch(version_url(7), {"message": "?"}, format="json")

    assert_problem(response, 404, "/problems/version-not-found")


# --- DELETE /prompts/{key}/versions/{n} --------------------------------------------------------


def test_it_discards_a_draft(author_client, draft):
    response = author_client.delete(version_url(2))

    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Length" not in response  # never on a 204 (RFC 9110 8.6)
    assert list(PromptVersion.objects.values_list("number", flat=True)) == [1]
    assert not LocalizedTemplate.objects.filter(version_id=draft.pk).exists()


def test_it_refuses_to_discard_a_committed_version(author_client, committed):
    before = snapshot(committed)

    response = author_client.delete(version_url(1))

    assert_problem(response, 409, "/problems/version-immutable")
    assert snapshot(committed) == before


# --- POST /prompts/{key}/versions/{n}/commit ---------------------------------------------------


def test_it_commits_a_draft(author_client, draft):
    response = author_client.post(version_url(2, "commit"), {}, format="json")

    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["status"] == "committed"
    assert data["message"] == "Work in progress."
    assert data["committed_by"] == f"key:author-ci#{author_client.key.pk}"
    assert "immutable" in response["Cache-Control"]
    assert PromptVersion.objects.get(pk=draft.pk).status == PromptVersion.Status.COMMITTED


def test_it_takes_the_commit_message_from_the_commit(author_client, draft):
    response = author_client.post(
        version_url(2), {"message": "ignored"}, format="json"
    )  # a POST on the version itself is not a commit
    assert response.status_code == 405

    response = author_client.post(
        version_url(2, "commit"),
        {"message": "Warmer greeting, agreed with support."},
        format="json",
    )

    assert response.status_code == 200
    assert PromptVersion.objects.get(pk=draft.pk).message == "Warmer greeting, agreed with support."


def test_it_refuses_a_commit_without_a_message(author_client, prompt):
    draft = make_version(prompt, commit=False, message="")
    before = snapshot(draft)

    response = author_client.post(version_url(1, "commit"), {}, format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert error_codes(problem) == ["missing_message"]
    assert problem["errors"][0]["pointer"] == "/message"
    assert snapshot(draft) == before


def test_it_refuses_to_commit_twice(author_client, draft):
    assert author_client.post(version_url(2, "commit"), {}, format="json").status_code == 200
    committed = snapshot(draft)

    response = author_client.post(version_url(2, "commit"), {"message": "Again."}, format="json")

    assert_problem(response, 409, "/problems/version-immutable")
    assert snapshot(draft) == committed


def test_it_refuses_to_commit_a_draft_that_changed_since_it_was_read(author_client, draft):
    response = author_client.post(
        version_url(2, "commit"), {}, format="json", HTTP_IF_MATCH='"not-what-you-read"'
    )

    problem = assert_problem(response, 409, "/problems/draft-changed")
    assert problem["current_tag"] == draft.edit_tag
    assert PromptVersion.objects.get(pk=draft.pk).status == PromptVersion.Status.DRAFT


# --- GET /prompts/{key}/versions/{n}/diff ------------------------------------------------------


def test_it_needs_the_version_to_diff_against(reader_client, draft):
    response = reader_client.get(version_url(2, "diff"))

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/against"]


@pytest.mark.parametrize(("number", "against"), [(2, 9), (9, 1)])
def test_it_answers_404_when_diffing_an_unknown_version(reader_client, draft, number, against):
    response = reader_client.get(version_url(number, "diff"), {"against": against})

    assert_problem(response, 404, "/problems/version-not-found")


def test_it_diffs_two_versions_section_by_section(reader_client, prompt):
    make_version(prompt, templates={"en": EN})
    make_version(
        prompt,
        commit=False,
        templates={"en": {**EN, "instruction": "Greet {{ customer_name }} warmly."}, "fr": FR},
        model={"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.5}},
    )

    response = reader_client.get(version_url(2, "diff"), {"against": 1})

    assert response.status_code == 200
    data = response.json()
    assert (data["prompt"], data["before_number"], data["after_number"]) == (
        "support.refund-reply",
        1,
        2,
    )
    rows = {(t["locale"], t["section"]): t for t in data["templates"]}
    # Every section of every locale, the default locale first.
    assert [(t["locale"], t["section"]) for t in data["templates"]] == [
        (locale, section)
        for locale in ("en", "fr")
        for section in ("system", "context", "instruction", "format")
    ]
    instruction = rows[("en", "instruction")]
    assert instruction["change"] == "changed"
    assert instruction["before"] == EN["instruction"]
    assert instruction["after"] == "Greet {{ customer_name }} warmly."
    assert instruction["rows"] == [
        {
            "tag": "replace",
            "before": [EN["instruction"]],
            "after": ["Greet {{ customer_name }} warmly."],
        }
    ]
    assert instruction["unified"].startswith("--- en/instruction")
    assert rows[("en", "system")]["change"] == "unchanged"
    assert rows[("en", "system")]["rows"] == [
        {"tag": "equal", "before": [EN["system"]], "after": [EN["system"]]}
    ]
    assert rows[("fr", "system")]["change"] == "added"
    assert data["variables"] == []
    assert data["model"] == [
        {"name": "parameters.temperature", "change": "changed", "before": 0.2, "after": 0.5}
    ]


def test_it_diffs_a_version_against_itself_as_unchanged(reader_client, committed):
    response = reader_client.get(version_url(1, "diff"), {"against": 1})

    data = response.json()
    assert {t["change"] for t in data["templates"]} == {"unchanged"}
    assert data["variables"] == data["model"] == []


# --- POST /prompts/{key}/versions/{n}/render ---------------------------------------------------


@pytest.fixture
def localized(prompt: Prompt) -> PromptVersion:
    """Version 1 in en and fr, with an optional ``tone`` (default "friendly") and an integer."""
    return make_version(
        prompt,
        variables=[
            {"name": "customer_name", "type": "string"},
            {"name": "tone", "type": "string", "required": False, "default": "friendly"},
            {"name": "items", "type": "integer", "required": False},
        ],
        templates={
            "en": {
                "system": "You are a {{ tone }} support agent.",
                "instruction": "Greet {{ customer_name }}.{% if items is number %} {{ 10 // items }} each.{% endif %}",
                "format": "One line.",
            },
            "fr": {
                "system": "Tu es un agent {{ tone }}.",
                "instruction": "Salue {{ customer_name }}.{% if items is number %} {{ 10 // items }}.{% endif %}",
            },
        },
    )


def test_it_renders_a_version(reader_client, localized):
    response = reader_client.post(
        version_url(1, "render"),
        {"locale": "en", "variables": {"customer_name": "Ada", "tone": "patient"}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    data = response.json()
    assert (data["prompt"], data["version"], data["locale"], data["requested_locale"]) == (
        "support.refund-reply",
        1,
        "en",
        "en",
    )
    assert data["sections"]["system"] == "You are a {{ tone }} support agent."
    assert data["rendered"] == {
        "system": "You are a patient support agent.",
        "context": "",
        "instruction": "Greet Ada.",
        "format": "One line.",
    }
    assert data["messages"] == [
        {"role": "system", "content": "You are a patient support agent."},
        {"role": "user", "content": "Greet Ada.\n\nOne line."},
    ]


def test_it_renders_the_default_locale_when_none_is_asked(reader_client, localized):
    response = reader_client.post(
        version_url(1, "render"), {"variables": {"customer_name": "Ada"}}, format="json"
    )

    assert (response.json()["locale"], response.json()["requested_locale"]) == ("en", "en")


@pytest.mark.parametrize(
    ("asked", "used", "requested"),
    [
        ("fr-CA", "fr", "fr-CA"),
        ("fr_ca", "fr", "fr-CA"),
        ("de-AT", "en", "de-AT"),
        ("fr", "fr", "fr"),
    ],
)
def test_it_falls_back_to_a_parent_locale_then_the_default(
    reader_client, localized, asked, used, requested
):
    response = reader_client.post(
        version_url(1, "render"),
        {"locale": asked, "variables": {"customer_name": "Ada"}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert (response.json()["locale"], response.json()["requested_locale"]) == (used, requested)


def test_it_applies_the_declared_defaults(reader_client, localized):
    response = reader_client.post(
        version_url(1, "render"),
        {"locale": "fr-CA", "variables": {"customer_name": "Ada"}},
        format="json",
    )

    data = response.json()
    assert data["rendered"]["system"] == "Tu es un agent friendly."
    assert data["variables"] == {"customer_name": "Ada", "tone": "friendly", "items": None}


def test_it_lists_every_problem_with_the_variables(reader_client, localized):
    response = reader_client.post(
        version_url(1, "render"),
        {"variables": {"tone": 3, "customer_nme": "Ada", "items": "two"}},
        format="json",
    )

    problem = assert_problem(response, 400, "/problems/invalid-variables")
    found = {(e["code"], e["pointer"]) for e in problem["errors"]}
    assert found == {
        ("unknown_variable", "/variables/customer_nme"),
        ("missing_variable", "/variables/customer_name"),
        ("wrong_type", "/variables/tone"),
        ("wrong_type", "/variables/items"),
    }
    unknown = errors_by_code(problem)["unknown_variable"][0]
    assert "customer_name" in unknown["detail"]  # the near miss is suggested


def test_it_answers_a_render_failure_with_section_locale_and_line(reader_client, localized):
    response = reader_client.post(
        version_url(1, "render"),
        {"locale": "fr", "variables": {"customer_name": "Ada", "items": 0}},
        format="json",
    )

    problem = assert_problem(response, 400, "/problems/render-failed")
    [error] = problem["errors"]
    assert error["pointer"] == "/templates/fr/instruction"
    assert error["line"] == 1
    assert "instruction" in error["detail"]
    assert "(fr)" in error["detail"]
    assert "ZeroDivisionError" in error["detail"]


def test_it_refuses_a_locale_that_is_not_a_tag(reader_client, localized):
    response = reader_client.post(
        version_url(1, "render"),
        {"locale": "not a tag!!", "variables": {"customer_name": "Ada"}},
        format="json",
    )

    problem = assert_problem(response, 400, "/problems/invalid-locale")
    assert "not a tag!!" in problem["detail"]


def test_it_renders_a_draft(reader_client, draft):
    response = reader_client.post(
        version_url(2, "render"), {"variables": {"customer_name": "Ada"}}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["rendered"]["instruction"] == "Greet Ada warmly."


def test_it_refuses_variables_that_are_not_an_object(reader_client, committed):
    response = reader_client.post(version_url(1, "render"), {"variables": ["Ada"]}, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/variables"]


def test_it_answers_404_when_rendering_an_unknown_version(reader_client, committed):
    response = reader_client.post(version_url(4, "render"), {}, format="json")

    assert_problem(response, 404, "/problems/version-not-found")


@override_settings(VERSION_DIFF_MAX_LINES=100)
def test_a_diff_too_large_to_compare_line_by_line_says_so(reader_client, prompt):
    """Issue 12, finding 7b: past the limit the section is one replaced block, flagged."""
    make_version(prompt, templates={"en": {**EN, "format": "a\nb\n" * 200}})
    make_version(prompt, templates={"en": {**EN, "format": "b\na\n" * 200}})

    response = reader_client.get(version_url(2, "diff"), {"against": 1})

    assert response.status_code == 200
    sections = {t["section"]: t for t in response.json()["templates"]}
    assert sections["format"]["coarse"] is True
    assert [row["tag"] for row in sections["format"]["rows"]] == ["replace"]
    assert sections["system"]["coarse"] is False
