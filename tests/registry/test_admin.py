"""The admin for prompt authors: prompt list, version editor, preview, diff, commit, new draft,
discard, translation status, and who may do what.

Personas (STYLE R14):
- ``author`` (alice, tests/conftest.py): in "Prompt authors"; adds and changes prompts and drafts,
  commits, discards; no delete on prompts and no other app's permissions.
- ``admin_user`` (pytest-django): a superuser; may do everything the rules allow, and no more:
  even a superuser cannot change a committed version or delete a prompt that has one.
- ``outsider`` (carol): staff, but in no group: every registry page answers 403.

Forms are posted as a browser would, with the inline formsets' management forms.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable
from registry.selectors import TranslationState, version_content, version_translation_status
from registry.services import version_branch
from tests.factories import AUTHOR, PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db

EN = {
    "system": "You are a courteous support agent.",
    "instruction": "Greet {{ customer_name }} and answer the question.",
}
FR = {
    "system": "Tu es un agent de support courtois.",
    "instruction": "Salue {{ customer_name }} et réponds à la question.",
}
CUSTOMER = {
    "name": "customer_name",
    "type": "string",
    "required": True,
    "description": "The customer's first name.",
}


# --- personas and helpers ---------------------------------------------------------------------


@pytest.fixture
def outsider(db):
    """Staff without any group: may log in to the admin, sees no registry page."""
    return UserFactory(username="carol", is_staff=True)


@pytest.fixture
def author_client(client: Client, author) -> Client:
    client.force_login(author)
    return client


@pytest.fixture
def committed(prompt: Prompt) -> PromptVersion:
    """Version 1 of support.refund-reply, committed, in English and French."""
    return make_version(prompt, message="First version.", templates={"en": EN, "fr": FR})


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:registry_{name}", args=args)


def formset(
    prefix: str, rows: Iterable[Mapping[str, Any]], version: PromptVersion | None
) -> dict[str, str]:
    """An inline formset as the browser posts it; rows with an ``id`` are existing rows and come
    first. ``True`` is a ticked checkbox, ``False`` an unticked one (not posted)."""
    rows = list(rows)
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(sum("id" in row for row in rows)),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        if version is not None:
            data[f"{prefix}-{i}-version"] = str(version.pk)
        for key, value in row.items():
            if value is True:
                data[f"{prefix}-{i}-{key}"] = "on"
            elif value is not False:
                data[f"{prefix}-{i}-{key}"] = str(value)
    return data


def template_rows(templates: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"locale": locale, **sections} for locale, sections in templates.items()]


def version_form(
    *,
    prompt: Prompt | None = None,
    version: PromptVersion | None = None,
    variables: Iterable[Mapping[str, Any]] = (CUSTOMER,),
    templates: Iterable[Mapping[str, Any]] = (),
    message: str = "First draft.",
    parameters: str = '{"temperature": 0.2}',
    **fields: str,
) -> dict[str, str]:
    data = {
        "message": message,
        "provider": "local",
        "model_name": "echo-1",
        "parameters": parameters,
        "response_schema": "",
        "fallbacks": "[]",
        **fields,
    }
    if prompt is not None:
        data["prompt"] = str(prompt.pk)
    if version is not None:
        data.setdefault("loaded_hash", version.edit_tag)
    data |= formset("variables", variables, version)
    data |= formset("templates", templates, version)
    return data


def existing_rows(version: PromptVersion) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A draft's variable and template rows as its change form shows them."""
    variables = [
        {
            "id": v.pk,
            "name": v.name,
            "type": v.type,
            "required": v.required,
            "default": "" if v.default is None else json.dumps(v.default),
            "description": v.description,
        }
        for v in Variable.objects.filter(version=version).order_by("position")
    ]
    templates = [
        {
            "id": t.pk,
            "locale": t.locale,
            "system": t.system,
            "context": t.context,
            "instruction": t.instruction,
            "format": t.format,
        }
        for t in LocalizedTemplate.objects.filter(version=version).order_by("locale")
    ]
    return variables, templates


def inline(response, prefix: str):
    return next(
        f.formset for f in response.context["inline_admin_formsets"] if f.formset.prefix == prefix
    )


def template_errors(response, locale: str) -> dict[str, list[str]]:
    form = next(
        f
        for f in inline(response, "templates").forms
        if f.cleaned_data.get("locale") == locale or f["locale"].value() == locale
    )
    return {field: list(errors) for field, errors in form.errors.items()}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- the prompt list ----------------------------------------------------------------------------


