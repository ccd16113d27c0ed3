"""The version workbench: a draft's page (new draft and editing one) and its preview endpoint.

Personas (STYLE R14, tests/conftest.py and tests/registry/test_admin.py):
- ``author`` (alice): in "Prompt authors"; writes, saves, previews and commits drafts.
- ``reader`` (erin): staff who may only view versions: sees the read-only page, previews nothing.
- ``outsider`` (carol): staff in no group: every registry page and the endpoint answer 403.
- an anonymous visitor: sent to the login page.

The page's forms are posted as a browser would (``version_form`` from test_admin); the preview
endpoint takes the draft as JSON, as the page's script sends it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from registry.models import Prompt, PromptVersion
from registry.rendering import template_variables
from registry.selectors import version_content
from registry.services import version_draft_update
from runs.models import ModelPrice, Provider
from tests.factories import AUTHOR, UserFactory, content_data, make_version
from tests.registry.test_admin import (
    CUSTOMER,
    EN,
    FR,
    existing_rows,
    messages_of,
    template_rows,
    url,
    version_form,
)

pytestmark = pytest.mark.django_db

WORKBENCH = "admin/registry/promptversion/workbench.html"


@pytest.fixture
def author_client(client: Client, author) -> Client:
    client.force_login(author)
    return client


@pytest.fixture
def outsider(db):
    """Staff without any group: may log in to the admin, sees no registry page."""
    return UserFactory(username="carol", is_staff=True)


@pytest.fixture
def reader(db):
    """Staff who may view prompts and versions, and change nothing."""
    user = UserFactory(username="erin", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["view_prompt", "view_promptversion", "view_variable"],
        )
    )
    return user


@pytest.fixture
def draft(prompt: Prompt) -> PromptVersion:
    """support.refund-reply v2, a draft over a committed v1, in English and French."""
    make_version(prompt, templates={"en": EN, "fr": FR})
    return make_version(prompt, commit=False, message="Shorter.", templates={"en": EN, "fr": FR})


def template_names(response) -> list[str]:
    return [t.name for t in response.templates]


def preview(client: Client, body: Any, **extra: Any):
    return client.post(
        url("promptversion_workbench_preview"),
        json.dumps(body) if not isinstance(body, str) else body,
        content_type="application/json",
        **extra,
    )


def preview_body(prompt: Prompt, **content: Any) -> dict[str, Any]:
    return {
        "prompt": prompt.pk,
        "version": None,
        "locale": "en",
        "values": {"customer_name": "Ada"},
        "content": content_data(**content),
    }


# --- the page ---------------------------------------------------------------------------------


def test_a_draft_opens_in_the_workbench_with_its_locales_editors_and_pickers(
    author_client: Client, draft: PromptVersion
) -> None:
    openai = Provider.objects.create(name="openai", base_url="https://api.openai.com/v1")
    ModelPrice.objects.create(
        provider=openai, model="gpt-4o-mini", input_per_million=Decimal("0.15"),
        output_per_million=Decimal("0.6"),
    )  # fmt: skip

    response = author_client.get(url("promptversion_change", draft.pk))

    assert response.status_code == 200
    assert WORKBENCH in template_names(response)
    page = response.content.decode()
    assert [(t.locale, t.source) for t in response.context["locale_tabs"] if not t.blank] == [
        ("en", True),
        ("fr", False),
    ]
    for section in ("system", "context", "instruction", "format"):
        assert f'id="id_templates-0-{section}"' in page  # plain textareas, enhanced by the script
    assert "codemirror5/codemirror.js" in page
    assert "codemirror5/jinja2.js" in page
    assert 'name="loaded_hash"' in page
    assert 'name="_workbench"' in page
    assert '<option value="local" selected>local</option>' in page
    assert response.context["models_by_provider"]["openai"] == ["gpt-4o-mini"]
    assert "Save and add another" not in page
    config = response.context["workbench_config"]
    assert (config["prompt"], config["version"], config["defaultLocale"]) == (
        draft.prompt_id,
        draft.pk,
        "en",
    )


def test_add_version_opens_an_empty_workbench_for_the_prompt(
    author_client: Client, prompt: Prompt
) -> None:
    prompt.default_locale = "fr"
    prompt.save()

    response = author_client.get(url("promptversion_add") + f"?prompt={prompt.pk}")

    assert response.status_code == 200
    assert WORKBENCH in template_names(response)
    tabs = response.context["locale_tabs"]
    # The default locale is the one written first; the extra row is hidden behind "Add a locale".
    assert [(t.locale, t.blank) for t in tabs] == [("fr", False), ("", True)]
    assert response.context["title"] == "New version"


def test_a_committed_version_keeps_its_read_only_page(
    author_client: Client, draft: PromptVersion
) -> None:
    committed = PromptVersion.objects.get(prompt=draft.prompt, number=1)

    response = author_client.get(url("promptversion_change", committed.pk))

    assert response.status_code == 200
    assert WORKBENCH not in template_names(response)
    assert "admin/registry/promptversion/change_form.html" in template_names(response)


def test_a_view_only_user_sees_the_draft_read_only_and_cannot_save(
    client: Client, reader, draft: PromptVersion
) -> None:
    client.force_login(reader)
    variables, templates = existing_rows(draft)

    page = client.get(url("promptversion_change", draft.pk))
    save = client.post(
        url("promptversion_change", draft.pk),
        version_form(version=draft, variables=variables, templates=templates, _workbench="1"),
    )

    assert page.status_code == 200
    assert WORKBENCH not in template_names(page)
    assert save.status_code == 403
    draft.refresh_from_db()
    assert draft.message == "Shorter."


def test_an_outsider_gets_403_on_the_workbench(
    client: Client, outsider, draft: PromptVersion
) -> None:
    client.force_login(outsider)

    assert client.get(url("promptversion_change", draft.pk)).status_code == 403
    assert client.get(url("promptversion_add")).status_code == 403


# --- saving -----------------------------------------------------------------------------------


def test_saving_stays_on_the_workbench_and_goes_through_the_service(
    author_client: Client, author, draft: PromptVersion
) -> None:
    variables, templates = existing_rows(draft)
    templates[0]["instruction"] = "Greet {{ customer_name }} briefly."

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft,
            variables=variables,
            templates=templates,
            message="Briefer.",
            _workbench="1",
            _continue="Save",
        ),
    )

    assert response.status_code == 302
    assert response["Location"] == url("promptversion_change", draft.pk)
    assert messages_of(response) == [f"Saved {draft}."]
    draft.refresh_from_db()
    assert (draft.message, draft.author) == ("Briefer.", author)
    assert (
        version_content(draft).templates["en"].instruction == "Greet {{ customer_name }} briefly."
    )


def test_a_new_draft_is_saved_from_the_workbench_and_opens_in_it(
    author_client: Client, prompt: Prompt
) -> None:
    data = version_form(
        prompt=prompt, templates=template_rows({"en": EN, "fr": FR}), _workbench="1"
    )

    response = author_client.post(url("promptversion_add") + f"?prompt={prompt.pk}", data)

    version = PromptVersion.objects.get(prompt=prompt)
    assert response.status_code == 302
    assert response["Location"] == url("promptversion_change", version.pk)
    assert sorted(version_content(version).templates) == ["en", "fr"]


def test_save_and_commit_goes_on_to_the_commit_confirmation(
    author_client: Client, draft: PromptVersion
) -> None:
    variables, templates = existing_rows(draft)

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft, variables=variables, templates=templates, _workbench="1", _commit="1"
        ),
    )

    assert response.status_code == 302
    assert response["Location"] == url("promptversion_commit", draft.pk)
    draft.refresh_from_db()
    assert draft.status == "draft"  # the confirmation page commits, not the save


def test_a_stale_save_is_refused_in_place_and_keeps_the_author_s_text(
    author_client: Client, draft: PromptVersion
) -> None:
    opened = draft.edit_tag
    variables, templates = existing_rows(draft)
    # A colleague saves meanwhile.
    version_draft_update(version=draft, actor=AUTHOR, message="Their change.")
    draft.refresh_from_db()
    templates[0]["instruction"] = "My unsaved words for {{ customer_name }}."
    data = version_form(
        version=draft, variables=variables, templates=templates, loaded_hash=opened, _workbench="1"
    )

    response = author_client.post(url("promptversion_change", draft.pk), data)

    assert response.status_code == 200
    assert WORKBENCH in template_names(response)
    page = response.content.decode()
    assert "Someone saved this draft after you opened it" in page
    assert "My unsaved words for {{ customer_name }}." in page
    assert response.context["conflict_tag"] == draft.edit_tag
    assert f'name="_overwrite" value="{draft.edit_tag}"' in page
    draft.refresh_from_db()
    assert draft.message == "Their change."

    # "Save mine over theirs", having seen the conflict: saved.
    overwrite = author_client.post(
        url("promptversion_change", draft.pk), {**data, "_overwrite": draft.edit_tag}
    )

    assert overwrite.status_code == 302
    assert version_content(draft).templates["en"].instruction.startswith("My unsaved words")


def test_an_invalid_template_is_listed_at_the_top_with_a_link_to_its_line(
    author_client: Client, draft: PromptVersion
) -> None:
    variables, templates = existing_rows(draft)
    fr = next(i for i, t in enumerate(templates) if t["locale"] == "fr")
    templates[fr]["instruction"] = "Salue {{ customer_name }}.\n{% if %}"

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(version=draft, variables=variables, templates=templates, _workbench="1"),
    )

    assert response.status_code == 200
    (link,) = response.context["error_links"]
    assert (link.where, link.anchor, link.line) == (
        "fr · instruction",
        f"id_templates-{fr}-instruction",
        2,
    )
    page = response.content.decode()
    assert f'href="#id_templates-{fr}-instruction" class="wb-goto" data-line="2"' in page
    assert "Nothing was saved." in page
    # The link names the place; the message after it does not say it again.
    assert not link.text.startswith("The instruction section"), link.text
    assert link.text.startswith("Expected an expression")
    assert "fr · instruction, line 2</a>: Expected an expression" in page
    assert next(t for t in response.context["locale_tabs"] if t.locale == "fr").error_count == 1


def test_json_field_errors_are_listed_at_the_top_next_to_their_field(
    author_client: Client, draft: PromptVersion
) -> None:
    variables, templates = existing_rows(draft)

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft,
            variables=variables,
            templates=templates,
            parameters='{"temperature": 0.2,',
            response_schema='{"type": "object", "$ref": "https://example.com/x"}',
            _workbench="1",
        ),
    )

    assert response.status_code == 200
    links = {link.anchor: link for link in response.context["error_links"]}
    assert set(links) == {"id_parameters", "id_response_schema"}
    assert links["id_parameters"].where == "Parameters"
    assert "$ref" in links["id_response_schema"].text


def test_an_undeclared_variable_is_refused_on_save_and_named(
    author_client: Client, draft: PromptVersion
) -> None:
    variables, templates = existing_rows(draft)
    templates[0]["context"] = "Order {{ order_id }}."

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(version=draft, variables=variables, templates=templates, _workbench="1"),
    )

    (link,) = response.context["error_links"]
    assert "'order_id' is not a declared variable" in link.text
    assert link.line == 1


# --- the preview endpoint ---------------------------------------------------------------------


def test_preview_renders_the_unsaved_templates_with_sample_values(
    author_client: Client, prompt: Prompt
) -> None:
    response = preview(author_client, preview_body(prompt))

    assert response.status_code == 200
    data = response.json()
    assert data["problems"] == []
    assert data["render"]["locale"] == "en"
    assert data["render"]["messages"] == [
        {"role": "system", "content": "You are a courteous support agent."},
        {"role": "user", "content": "Greet Ada and answer the question."},
    ]
    assert (data["undeclared"], data["unused"]) == ([], [])
    assert data["translations"] == [{"locale": "en", "state": "source"}]


def test_preview_falls_back_to_the_default_locale(author_client: Client, prompt: Prompt) -> None:
    body = {**preview_body(prompt), "locale": "fr-CA"}

    render = preview(author_client, body).json()["render"]

    assert (render["locale"], render["requested_locale"]) == ("en", "fr-CA")


def test_preview_lists_a_bad_template_s_problem_with_locale_section_and_line(
    author_client: Client, prompt: Prompt
) -> None:
    templates = {"en": {"system": "Hello.", "instruction": "Greet {{ customer_name }}.\n{% if %}"}}

    data = preview(author_client, preview_body(prompt, templates=templates)).json()

    (problem,) = data["problems"]
    assert (problem["locale"], problem["section"], problem["line"], problem["severity"]) == (
        "en",
        "instruction",
        2,
        "error",
    )
    assert problem["code"] == "template_syntax"
    assert data["render"]["blocked"] is True
    # The detail says its place (for the API and the preview page); the workbench says it in the
    # link before the message, so the message comes without it too.
    assert problem["detail"].startswith("The instruction section (en), line 2: ")
    assert problem["message"] == problem["detail"].removeprefix(
        "The instruction section (en), line 2: "
    )


def test_preview_offers_undeclared_variables_with_a_type_and_flags_unused_ones(
    author_client: Client, prompt: Prompt
) -> None:
    templates = {
        "en": {
            "context": "{% for item in items %}- {{ item.title }}\n{% endfor %}",
            "instruction": "Total {{ total + 1 }}{% if vip %} (VIP){% endif %} for {{ who }}.",
        }
    }
    body = preview_body(prompt, templates=templates)

    data = preview(author_client, body).json()

    assert {(u["name"], u["kind"], u["section"], u["line"]) for u in data["undeclared"]} == {
        ("items", "list", "context", 1),
        ("total", "number", "instruction", 1),
        ("vip", "boolean", "instruction", 1),
        ("who", "string", "instruction", 1),
    }
    assert data["unused"] == ["customer_name"]
    codes = {p["code"] for p in data["problems"]}
    assert codes == {"undeclared_variable", "unused_variable"}
    assert data["render"]["blocked"] is True


def test_preview_says_which_sample_values_are_missing_or_wrong(
    author_client: Client, prompt: Prompt
) -> None:
    body = preview_body(
        prompt,
        variables=[CUSTOMER, {"name": "count", "type": "integer", "required": True}],
        templates={"en": {"instruction": "Greet {{ customer_name }} {{ count }} times."}},
    )
    body["values"] = {"count": "three"}

    data = preview(author_client, body).json()

    by_value = {p["value"]: p for p in data["problems"]}
    assert set(by_value) == {"customer_name", "count"}
    assert by_value["customer_name"]["code"] == "missing_variable"
    assert by_value["count"]["code"] == "wrong_type"
    assert by_value["count"]["pointer"] == "/values/count"


def test_preview_checks_the_binding_as_a_save_would(author_client: Client, prompt: Prompt) -> None:
    model = {
        "provider": "nowhere",
        "model": "echo-1",
        "parameters": {"temprature": 0.2},
        "response_schema": {"type": "object", "$ref": "https://example.com/schema"},
    }

    data = preview(author_client, preview_body(prompt, model=model)).json()

    fields = sorted((p["field"], p["code"]) for p in data["problems"])
    assert fields == [
        ("parameters", "unknown_parameter"),
        ("provider", "unknown_provider"),
        ("response_schema", "schema_reference_refused"),
    ]
    assert data["render"]["blocked"] is False  # the binding does not stop the text rendering


def test_preview_marks_a_translation_stale_when_the_source_moves_on(
    author_client: Client, draft: PromptVersion
) -> None:
    content = version_content(draft)
    templates = {locale: sections.as_dict() for locale, sections in content.templates.items()}
    templates["en"]["instruction"] = "Greet {{ customer_name }} warmly."
    body = {**preview_body(draft.prompt, templates=templates), "version": draft.pk}

    data = preview(author_client, body).json()

    assert data["translations"] == [
        {"locale": "en", "state": "source"},
        {"locale": "fr", "state": "stale"},
    ]
    templates["fr"]["instruction"] = "Salue {{ customer_name }} chaleureusement."
    edited = preview(author_client, {**body, "content": content_data(templates=templates)}).json()
    assert edited["translations"][1] == {"locale": "fr", "state": "current"}


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_preview_refuses_an_oversized_draft(author_client: Client, prompt: Prompt) -> None:
    body = preview_body(prompt, templates={"en": {"instruction": "x" * 20_000}})

    response = preview(author_client, body)

    assert response.status_code == 413
    assert "at most 10,000 bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("not json", "Send the draft as a JSON object."),
        ([1, 2], "Send {prompt, locale, values, content} as a JSON object."),
        ({"prompt": 999_999, "content": {}}, "Choose the prompt first"),
    ],
    ids=["not-json", "not-an-object", "unknown-prompt"],
)
def test_preview_refuses_a_malformed_request(
    author_client: Client, prompt: Prompt, body: Any, detail: str
) -> None:
    response = preview(author_client, body)

    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


def test_preview_reports_a_content_document_of_the_wrong_shape(
    author_client: Client, prompt: Prompt
) -> None:
    body = preview_body(prompt, templates={"en": {"instructions": "Typo."}})

    data = preview(author_client, body).json()

    assert [p["code"] for p in data["problems"]] == ["unknown_section"]
    assert data["render"] is None


def test_preview_is_post_only(author_client: Client) -> None:
    response = author_client.get(url("promptversion_workbench_preview"))

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_preview_needs_the_csrf_token(author, prompt: Prompt) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(author)

    assert preview(client, preview_body(prompt)).status_code == 403


def test_preview_is_refused_to_anonymous_visitors_outsiders_and_readers(
    client: Client, outsider, reader, prompt: Prompt
) -> None:
    anonymous = preview(client, preview_body(prompt))
    client.force_login(outsider)
    as_outsider = preview(client, preview_body(prompt))
    client.force_login(reader)
    as_reader = preview(client, preview_body(prompt))

    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
    assert as_outsider.status_code == 403
    assert as_reader.status_code == 403


# --- finding variables --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ name }}", ("name", 1, "string")),
        ("{% for x in rows %}{{ x }}{% endfor %}", ("rows", 1, "list")),
        ("{{ tags | join(', ') }}", ("tags", 1, "list")),
        ("\n{{ user.email }}", ("user", 2, "object")),
        ("{{ first[0] }}", ("first", 1, "list")),
        ("{% if n > 3 %}many{% endif %}", ("n", 1, "number")),
        ("{% if not vip %}x{% endif %}", ("vip", 1, "boolean")),
        ("{% if tone %}{{ tone }}{% endif %}", ("tone", 1, "string")),
    ],
)
def test_template_variables_guess_a_type_from_the_use(
    source: str, expected: tuple[str, int, str]
) -> None:
    (use,) = template_variables(source)

    assert (use.name, use.line, use.kind) == expected


def test_template_variables_of_text_that_does_not_parse_are_unknown() -> None:
    assert template_variables("{{ name ") == ()
    assert template_variables("") == ()
