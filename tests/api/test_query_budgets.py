"""Query budgets of the authoring reads (STYLE R16): none grows with the number of prompts,
versions, locales or variables.

Each test warms the key up first (its first use records ``last_used_at``), counts the queries of
a small case, then requires the same count of a large one, under a ceiling that makes a new
query per request show up in review.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.models import Prompt
from tests.factories import PromptFactory, make_version

pytestmark = pytest.mark.django_db

LOCALES = ["en", "fr", "fr-CA", "de", "es", "it", "pt-BR", "ja"]


def count_queries(request: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = request()
    assert response.status_code == 200, response.content
    return len(queries.captured_queries)


def localized_version(prompt: Prompt, *, locales: int, variables: int, commit: bool = True):
    names = [f"var_{i}" for i in range(variables)]
    used = " ".join(f"{{{{ {n} }}}}" for n in names)
    return make_version(
        prompt,
        commit=commit,
        variables=[{"name": n, "type": "string"} for n in names],
        templates={
            locale: {"system": f"System {locale}.", "instruction": f"{locale}: {used}"}
            for locale in LOCALES[:locales]
        },
    )


@pytest.fixture
def reader(reader_client):
    reader_client.get("/api/v1/prompts")  # records last_used_at, once a minute at most
    return reader_client


def test_listing_prompts_costs_the_same_for_3_or_30(reader, django_assert_num_queries):
    for n in range(3):
        make_version(PromptFactory(key=f"small-{n}"))
    small = count_queries(lambda: reader.get("/api/v1/prompts", {"search": "small"}))

    for n in range(30):
        prompt = PromptFactory(key=f"large-{n}")
        make_version(prompt)
        make_version(prompt, commit=False)

    with django_assert_num_queries(small):
        response = reader.get("/api/v1/prompts", {"search": "large", "page_size": 50})
    assert response.json()["count"] == 30
    assert small <= 3


def test_listing_versions_costs_the_same_for_3_or_30(reader, django_assert_num_queries):
    few, many = PromptFactory(key="few"), PromptFactory(key="many")
    for _ in range(3):
        make_version(few)
    for _ in range(30):
        make_version(many)
    small = count_queries(lambda: reader.get("/api/v1/prompts/few/versions"))

    with django_assert_num_queries(small):
        response = reader.get("/api/v1/prompts/many/versions", {"page_size": 50})
    assert len(response.json()["results"]) == 30
    assert small <= 4


@pytest.mark.parametrize("commit", [True, False], ids=["committed", "draft"])
def test_reading_a_version_costs_the_same_whatever_its_size(
    reader, django_assert_num_queries, commit
):
    small_prompt, large_prompt = PromptFactory(key="small"), PromptFactory(key="large")
    for prompt in (small_prompt, large_prompt):
        make_version(prompt)  # so the version read has a parent
    localized_version(small_prompt, locales=1, variables=1, commit=commit)
    localized_version(large_prompt, locales=len(LOCALES), variables=12, commit=commit)
    small = count_queries(lambda: reader.get("/api/v1/prompts/small/versions/2"))

    with django_assert_num_queries(small):
        response = reader.get("/api/v1/prompts/large/versions/2")
    assert len(response.json()["templates"]) == len(LOCALES)
    assert small <= 6


def test_diffing_costs_the_same_whatever_the_size(reader, django_assert_num_queries):
    small_prompt, large_prompt = PromptFactory(key="small"), PromptFactory(key="large")
    localized_version(small_prompt, locales=1, variables=1)
    localized_version(small_prompt, locales=1, variables=2)
    localized_version(large_prompt, locales=len(LOCALES), variables=6)
    localized_version(large_prompt, locales=len(LOCALES), variables=12)
    small = count_queries(
        lambda: reader.get("/api/v1/prompts/small/versions/2/diff", {"against": 1})
    )

    with django_assert_num_queries(small):
        reader.get("/api/v1/prompts/large/versions/2/diff", {"against": 1})
    assert small <= 8


def test_rendering_costs_the_same_whatever_the_size(reader, django_assert_num_queries):
    small_prompt, large_prompt = PromptFactory(key="small"), PromptFactory(key="large")
    localized_version(small_prompt, locales=1, variables=1)
    localized_version(large_prompt, locales=len(LOCALES), variables=12)
    small = count_queries(
        lambda: reader.post(
            "/api/v1/prompts/small/versions/1/render",
            {"variables": {"var_0": "x"}},
            format="json",
        )
    )

    with django_assert_num_queries(small):
        reader.post(
            "/api/v1/prompts/large/versions/1/render",
            {"locale": "pt-BR", "variables": {f"var_{i}": "x" for i in range(12)}},
            format="json",
        )
    assert small <= 5