def test_the_prompt_list_searches_and_filters_by_tag(author_client: Client) -> None:
    PromptFactory(
        key="support.refund-reply",
        tags=["support", "billing"],
        description="Answers a refund request.",
    )
    PromptFactory(key="sales.follow-up", tags=["sales"], description="Follows up a lead.")

    everything = author_client.get(url("prompt_changelist"))
    searched = author_client.get(url("prompt_changelist"), {"q": "refund"})
    tagged = author_client.get(url("prompt_changelist"), {"tag": "sales"})

    assert everything.status_code == 200
    assert [p.key for p in searched.context["cl"].result_list] == ["support.refund-reply"]
    assert [p.key for p in tagged.context["cl"].result_list] == ["sales.follow-up"]
    assert "billing" in everything.content.decode()  # the tag filter lists every tag


def test_the_prompt_list_shows_latest_and_draft_and_filters_on_drafts(
    author_client: Client, prompt: Prompt, committed: PromptVersion
) -> None:
    make_version(prompt, commit=False, templates={"en": EN, "fr": FR})
    PromptFactory(key="sales.follow-up")

    response = author_client.get(url("prompt_changelist"), {"has_draft": "yes"})

    rows = response.context["cl"].result_list
    assert [(p.key, p.latest_number, p.draft_number) for p in rows] == [
        ("support.refund-reply", 1, 2)
    ]
    assert url("promptversion_by_number", prompt.pk, 2) in response.content.decode()


