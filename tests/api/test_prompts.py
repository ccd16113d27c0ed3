"""GET/POST /api/v1/prompts and GET/PATCH /api/v1/prompts/{key}."""

from __future__ import annotations

import pytest

from api.pagination import Pagination
from registry.models import Prompt
from tests.api.conftest import PROMPT
from tests.api.helpers import assert_problem, errors_by_code
from tests.factories import PromptFactory, make_version

pytestmark = pytest.mark.django_db

PROMPTS = "/api/v1/prompts"


def keys(response) -> list[str]:
    return [p["key"] for p in response.json()["results"]]


# --- GET /prompts ------------------------------------------------------------------------------


def test_it_lists_prompts_by_key_with_their_latest_and_draft_numbers(reader_client):
    refund = PromptFactory(key="support.refund-reply", tags=["support", "billing"])
    make_version(refund)
    make_version(refund)
    make_version(refund, commit=False)
    PromptFactory(key="marketing.headline", description="", tags=[])

    response = reader_client.get(PROMPTS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert keys(response) == ["marketing.headline", "support.refund-reply"]
    headline, refund_row = body["results"]
    assert headline["latest_version"] is None
    assert headline["draft_version"] is None
    assert refund_row["latest_version"] == 2
    assert refund_row["draft_version"] == 3
    assert refund_row["tags"] == ["support", "billing"]
    assert set(refund_row) == {
        "key",
        "description",
        "default_locale",
        "tags",
        "snippet",
        "latest_version",
        "draft_version",
        "created_at",
        "updated_at",
    }


def test_it_searches_keys_and_descriptions_ignoring_case(reader_client):
    PromptFactory(key="support.refund-reply", description="Answers a refund request.")
    PromptFactory(key="support.triage", description="Sorts tickets by urgency.")
    PromptFactory(key="marketing.headline", description="Writes a REFUND banner.")

    assert keys(reader_client.get(PROMPTS, {"search": "triage"})) == ["support.triage"]
    assert keys(reader_client.get(PROMPTS, {"search": "Refund"})) == [
        "marketing.headline",
        "support.refund-reply",
    ]
    assert keys(reader_client.get(PROMPTS, {"search": "nothing like this"})) == []


def test_it_filters_by_a_whole_tag(reader_client):
    PromptFactory(key="support.refund-reply", tags=["support", "customer-facing"])
    PromptFactory(key="support.triage", tags=["support"])
    PromptFactory(key="marketing.headline", tags=["marketing", "supported-by-legal"])

    assert keys(reader_client.get(PROMPTS, {"tag": "support"})) == [
        "support.refund-reply",
        "support.triage",
    ]
    assert keys(reader_client.get(PROMPTS, {"tag": "customer-facing"})) == ["support.refund-reply"]
    # A tag is matched whole: "support" is not a tag of marketing.headline, nor is "sup" any tag.
    assert keys(reader_client.get(PROMPTS, {"tag": "sup"})) == []


def test_it_combines_search_and_tag(reader_client):
    PromptFactory(key="support.refund-reply", tags=["support"])
    PromptFactory(key="support.triage", tags=["support", "classification"])

    response = reader_client.get(PROMPTS, {"search": "support", "tag": "classification"})

    assert keys(response) == ["support.triage"]


def test_it_paginates_with_page_size(reader_client):
    for n in range(5):
        PromptFactory(key=f"prompt-{n}")

    first = reader_client.get(PROMPTS, {"page_size": 2})
    last = reader_client.get(PROMPTS, {"page_size": 2, "page": 3})

    assert first.json()["count"] == 5
    assert keys(first) == ["prompt-0", "prompt-1"]
    assert "page=2" in first.json()["next"]
    assert first.json()["previous"] is None
    assert keys(last) == ["prompt-4"]
    assert last.json()["next"] is None


def test_it_refuses_a_page_size_above_the_maximum(reader_client, monkeypatch):
    # It used to be cut to the maximum silently; the schema publishes the bound (maximum).
    for n in range(3):
        PromptFactory(key=f"prompt-{n}")
    monkeypatch.setattr(Pagination, "max_page_size", 2)

    assert len(reader_client.get(PROMPTS, {"page_size": 2}).json()["results"]) == 2
    response = reader_client.get(PROMPTS, {"page_size": 3})

    body = assert_problem(response, 400, "/problems/validation-error")
    assert [(e["code"], e["pointer"]) for e in body["errors"]] == [("max_value", "/page_size")]


@pytest.mark.parametrize("page_size", ["abc", "0", "-1", "1.5", "٥", "", "true", "null", "2 "])
def test_it_refuses_a_page_size_that_is_no_whole_number(reader_client, page_size):
    # Found by the API fuzzing: an unreadable page_size used to be ignored silently.
    PromptFactory()

    response = reader_client.get(PROMPTS, {"page_size": page_size})

    body = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in body["errors"]] == ["/page_size"]


