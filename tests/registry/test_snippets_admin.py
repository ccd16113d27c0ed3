"""Snippets in the admin: a snippet's page lists every version that includes it, marking a
prompt a snippet (or unmarking one still included) is refused in place, and the workbench
previews includes and shows an include's problem at its template."""

from __future__ import annotations

import pytest
from django.test import Client

from registry.models import Prompt
from registry.services import prompt_create
from tests.factories import AUTHOR, make_version
from tests.registry.test_admin import url
from tests.registry.test_workbench import preview, preview_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def author_client(client: Client, author) -> Client:
    client.force_login(author)
    return client


@pytest.fixture
def voice() -> Prompt:
    voice = prompt_create(key="brand.voice", actor=AUTHOR, is_snippet=True)
    make_version(voice, variables=[], templates={"en": {"system": "Be warm."}})
    return voice


def include(key: str, system: str) -> None:
    make_version(
        prompt_create(key=key, actor=AUTHOR),
        templates={"en": {"system": system, "instruction": "Greet {{ customer_name }}."}},
    )


def test_a_snippets_page_lists_every_version_that_includes_it(author_client, voice):
    include("support.reply", "{{ snippet('brand.voice') }}")
    include("sales.recap", "{{ snippet('brand.voice', version=1) }}")

    page = author_client.get(url("prompt_change", voice.pk))

    panel = next(p for p in page.context["panels"] if p.title == "Included by")
    assert [[str(cell) for cell in row[2:]] for row in panel.rows] == [
        ["committed", "pins v1"],
        ["committed", "follows the stable release"],
    ]
    assert "sales.recap" in str(panel.rows[0][0])
    assert "support.reply" in str(panel.rows[1][0])
    other = author_client.get(url("prompt_change", Prompt.objects.get(key="sales.recap").pk))
    assert all(p.title != "Included by" for p in other.context["panels"])


def test_unmarking_an_included_snippet_is_refused_in_place(author_client, voice):
    include("support.reply", "{{ snippet('brand.voice') }}")
    response = author_client.post(
        url("prompt_change", voice.pk),
        {"description": "", "tags": ""},  # the box unticked
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "is included by versions of 1 prompt(s)" in errors["is_snippet"][0]
    voice.refresh_from_db()
    assert voice.is_snippet


def test_the_workbench_previews_includes_and_places_their_problems(author_client, voice):
    prompt = prompt_create(key="support.reply", actor=AUTHOR)
    system = "{{ snippet('brand.voice') }} Kind."
    body = preview_body(prompt, templates={"en": {"system": system, "instruction": "Hi."}})
    body["content"]["variables"] = []
    body["values"] = {}
    data = preview(author_client, body).json()
    assert data["problems"] == []
    assert data["render"]["messages"][0] == {"role": "system", "content": "Be warm. Kind."}

    body["content"]["templates"]["en"]["system"] = "{{ snippet('brand.tone') }}"
    data = preview(author_client, body).json()
    (problem,) = data["problems"]
    assert (problem["code"], problem["locale"], problem["section"], problem["line"]) == (
        "unknown_snippet",
        "en",
        "system",
        1,
    )