def test_the_prompt_list_costs_the_same_queries_for_2_or_20_prompts(
    author_client: Client, django_assert_max_num_queries
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = author_client.get(url("prompt_changelist"))
        assert response.status_code == 200
        return len(queries)

    for i in range(2):
        make_version(PromptFactory(tags=["support", f"t{i}"]), templates={"en": EN})
    few = count()
    for i in range(18):
        make_version(PromptFactory(tags=["support", f"t{i}"]), templates={"en": EN})
    many = count()

    assert few == many
    with django_assert_max_num_queries(8):
        author_client.get(url("prompt_changelist"))


def test_the_version_list_costs_the_same_queries_for_2_or_20_versions(
    author_client: Client,
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = author_client.get(url("promptversion_changelist"))
        assert response.status_code == 200
        return len(queries)

    for _ in range(2):
        make_version(PromptFactory(), templates={"en": EN, "fr": FR})
    few = count()
    for _ in range(18):
        make_version(PromptFactory(), templates={"en": EN, "fr": FR})
    many = count()

    assert few == many


# --- prompts ------------------------------------------------------------------------------------


def test_an_author_adds_a_prompt(author_client: Client, author) -> None:
    response = author_client.post(
        url("prompt_add"),
        {
            "key": "support.refund-reply",
            "description": "Answers refunds.",
            "default_locale": "EN",
            "tags": "support, billing, support",
        },
    )

    assert response.status_code == 302, response.content
    prompt = Prompt.objects.get(key="support.refund-reply")
    assert (prompt.default_locale, prompt.tags, prompt.owner) == (
        "en",
        ["billing", "support"],
        author,
    )


def test_a_bad_prompt_is_refused_in_place(author_client: Client, prompt: Prompt) -> None:
    response = author_client.post(
        url("prompt_add"),
        {
            "key": "support.refund-reply",
            "description": "",
            "default_locale": "not a tag!",
            "tags": "Support",
        },
    )

    errors = response.context["adminform"].form.errors
    assert response.status_code == 200
    assert set(errors) == {"key", "default_locale", "tags"}
    assert Prompt.objects.count() == 1


def test_key_and_default_locale_stay_once_the_prompt_exists(
    author_client: Client, prompt: Prompt
) -> None:
    response = author_client.post(
        url("prompt_change", prompt.pk),
        {
            "key": "renamed",
            "default_locale": "fr",
            "description": "New words.",
            "tags": "a, b",
        },
    )

    assert response.status_code == 302
    prompt.refresh_from_db()
    assert (prompt.key, prompt.default_locale, prompt.description, prompt.tags) == (
        "support.refund-reply",
        "en",
        "New words.",
        ["a", "b"],
    )


def test_nobody_deletes_a_prompt_with_committed_versions(
    client: Client, author, admin_user, prompt: Prompt, committed: PromptVersion
) -> None:
    client.force_login(author)
    as_author = client.get(url("prompt_delete", prompt.pk))
    client.force_login(admin_user)
    as_superuser = client.get(url("prompt_delete", prompt.pk))
    page = client.get(url("prompt_change", prompt.pk))

    bulk = client.post(
        url("prompt_changelist"),
        {"action": "delete_selected", "_selected_action": [str(prompt.pk)], "post": "yes"},
    )

    assert (as_author.status_code, as_superuser.status_code) == (403, 403)
    assert not page.context["has_delete_permission"]
    assert bulk.status_code == 403
    assert Prompt.objects.filter(pk=prompt.pk).exists()


# --- the version editor ---------------------------------------------------------------------------


def test_an_author_opens_a_draft_in_english_and_french(
    author_client: Client, author, prompt: Prompt
) -> None:
    tone = {"name": "tone", "type": "string", "required": False, "default": '"friendly"'}
    data = version_form(
        prompt=prompt,
        variables=[CUSTOMER, tone],
        templates=template_rows(
            {
                "en": {**EN, "format": "Answer in a {{ tone }} tone."},
                "fr": {**FR, "format": "Réponds sur un ton {{ tone }}."},
            }
        ),
    )

    response = author_client.post(url("promptversion_add"), data)

    assert response.status_code == 302, response.context and response.context["errors"]
    version = PromptVersion.objects.get(prompt=prompt)
    content = version_content(version)
    assert (version.number, version.status, version.author, version.message) == (
        1,
        "draft",
        author,
        "First draft.",
    )
    assert [(v.name, v.required, v.default) for v in content.variables] == [
        ("customer_name", True, None),
        ("tone", False, "friendly"),
    ]
    assert sorted(content.templates) == ["en", "fr"]
    assert content.model.parameters == {"temperature": 0.2}
    assert version.content_hash == content.content_hash


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        ("Salue {{ customer_name ", "line 1"),
        ("Salue {{ nobody }}.", "'nobody' is not a declared variable"),
        ("{{ ''.__class__ }}", "cannot reach the attribute '__class__'"),
    ],
    ids=["syntax-error", "undeclared-variable", "sandbox-escape"],
)
def test_a_bad_template_is_refused_next_to_its_section_and_nothing_is_saved(
    author_client: Client, prompt: Prompt, instruction: str, expected: str
) -> None:
    data = version_form(
        prompt=prompt, templates=template_rows({"en": EN, "fr": {**FR, "instruction": instruction}})
    )

    response = author_client.post(url("promptversion_add"), data)

    assert response.status_code == 200
    errors = template_errors(response, "fr")
    assert list(errors) == ["instruction"]
    assert expected in errors["instruction"][0]
    assert template_errors(response, "en") == {}
    assert not PromptVersion.objects.exists()
    assert not LocalizedTemplate.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("parameters", '{"temperature": NaN}', "NaN is not a JSON number. (at /temperature)"),
        ("parameters", '{"stop": ["\\u0000"]}', "Null characters"),
        ("fallbacks", '[{"provider": "\\ud800"}]', "Unpaired surrogates"),
        ("response_schema", '{"maximum": 1e400}', "The number is too large."),
    ],
    ids=["nan", "nul", "surrogate", "overflow"],
)
def test_json_fields_go_through_the_strict_parser(
    author_client: Client, prompt: Prompt, field: str, value: str, expected: str
) -> None:
    """Issue 12, finding 5: what PostgreSQL would refuse on save (a 500) is a form error."""
    data = version_form(prompt=prompt, templates=template_rows({"en": EN}), **{field: value})

    response = author_client.post(url("promptversion_add"), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert expected in errors[field][0]
    assert not PromptVersion.objects.exists()


def test_a_variable_default_goes_through_the_strict_parser(
    author_client: Client, prompt: Prompt
) -> None:
    tags = {"name": "tags", "type": "list", "required": False, "default": '["\\u0000"]'}
    data = version_form(
        prompt=prompt, variables=[CUSTOMER, tags], templates=template_rows({"en": EN})
    )

    response = author_client.post(url("promptversion_add"), data)

    assert response.status_code == 200
    assert not PromptVersion.objects.exists()
    assert "Null characters (\\u0000) are not allowed. (at /0)" in response.content.decode()


def test_every_problem_of_a_section_is_listed_and_the_page_keeps_the_text(
    author_client: Client, prompt: Prompt
) -> None:
    text = "Salut\r\n{{ customer_name.__class__ }} {{ nobody }}"
    data = version_form(
        prompt=prompt, templates=template_rows({"en": EN, "fr": {"instruction": text}})
    )

    response = author_client.post(url("promptversion_add"), data)

    errors = template_errors(response, "fr")["instruction"]
    assert len(errors) == 2
    assert "line 2" in errors[0]
    assert "'nobody' is not a declared variable" in errors[1]
    assert "{{ customer_name.__class__ }} {{ nobody }}</textarea>" in response.content.decode()


def test_variable_and_model_problems_go_on_their_own_fields(
    author_client: Client, prompt: Prompt
) -> None:
    data = version_form(
        prompt=prompt,
        variables=[
            CUSTOMER,
            {"name": "2bad", "type": "integer", "required": False, "default": '"three"'},
        ],
        templates=template_rows({"en": EN}),
        parameters='{"temperature": 5}',
    )

    response = author_client.post(url("promptversion_add"), data)

    variable_forms = inline(response, "variables").forms
    assert "name" in variable_forms[1].errors
    assert "default" in variable_forms[1].errors
    assert variable_forms[0].errors == {}
    assert (
        "temperature must be a number from 0 to 2"
        in (response.context["adminform"].form.errors["parameters"][0])
    )
    assert not PromptVersion.objects.exists()


def test_a_response_schema_naming_a_url_is_refused_on_its_field(
    author_client: Client, prompt: Prompt, recorder
) -> None:
    # Issue 12, finding 2: the same check as the API, next to the field, saying where.
    schema = {"type": "object", "properties": {"reply": {"$ref": f"{recorder.url}/r.json"}}}
    data = version_form(
        prompt=prompt, templates=template_rows({"en": EN}), response_schema=json.dumps(schema)
    )

    response = author_client.post(url("promptversion_add"), data)

    errors = response.context["adminform"].form.errors["response_schema"]
    assert "never a file or a URL" in errors[0]
    assert "(at /properties/reply/$ref)" in errors[0]
    assert recorder.hits == []
    assert not PromptVersion.objects.exists()


def test_a_draft_needs_a_template_in_the_default_locale(
    author_client: Client, prompt: Prompt
) -> None:
    response = author_client.post(
        url("promptversion_add"), version_form(prompt=prompt, templates=template_rows({"fr": FR}))
    )

    assert "default locale en needs a template" in str(
        inline(response, "templates").non_form_errors()
    )
    assert not PromptVersion.objects.exists()


def test_opening_a_second_draft_points_at_the_first(author_client: Client, prompt: Prompt) -> None:
    make_version(prompt, commit=False, templates={"en": EN})

    response = author_client.post(
        url("promptversion_add"), version_form(prompt=prompt, templates=template_rows({"en": EN}))
    )

    assert (
        "open draft already (version 1)" in response.context["adminform"].form.errors["prompt"][0]
    )
    assert PromptVersion.objects.count() == 1


def test_saving_a_draft_goes_through_the_service_and_marks_the_untouched_translation_stale(
    author_client: Client, author, committed: PromptVersion
) -> None:
    draft = version_branch(source=committed, actor=AUTHOR)
    variables, templates = existing_rows(draft)
    templates[0]["instruction"] = "Greet {{ customer_name }} by name and answer briefly."
    assert templates[0]["locale"] == "en"

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft, variables=variables, templates=templates, message="Shorter answers."
        ),
    )

    assert response.status_code == 302, response.context and response.context["errors"]
    draft.refresh_from_db()
    assert (draft.message, draft.author) == ("Shorter answers.", author)
    assert version_content(draft).templates["en"].instruction.endswith("answer briefly.")
    assert [(s.locale, s.state) for s in version_translation_status(draft)] == [
        ("en", TranslationState.SOURCE),
        ("fr", TranslationState.STALE),
    ]
    page = author_client.get(url("promptversion_change", draft.pk)).content.decode()
    assert "fr · stale" in page
    assert "en · source" in page