@pytest.mark.parametrize("page", ["", "abc", "0", "-1", "1.5", "true", "null", "last"])
def test_it_refuses_a_page_that_is_no_whole_number(reader_client, page):
    # An empty page used to serve the first page, and "abc" answered 404 as if it were a page
    # past the end: both are a bad parameter.
    PromptFactory()

    response = reader_client.get(PROMPTS, {"page": page})

    body = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in body["errors"]] == ["/page"]


def test_it_answers_a_problem_for_a_page_past_the_end(reader_client):
    PromptFactory()

    response = reader_client.get(PROMPTS, {"page": 9})

    assert_problem(response, 404, "/problems/not-found")


# --- POST /prompts -----------------------------------------------------------------------------


def test_it_creates_a_prompt(author_client):
    response = author_client.post(
        PROMPTS,
        {
            "key": "support.refund-reply",
            "description": "Answers a customer whose refund was approved.",
            "default_locale": "fr_ca",
            "tags": ["support", "customer-facing", "support"],
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["key"] == "support.refund-reply"
    assert body["default_locale"] == "fr-CA"
    assert body["tags"] == ["customer-facing", "support"]
    assert body["latest_version"] is None
    assert body["draft_version"] is None
    prompt = Prompt.objects.get(key="support.refund-reply")
    assert prompt.description == "Answers a customer whose refund was approved."
    assert prompt.default_locale == "fr-CA"


def test_it_creates_a_prompt_from_its_key_alone(author_client):
    response = author_client.post(PROMPTS, {"key": "support.triage"}, format="json")

    assert response.status_code == 201
    assert response.json()["default_locale"] == "en"
    assert response.json()["tags"] == []


def test_it_refuses_a_key_that_exists(author_client, prompt):
    response = author_client.post(PROMPTS, {"key": prompt.key}, format="json")

    assert_problem(response, 409, "/problems/prompt-exists")
    assert Prompt.objects.count() == 1


def test_it_lists_every_problem_of_a_new_prompt(author_client):
    response = author_client.post(
        PROMPTS,
        {
            "key": "Support..Refund",
            "default_locale": "not a tag!!",
            "tags": ["ok", "Not OK"],
        },
        format="json",
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    found = errors_by_code(body)
    assert found["invalid_key"][0]["pointer"] == "/key"
    assert found["invalid_locale"][0]["pointer"] == "/default_locale"
    assert found["invalid_tag"][0]["pointer"] == "/tags/1"
    assert not Prompt.objects.exists()


def test_it_refuses_a_body_of_the_wrong_shape(author_client):
    response = author_client.post(PROMPTS, {"description": 5, "tags": "support"}, format="json")

    body = assert_problem(response, 400, "/problems/validation-error")
    pointers = {e["pointer"] for e in body["errors"]}
    assert {"/key", "/tags"} <= pointers
    assert not Prompt.objects.exists()


# --- GET /prompts/{key} ------------------------------------------------------------------------


def test_it_reads_a_prompt(reader_client, draft):
    response = reader_client.get(PROMPT)

    assert response.status_code == 200
    body = response.json()
    assert body["key"] == "support.refund-reply"
    assert body["latest_version"] == 1
    assert body["draft_version"] == 2


def test_it_answers_404_for_an_unknown_prompt(reader_client):
    response = reader_client.get(f"{PROMPTS}/support.nothing")

    body = assert_problem(response, 404, "/problems/prompt-not-found")
    assert "support.nothing" in body["detail"]


# --- PATCH /prompts/{key} ----------------------------------------------------------------------


def test_it_changes_the_description_and_tags(author_client, prompt):
    response = author_client.patch(
        PROMPT, {"description": "New words.", "tags": ["b", "a"]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["description"] == "New words."
    assert response.json()["tags"] == ["a", "b"]
    prompt.refresh_from_db()
    assert (prompt.description, prompt.tags) == ("New words.", ["a", "b"])


def test_it_changes_only_what_is_sent(author_client, prompt):
    before = prompt.description

    response = author_client.patch(PROMPT, {"tags": []}, format="json")

    assert response.status_code == 200
    prompt.refresh_from_db()
    assert prompt.description == before
    assert prompt.tags == []


def test_it_never_renames_a_prompt(author_client, prompt):
    response = author_client.patch(
        PROMPT, {"key": "support.renamed", "default_locale": "de"}, format="json"
    )

    assert response.status_code == 200
    prompt.refresh_from_db()
    assert (prompt.key, prompt.default_locale) == ("support.refund-reply", "en")


def test_it_refuses_invalid_tags_and_changes_nothing(author_client, prompt):
    response = author_client.patch(
        PROMPT, {"description": "Changed?", "tags": ["fine", "NOT FINE"]}, format="json"
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert errors_by_code(body)["invalid_tag"][0]["pointer"] == "/tags/1"
    prompt.refresh_from_db()
    assert prompt.description == "Replies to a customer."
    assert prompt.tags == ["support"]


def test_it_answers_404_when_patching_an_unknown_prompt(author_client):
    response = author_client.patch(f"{PROMPTS}/support.nothing", {"tags": []}, format="json")

    assert_problem(response, 404, "/problems/prompt-not-found")
