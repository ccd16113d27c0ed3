"""A version's guardrail policy in the admin (issue 19, decision 0052): edited as JSON in the
workbench's model binding section, each problem at that field with nothing saved; read on a
committed version's page as a table of its checks; compared on the diff page."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client

from registry.models import PromptVersion
from tests.factories import make_version
from tests.registry.test_admin import EN, FR, existing_rows, url, version_form
from tests.registry.test_admin import author_client as author_client  # the admin's, logged in

pytestmark = pytest.mark.django_db

MODEL = {"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.2}}
POLICY = {
    "input": {
        "injection": {"action": "refuse", "variables": ["customer_name"]},
        "max_tokens": {"limit": 4000, "action": "flag"},
    },
    "output": {"pii": {"action": "fallback", "rules": ["email", "phone"]}},
    "fallback": "<b>Sorry</b>, I can't share that.",
}


def text(response) -> str:
    """The page's visible text, spaces collapsed and entities read back."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


@pytest.fixture
def draft(prompt) -> PromptVersion:
    make_version(prompt, templates={"en": EN, "fr": FR})
    return make_version(prompt, commit=False, message="Guarded.", templates={"en": EN, "fr": FR})


def save(author_client: Client, draft: PromptVersion, guardrails: str):
    variables, templates = existing_rows(draft)
    return author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft,
            variables=variables,
            templates=templates,
            guardrails=guardrails,
            _workbench="1",
        ),
    )


def test_the_workbench_saves_a_policy_and_it_changes_the_content_hash(author_client, draft):
    before = draft.content_hash

    response = save(author_client, draft, json.dumps(POLICY))

    assert response.status_code == 302, response.context and response.context["error_links"]
    draft.refresh_from_db()
    assert (draft.guardrails, draft.content_hash != before) == (POLICY, True)


def test_a_policy_with_a_problem_is_shown_at_its_field_and_nothing_saved(author_client, draft):
    before = draft.content_hash
    policy = {"input": {"injection": {"action": "redact"}}}

    response = save(author_client, draft, json.dumps(policy))

    assert response.status_code == 200
    (link,) = response.context["error_links"]
    assert link.anchor == "id_guardrails"
    assert "action" in link.text
    draft.refresh_from_db()
    assert (draft.guardrails, draft.content_hash) == (None, before)


def test_a_committed_version_shows_its_policy_as_a_table_of_checks(author_client, prompt):
    version = make_version(
        prompt, templates={"en": EN, "fr": FR}, model={**MODEL, "guardrails": POLICY}
    )

    response = author_client.get(url("promptversion_change", version.pk))

    page, body = text(response), response.content.decode()
    assert response.status_code == 200
    assert "Guardrails: Stage Check Action Settings" in page
    # In the checks' order (registry.guardrails), whatever order the database keeps the keys in.
    assert "input max_tokens flag limit: 4000 input injection refuse variables: customer_name" in (
        page
    )
    assert "output pii fallback rules: email, phone" in page
    assert "Fallback text: <b>Sorry</b>, I can't share that." in page  # as text, escaped
    assert "<b>Sorry</b>" not in body


def test_a_committed_version_without_a_policy_says_so(author_client, prompt):
    version = make_version(prompt, templates={"en": EN, "fr": FR}, model=MODEL)

    page = text(author_client.get(url("promptversion_change", version.pk)))

    assert "Guardrails: —" in page


def test_the_diff_page_shows_the_policy_that_changed(author_client, prompt):
    make_version(prompt, templates={"en": EN, "fr": FR}, model=MODEL)
    after = make_version(
        prompt, templates={"en": EN, "fr": FR}, model={**MODEL, "guardrails": POLICY}
    )

    response = author_client.get(url("promptversion_diff", after.pk))

    page = text(response)
    assert "guardrails added" in page
    assert '"injection": { "action": "refuse",' in page  # indented JSON, spaces collapsed