def test_a_browser_s_crlf_line_breaks_do_not_change_the_text(
    author_client: Client, prompt: Prompt
) -> None:
    two_lines = {**EN, "instruction": "Greet {{ customer_name }}.\nAnswer the question."}
    first = make_version(prompt, templates={"en": two_lines, "fr": FR})
    draft = version_branch(source=first, actor=AUTHOR)
    variables, templates = existing_rows(draft)
    for row in templates:
        row["instruction"] = row["instruction"].replace("\n", "\r\n")

    response = author_client.post(
        url("promptversion_change", draft.pk),
        version_form(version=draft, variables=variables, templates=templates),
    )

    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.content_hash == first.content_hash
    assert [s.state for s in version_translation_status(draft)] == [
        TranslationState.SOURCE,
        TranslationState.CURRENT,
    ]


def test_a_warning_is_shown_after_saving(author_client: Client, prompt: Prompt) -> None:
    unused = {"name": "order_id", "type": "string", "required": False}
    response = author_client.post(
        url("promptversion_add"),
        version_form(
            prompt=prompt, variables=[CUSTOMER, unused], templates=template_rows({"en": EN})
        ),
        follow=True,
    )

    assert any("'order_id' is declared but no section" in m for m in messages_of(response))
    assert PromptVersion.objects.filter(prompt=prompt).exists()


