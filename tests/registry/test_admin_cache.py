"""The response cache in the admin (decision 0050): edited in the workbench's model binding
section (a JSON field), each problem at that field with nothing saved."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from registry.models import PromptVersion
from registry.selectors import version_diff
from tests.factories import make_version
from tests.registry.test_admin import EN, FR, existing_rows, url, version_form
from tests.registry.test_admin import author_client as author_client  # the admin's, logged in

pytestmark = pytest.mark.django_db

CACHE = {"exact": {"ttl_seconds": 600}}


@pytest.fixture
def draft(prompt) -> PromptVersion:
    make_version(prompt, templates={"en": EN, "fr": FR})
    return make_version(prompt, commit=False, message="Cache.", templates={"en": EN, "fr": FR})


def save(author_client: Client, draft: PromptVersion, cache: str):
    variables, templates = existing_rows(draft)
    return author_client.post(
        url("promptversion_change", draft.pk),
        version_form(
            version=draft, variables=variables, templates=templates, cache=cache, _workbench="1"
        ),
    )


def test_the_workbench_saves_a_cache_and_it_changes_the_content_hash(
    author_client: Client, draft
) -> None:
    before = draft.content_hash

    response = save(author_client, draft, json.dumps(CACHE))

    assert response.status_code == 302, response.context and response.context["error_links"]
    draft.refresh_from_db()
    assert draft.cache == CACHE
    assert draft.content_hash != before


def test_an_empty_field_saves_no_cache(author_client: Client, draft) -> None:
    before = draft.content_hash

    response = save(author_client, draft, "")

    assert response.status_code == 302
    draft.refresh_from_db()
    assert (draft.cache, draft.content_hash) == (None, before)


def test_a_bad_ttl_is_shown_at_the_cache_field_and_nothing_saved(
    author_client: Client, draft
) -> None:
    before = draft.content_hash

    response = save(author_client, draft, json.dumps({"exact": {"ttl_seconds": 0}}))

    assert response.status_code == 200
    (link,) = response.context["error_links"]
    assert link.anchor == "id_cache"
    assert "ttl_seconds" in link.text
    draft.refresh_from_db()
    assert (draft.cache, draft.content_hash) == (None, before)


def test_a_versions_diff_shows_its_cache(prompt) -> None:
    before = make_version(prompt, templates={"en": EN, "fr": FR})
    model = {"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.2}}
    after = make_version(prompt, templates={"en": EN, "fr": FR}, model={**model, "cache": CACHE})

    diff = version_diff(before=before, after=after)

    [row] = [d for d in diff.model if d.name == "cache"]
    assert (row.before, row.after) == (None, CACHE)
