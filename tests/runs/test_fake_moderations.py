"""The fake model server's ``POST /v1/moderations`` and its ``guard-`` chat models
(runs.fake_answers.FLAGGED_WORDS), through the official client: OpenAI's shape, the same answer
for the same request, flagged for the listed words only, faults as for embeddings. No database;
the fake runs on an ephemeral loopback port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import DefaultHttpxClient, OpenAI

from runs.fake_answers import MODERATION_CATEGORIES, guard_verdict
from runs.fake_provider import FakeProvider

RAW = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CLEAN = "Your order ships on Monday."
VIOLENT = "I will KILL the process, then murder the daemon."


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_seconds=5) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=fake.base_url,
        api_key="x",
        max_retries=0,
        timeout=5.0,
        http_client=DefaultHttpxClient(trust_env=False),
    ) as client:
        yield client


def post(fake: FakeProvider, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{fake.base_url}/moderations", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    try:
        with RAW.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_a_text_with_listed_words_is_flagged_under_their_category(client: OpenAI) -> None:
    answer = client.moderations.create(model="omni-moderation-latest", input=VIOLENT)

    assert answer.model == "omni-moderation-latest"
    assert answer.id.startswith("modr-")
    [result] = answer.results
    assert result.flagged is True
    categories = result.categories.model_dump(by_alias=True)
    assert set(categories) == set(MODERATION_CATEGORIES)
    assert [name for name, on in categories.items() if on] == ["violence"]
    assert result.category_scores.violence == 0.875  # two words: kill, murder
    assert result.category_scores.hate == 0.0
    assert result.category_applied_input_types.violence == ["text"]


def test_a_text_without_them_is_not_flagged(client: OpenAI) -> None:
    [result] = client.moderations.create(model="omni-moderation-latest", input=CLEAN).results

    assert result.flagged is False
    assert not any(result.categories.model_dump().values())


def test_a_list_of_strings_gets_one_result_each_and_the_same_request_the_same_bytes(
    fake: FakeProvider,
) -> None:
    body = {"model": "omni-moderation-latest", "input": [CLEAN, "counterfeit bills", "a bomb"]}
    status, first = post(fake, body)
    _, again = post(fake, body)

    assert status == 200
    assert first == again
    assert [r["flagged"] for r in first["results"]] == [False, True, True]
    assert first["results"][1]["categories"]["illicit"] is True
    assert first["results"][2]["categories"]["illicit/violent"] is True


def test_text_and_image_parts_are_one_input(fake: FakeProvider) -> None:
    parts = [
        {"type": "text", "text": "vermin"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    status, answer = post(fake, {"input": parts})

    assert status == 200
    assert answer["model"] == "omni-moderation-latest"  # OpenAI's default
    [result] = answer["results"]
    assert result["categories"]["hate"] is True
    assert result["category_applied_input_types"]["hate"] == ["text", "image"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "omni-moderation-latest"}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", 3]}, "input"),
        ({"input": [{"type": "audio"}]}, "input"),
        ({"input": "a", "model": ""}, "model"),
    ],
)
def test_a_malformed_request_is_a_400_naming_the_parameter(
    fake: FakeProvider, body: dict[str, Any], param: str
) -> None:
    status, answer = post(fake, body)

    assert status == 400
    assert answer["error"]["param"] == param


def test_a_queued_server_error_fails_the_next_moderation_only(
    fake: FakeProvider, client: OpenAI
) -> None:
    fake.faults.push("omni-moderation-latest", "500")

    with pytest.raises(openai.InternalServerError):
        client.moderations.create(model="omni-moderation-latest", input=CLEAN)
    answer = client.moderations.create(model="omni-moderation-latest", input=CLEAN)
    assert answer.results[0].flagged is False
    assert [r.path for r in fake.requests] == ["/v1/moderations", "/v1/moderations"]


def test_a_hanging_moderation_model_times_the_client_out(client: OpenAI) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.moderations.create(model="fault-hang", input=CLEAN, timeout=0.2)


def test_a_guard_model_answers_as_llama_guard_does(client: OpenAI) -> None:
    def verdict(text: str) -> str:
        answer = client.chat.completions.create(
            model="guard-1", messages=[{"role": "user", "content": text}]
        )
        return answer.choices[0].message.content or ""

    assert verdict(CLEAN) == "safe"
    assert verdict(VIOLENT) == "unsafe\nS1"
    assert verdict("suicide by bomb") == "unsafe\nS9,S11"  # the taxonomy's order
    assert guard_verdict("Killing is a word it does not list.") == "safe"  # whole words only