def test_templates_are_checked_before_a_prompt_is_chosen(author_client: Client) -> None:
    data = version_form(templates=template_rows({"fr": {**FR, "instruction": "{{ nobody }}"}}))

    response = author_client.post(url("promptversion_add"), data)

    assert "prompt" in response.context["adminform"].form.errors
    assert (
        "'nobody' is not a declared variable" in template_errors(response, "fr")["instruction"][0]
    )
    assert not inline(response, "templates").non_form_errors()


def test_a_draft_opened_meanwhile_is_reported_instead_of_a_500(
    author_client: Client, prompt: Prompt, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry.admin import versions

    real = versions.version_draft_create

    def another_author_first(**kwargs: Any) -> PromptVersion:
        # The race the form cannot see: another draft opened between the check and the save.
        make_version(prompt, commit=False, templates={"en": EN})
        return real(**kwargs)

    monkeypatch.setattr(versions, "version_draft_create", another_author_first)
    data = version_form(prompt=prompt, templates=template_rows({"en": EN}))

    response = author_client.post(url("promptversion_add"), data, follow=True)

    assert response.status_code == 200
    (message,) = messages_of(response)
    assert "open draft already (version 1)" in message
    assert url("promptversion_by_number", prompt.pk, 1) in message


def test_saving_over_a_newer_save_is_refused(author_client: Client, prompt: Prompt) -> None:
    draft = make_version(prompt, commit=False, templates={"en": EN})
    variables, templates = existing_rows(draft)
    data = version_form(
        version=draft, variables=variables, templates=templates, loaded_hash="0" * 64
    )

    response = author_client.post(url("promptversion_change", draft.pk), data)

    assert response.status_code == 200
    assert "Someone saved this draft after you opened it" in str(
        response.context["adminform"].form.non_field_errors()
    )


def test_a_committed_version_is_a_read_only_page(
    author_client: Client, committed: PromptVersion
) -> None:
    before = (committed.content_hash, committed.message)
    variables, templates = existing_rows(committed)

    page = author_client.get(url("promptversion_change", committed.pk))
    posted = author_client.post(
        url("promptversion_change", committed.pk),
        version_form(
            version=committed, variables=variables, templates=templates, message="Rewritten."
        ),
    )

    assert page.status_code == 200
    assert page.context["title"].startswith("View")
    assert not page.context["has_change_permission"]
    assert all(not f.has_add_permission for f in page.context["inline_admin_formsets"])
    assert committed.content_hash in page.content.decode()
    assert posted.status_code == 403
    committed.refresh_from_db()
    assert (committed.content_hash, committed.message) == before


# --- commit, new draft, discard -------------------------------------------------------------------


def test_an_author_commits_through_the_confirmation_page(
    author_client: Client, author, prompt: Prompt
) -> None:
    draft = make_version(prompt, commit=False, message="Draft message.", templates={"en": EN})
    commit_url = url("promptversion_commit", draft.pk)

    page = author_client.get(commit_url)
    response = author_client.post(
        commit_url, {"message": "Greets by name.", "content_hash": draft.edit_tag}
    )

    assert page.context["form"]["message"].value() == "Draft message."
    assert response.status_code == 302
    draft.refresh_from_db()
    assert (draft.status, draft.message, draft.committed_by) == (
        "committed",
        "Greets by name.",
        author,
    )


def test_a_commit_needs_a_message_and_the_content_reviewed(
    author_client: Client, prompt: Prompt
) -> None:
    draft = make_version(prompt, commit=False, message="", templates={"en": EN})
    commit_url = url("promptversion_commit", draft.pk)

    no_message = author_client.post(commit_url, {"message": "", "content_hash": draft.edit_tag})
    stale_page = author_client.post(commit_url, {"message": "Ok.", "content_hash": "0" * 64})

    assert "message" in no_message.context["form"].errors
    assert "saved again after you opened this page" in str(
        stale_page.context["form"].non_field_errors()
    )
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_commit_selected_drafts_commits_each_draft(
    author_client: Client, committed: PromptVersion
) -> None:
    first = make_version(
        committed.prompt, commit=False, message="Has a message.", templates={"en": EN}
    )
    second = make_version(PromptFactory(), commit=False, message="", templates={"en": EN})
    selected = [str(first.pk), str(second.pk), str(committed.pk)]
    action = {"action": "commit_selected", "_selected_action": selected}

    confirm = author_client.post(url("promptversion_changelist"), {**action, "index": "0"})
    done = author_client.post(
        url("promptversion_changelist"),
        {**action, "post": "yes", "message": "Bulk commit."},
        follow=True,
    )

    assert confirm.status_code == 200
    assert len(confirm.context["drafts"]) == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.message) == ("committed", "Has a message.")
    assert (second.status, second.message) == ("committed", "Bulk commit.")
    assert any(m.startswith("Committed") for m in messages_of(done))


