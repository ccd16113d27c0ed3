"""The fake model server's ``POST /v1/embeddings`` (runs.fake_answers.embed_text), through the
official client: deterministic, OpenAI's shape, near for texts sharing most words, far otherwise.
No database; the fake runs on an ephemeral loopback port."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import DefaultHttpxClient, OpenAI

from runs.fake_answers import EMBEDDING_DIMENSIONS, embed_text
from runs.fake_provider import FakeProvider

RAW = urllib.request.build_opener(urllib.request.ProxyHandler({}))
QUESTION = "How do I reset my password?"
NEAR = "how do I reset my password"
PARAPHRASE = "How can I reset my password please?"
UNRELATED = "What is the capital of France"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
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
        f"{fake.base_url}/embeddings", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    try:
        with RAW.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_a_string_is_embedded_in_openais_shape(client: OpenAI) -> None:
    answer = client.embeddings.create(model="embed-1", input=QUESTION, encoding_format="float")

    assert answer.object == "list"
    assert answer.model == "embed-1"
    assert [item.index for item in answer.data] == [0]
    vector = answer.data[0].embedding
    assert len(vector) == EMBEDDING_DIMENSIONS
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-9)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == math.ceil(len(QUESTION) / 4)


def test_the_clients_default_base64_decodes_to_the_same_vector(client: OpenAI) -> None:
    # The openai client asks for base64 when not told: float32, so equal to about 1e-7.
    answer = client.embeddings.create(model="embed-1", input=QUESTION)

    decoded = answer.data[0].embedding
    assert len(decoded) == EMBEDDING_DIMENSIONS
    assert all(
        math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, embed_text(QUESTION), strict=True)
    )


def test_a_list_is_embedded_in_order_and_the_same_text_always_gets_the_same_vector(
    client: OpenAI,
) -> None:
    texts = [QUESTION, UNRELATED, QUESTION]
    answer = client.embeddings.create(model="embed-1", input=texts, encoding_format="float")

    vectors = [item.embedding for item in answer.data]
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert vectors[0] == vectors[2] == embed_text(QUESTION)
    assert vectors[1] == embed_text(UNRELATED)


def test_texts_sharing_most_words_are_near_and_unrelated_ones_far() -> None:
    question = embed_text(QUESTION)

    assert cosine(question, embed_text(NEAR)) == pytest.approx(1.0)  # case and punctuation
    assert 0.7 < cosine(question, embed_text(PARAPHRASE)) < 0.95
    assert cosine(question, embed_text(UNRELATED)) < 0.3
    assert embed_text("?!") == [0.0] * EMBEDDING_DIMENSIONS  # no words: similar to nothing


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "embed-1"}, "input"),
        ({"model": "embed-1", "input": []}, "input"),
        ({"model": "embed-1", "input": ["a", 3]}, "input"),
        ({"model": "embed-1", "input": "a", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_a_malformed_request_is_a_400_naming_the_parameter(
    fake: FakeProvider, body: dict[str, Any], param: str
) -> None:
    status, answer = post(fake, body)

    assert status == 400
    assert answer["error"]["param"] == param


def test_a_queued_server_error_fails_the_next_embedding_only(
    fake: FakeProvider, client: OpenAI
) -> None:
    fake.faults.push("embed-1", "500")

    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="embed-1", input=QUESTION, encoding_format="float")
    answer = client.embeddings.create(model="embed-1", input=QUESTION, encoding_format="float")
    assert answer.data[0].embedding == embed_text(QUESTION)
    assert [r.path for r in fake.requests] == ["/v1/embeddings", "/v1/embeddings"]