def test_new_draft_from_a_version_copies_it_and_opens_it(
    author_client: Client, committed: PromptVersion
) -> None:
    response = author_client.post(url("promptversion_branch", committed.pk))

    draft = PromptVersion.objects.get(prompt=committed.prompt, status="draft")
    assert response.status_code == 302
    assert response["Location"] == url("promptversion_change", draft.pk)
    assert (draft.number, draft.parent) == (2, committed)
    assert draft.content_hash == committed.content_hash


def test_new_draft_is_post_only_and_points_at_an_open_draft(
    author_client: Client, committed: PromptVersion
) -> None:
    open_draft = make_version(committed.prompt, commit=False, templates={"en": EN})

    as_get = author_client.get(url("promptversion_branch", committed.pk))
    response = author_client.post(url("promptversion_branch", committed.pk), follow=True)

    assert as_get.status_code == 405
    assert PromptVersion.objects.filter(prompt=committed.prompt).count() == 2
    assert url("promptversion_by_number", committed.prompt_id, open_draft.number) in " ".join(
        messages_of(response)
    )


def test_an_author_discards_a_draft_but_not_a_committed_version(
    author_client: Client, committed: PromptVersion
) -> None:
    draft = make_version(committed.prompt, commit=False, templates={"en": EN})

    page = author_client.get(url("promptversion_discard", draft.pk))
    discarded = author_client.post(url("promptversion_discard", draft.pk))
    refused = author_client.post(url("promptversion_discard", committed.pk), follow=True)

    assert page.status_code == 200
    assert discarded.status_code == 302
    assert not PromptVersion.objects.filter(pk=draft.pk).exists()
    assert PromptVersion.objects.filter(pk=committed.pk).exists()
    assert any("never changes" in m for m in messages_of(refused))


def test_the_delete_page_of_a_draft_discards_it_through_the_service(
    author_client: Client, committed: PromptVersion
) -> None:
    draft = make_version(committed.prompt, commit=False, templates={"en": EN})

    committed_page = author_client.get(url("promptversion_delete", committed.pk))
    response = author_client.post(url("promptversion_delete", draft.pk), {"post": "yes"})

    assert committed_page.status_code == 403
    assert response.status_code == 302
    assert list(PromptVersion.objects.values_list("number", flat=True)) == [1]


# --- preview ----------------------------------------------------------------------------------------


def test_preview_renders_the_chat_messages(author_client: Client, committed: PromptVersion) -> None:
    response = author_client.get(
        url("promptversion_preview", committed.pk),
        {"render": "1", "locale": "en", "var_customer_name": "Ann <b>"},
    )

    result = response.context["result"]
    assert result.messages == [
        {"role": "system", "content": "You are a courteous support agent."},
        {"role": "user", "content": "Greet Ann <b> and answer the question."},
    ]
    assert "Greet Ann &lt;b&gt; and answer the question." in response.content.decode()


def test_preview_shows_missing_and_wrong_typed_variables_next_to_their_inputs(
    author_client: Client, prompt: Prompt
) -> None:
    version = make_version(
        prompt,
        variables=[
            {"name": "customer_name", "type": "string", "required": True},
            {"name": "order_count", "type": "integer", "required": True},
            {"name": "items", "type": "list", "required": False},
        ],
        templates={"en": {"instruction": "{{ customer_name }} {{ order_count }} {{ items }}"}},
    )

    response = author_client.get(
        url("promptversion_preview", version.pk),
        {
            "render": "1",
            "var_customer_name": "",
            "var_order_count": "2.5",
            "var_items": '{"not": "a list"}',
        },
    )

    errors = response.context["form"].errors
    assert response.context["result"] is None
    assert "'customer_name' is required" in errors["var_customer_name"][0]
    assert "must be an integer, not a number" in errors["var_order_count"][0]
    assert "must be a list, not an object" in errors["var_items"][0]


def test_preview_falls_back_from_fr_ca_to_fr(
    author_client: Client, committed: PromptVersion
) -> None:
    response = author_client.get(
        url("promptversion_preview", committed.pk),
        {"render": "1", "locale": "fr-CA", "var_customer_name": "Zoé"},
    )

    result = response.context["result"]
    assert (result.requested_locale, result.locale) == ("fr-CA", "fr")
    assert result.messages[1]["content"] == "Salue Zoé et réponds à la question."
    assert "there is no template for fr-CA, so it fell back to fr" in response.content.decode()


def test_preview_shows_an_unknown_locale_and_a_failed_render_in_place(
    author_client: Client, prompt: Prompt
) -> None:
    version = make_version(
        prompt,
        variables=[
            {"name": "order", "type": "object", "required": True},
        ],
        templates={"en": {"instruction": "Order {{ order.number }}."}},
    )

    bad_locale = author_client.get(
        url("promptversion_preview", version.pk),
        {"render": "1", "locale": "not a tag", "var_order": "{}"},
    )
    failed = author_client.get(
        url("promptversion_preview", version.pk), {"render": "1", "locale": "en", "var_order": "{}"}
    )

    assert "locale" in bad_locale.context["form"].errors
    (problem,) = failed.context["section_problems"]
    assert (problem.locale, problem.section) == ("en", "instruction")
    assert problem.source == "Order {{ order.number }}."


# --- diff -------------------------------------------------------------------------------------------


def test_diff_shows_the_changed_lines_side_by_side(
    author_client: Client, committed: PromptVersion
) -> None:
    second = make_version(
        committed.prompt,
        message="Shorter.",
        variables=[
            CUSTOMER,
            {"name": "tone", "type": "string", "required": False, "default": "warm"},
        ],
        templates={
            "en": {**EN, "instruction": "Greet {{ customer_name }} in a {{ tone }} tone."},
            "fr": {**FR, "format": "Sur un ton {{ tone }}."},
        },
    )

    response = author_client.get(url("promptversion_diff", second.pk))

    assert (response.context["result"].before_number, response.context["result"].after_number) == (
        1,
        2,
    )
    instruction = next(
        v for v in response.context["locales"]["en"] if v.diff.section == "instruction"
    )
    assert [(line.tag, line.left, line.right) for line in instruction.lines] == [
        ("replace", EN["instruction"], "Greet {{ customer_name }} in a {{ tone }} tone.")
    ]
    page = response.content.decode()
    assert 'class="tag-replace"' in page
    assert "Greet {{ customer_name }} <ins>in a {{ tone }} tone</ins>." in page
    assert [d.name for d, _, _ in response.context["variables"]] == ["tone"]


@override_settings(VERSION_DIFF_MAX_LINES=100)
def test_diff_says_when_a_section_is_too_large_to_compare_line_by_line(
    author_client: Client, committed: PromptVersion
) -> None:
    """Issue 12, finding 7b: the coarse diff is flagged on the page, not passed off as exact."""
    make_version(committed.prompt, templates={"en": {**EN, "format": "a\nb\n" * 200}})
    third = make_version(committed.prompt, templates={"en": {**EN, "format": "b\na\n" * 200}})

    response = author_client.get(url("promptversion_diff", third.pk), {"before": 2, "after": 3})

    page = response.content.decode()
    assert page.count('class="help diff-coarse"') == 1
    assert "Too many lines differ to compare them one by one" in page


def test_diff_compares_any_two_versions_of_the_prompt(
    author_client: Client, committed: PromptVersion
) -> None:
    second = make_version(
        committed.prompt,
        templates={"en": EN, "fr": FR},
        model={"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.7}},
    )

    response = author_client.get(
        url("promptversion_diff", committed.pk), {"before": "2", "after": "1"}
    )
    no_such_version = author_client.get(
        url("promptversion_diff", second.pk), {"before": "1", "after": "9"}
    )

    assert [(d.name, d.before, d.after) for d, _, _ in response.context["model"]] == [
        ("parameters.temperature", 0.7, 0.2)
    ]
    assert "after" in no_such_version.context["form"].errors


def test_diff_marks_the_changed_words_and_escapes_the_text(
    author_client: Client, committed: PromptVersion
) -> None:
    """Issue 13, item 7: the words that changed inside a line are marked; template text is
    text, so markup in it reaches the page escaped, marks included."""
    second = make_version(
        committed.prompt,
        templates={
            "en": {**EN, "system": "You are a <b>courteous</b> support agent."},
            "fr": FR,
        },
    )

    response = author_client.get(url("promptversion_diff", second.pk))

    page = response.content.decode()
    assert "You are a <ins>&lt;b&gt;</ins>courteous<ins>&lt;/b&gt;</ins> support agent." in page
    assert "<b>courteous" not in page


def test_diff_has_a_unified_layout_chosen_by_a_link_and_remembered(
    author_client: Client, committed: PromptVersion
) -> None:
    second = make_version(
        committed.prompt,
        templates={"en": {**EN, "instruction": "Greet {{ customer_name }} warmly."}, "fr": FR},
    )
    diff_url = url("promptversion_diff", second.pk)

    split = author_client.get(diff_url, {"before": 1, "after": 2})
    unified = author_client.get(diff_url, {"before": 1, "after": 2, "layout": "unified"})
    remembered = author_client.get(diff_url)
    unknown = author_client.get(diff_url, {"layout": "sideways"})

    assert split.context["layout"] == "split"
    assert 'class="diff-table split"' in split.content.decode()
    assert '<a class="diff-layout" href="?before=1&amp;after=2&amp;layout=unified">' in (
        split.content.decode()
    )
    page = unified.content.decode()
    assert 'class="diff-table unified"' in page
    instruction = next(
        v for v in unified.context["locales"]["en"] if v.diff.section == "instruction"
    )
    assert [(line.sign, line.old_no, line.new_no) for line in instruction.unified] == [
        ("-", 1, None),
        ("+", None, 1),
    ]
    assert "Greet {{ customer_name }} <ins>warmly</ins>." in page
    assert '<input type="hidden" name="layout" value="unified">' in page
    assert remembered.context["layout"] == "unified"  # the last choice, from the session
    assert unknown.status_code == 200
    assert unknown.context["layout"] == "unified"  # an unknown layout is ignored


def test_diff_says_when_a_line_is_too_long_to_compare_word_by_word(
    author_client: Client, committed: PromptVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("registry.linediff.WORD_DIFF_MAX_TOKENS", 4)
    second = make_version(
        committed.prompt,
        templates={"en": {**EN, "system": "You are a brisk and busy agent."}, "fr": FR},
    )

    response = author_client.get(url("promptversion_diff", second.pk))

    page = response.content.decode()
    assert page.count('class="help diff-words-coarse"') == 1
    assert "You are a <ins>brisk and busy</ins> agent." in page


# --- who may do what --------------------------------------------------------------------------------


def test_a_superuser_sees_every_page(client: Client, admin_user, committed: PromptVersion) -> None:
    client.force_login(admin_user)

    for name in ("change", "preview", "diff"):
        assert client.get(url(f"promptversion_{name}", committed.pk)).status_code == 200
    assert client.get(url("promptversion_add")).status_code == 200
    assert client.get(url("prompt_changelist")).status_code == 200


@pytest.mark.parametrize(
    ("method", "name", "on"),
    [
        ("get", "prompt_changelist", None),
        ("get", "prompt_add", None),
        ("get", "prompt_change", "prompt"),
        ("get", "promptversion_changelist", None),
        ("get", "promptversion_add", None),
        ("get", "promptversion_change", "version"),
        ("get", "promptversion_preview", "version"),
        ("get", "promptversion_diff", "version"),
        ("get", "promptversion_commit", "draft"),
        ("post", "promptversion_commit", "draft"),
        ("post", "promptversion_branch", "version"),
        ("get", "promptversion_discard", "draft"),
        ("post", "promptversion_discard", "draft"),
    ],
)
def test_staff_outside_the_group_gets_403(
    client: Client, outsider, committed: PromptVersion, method: str, name: str, on: str | None
) -> None:
    draft = make_version(PromptFactory(), commit=False, templates={"en": EN})
    target = {"prompt": committed.prompt_id, "version": committed.pk, "draft": draft.pk}
    client.force_login(outsider)

    response = getattr(client, method)(url(name, *([target[on]] if on else [])))

    assert response.status_code == 403
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_staff_outside_the_group_sees_no_registry_and_authors_see_nothing_else(
    client: Client, outsider, author
) -> None:
    client.force_login(outsider)
    outsider_index = client.get(reverse("admin:index"))
    client.force_login(author)
    author_index = client.get(reverse("admin:index"))
    users = client.get(reverse("admin:auth_user_changelist"))

    assert [app["app_label"] for app in outsider_index.context["app_list"]] == []
    # Prompts, and their golden datasets (in order of use): nothing about releases, runs or users.
    assert [app["app_label"] for app in author_index.context["app_list"]] == [
        "registry",
        "evaluations",
    ]
    assert users.status_code == 403


def test_an_author_without_the_commit_permission_cannot_commit(
    client: Client, prompt: Prompt
) -> None:
    from django.contrib.auth.models import Permission

    writer = UserFactory(username="dave", is_staff=True)
    writer.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["view_promptversion", "change_promptversion"],
        )
    )
    draft = make_version(prompt, commit=False, message="Ready.", templates={"en": EN})
    client.force_login(writer)

    page = client.get(url("promptversion_change", draft.pk))
    response = client.post(
        url("promptversion_commit", draft.pk),
        {"message": "Ready.", "content_hash": draft.edit_tag},
    )

    assert url("promptversion_commit", draft.pk) not in page.content.decode()
    assert response.status_code == 403
    draft.refresh_from_db()
    assert draft.status == "draft"
