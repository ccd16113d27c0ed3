"""The semantic response cache on the run path (issue 19 item 2, decision 0050): a question near
enough to one answered before, in the same version, environment, locale and partition, is
answered from the cache without a model call, recorded with its similarity; anything else asks
the model. The embeddings come from the local model server's ``/v1/embeddings`` (a hashed bag of
words: questions sharing most words are near)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from releases.services import release_deploy
from runs import response_cache, semantic_cache
from runs.models import Call, Provider
from tests.api.test_run import CHAT, run
from tests.factories import PromptFactory, make_version
from tests.metrics import counting

KEY = "support.similar"
URL = f"/api/v1/prompts/{KEY}/run"
EMBEDDINGS = "/v1/embeddings"
SEMANTIC = {"ttl_seconds": 3600, "threshold": 0.9, "provider": "local", "model": "embed-1"}
BINDING = {"provider": "local", "model": "echo-1", "cache": {"semantic": SEMANTIC}}
TEMPLATES = {
    "en": {"system": "You are a support agent.", "instruction": "{{ question }}"},
    "fr": {"system": "Vous êtes un agent.", "instruction": "{{ question }}"},
}
VARIABLES = [{"name": "question", "type": "string", "required": True}]
QUESTION = "How do I reset my password?"
NEAR = "How do I reset my account password?"  # cosine 0.926 with QUESTION
PARAPHRASE = "How can I reset my password please?"  # 0.772: below a 0.9 threshold
UNRELATED = "What is the capital of France?"  # 0


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch) -> None:
    # Each test its own keys and streams (a new test database gives version ids out again), and
    # no namespace held by this process from another test.
    monkeypatch.setattr(response_cache, "KEY_PREFIX", f"test-{uuid.uuid4()}:")
    semantic_cache.namespaces.clear()


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


def deploy(manager, environments, prompt, version: int, *names: str) -> None:
    for name in names:
        release_deploy(
            prompt=prompt,
            environment=environments[name],
            version=version,
            actor=manager,
            reason="t",
        )


@pytest.fixture
def similar(environments, manager, model_server):
    """``support.similar`` v1 with a semantic cache, stable in development and staging."""
    prompt = PromptFactory(key=KEY)
    make_version(prompt, model=BINDING, templates=TEMPLATES, variables=VARIABLES)
    deploy(manager, environments, prompt, 1, "development", "staging")
    return prompt


def ask(client, question: str, **body: Any):
    body = {"environment": "staging", "variables": {"question": question}, **body}
    return run(client, body, url=URL)


def model_calls(model_server) -> int:
    return len(model_server.requests.for_path(CHAT))


def test_a_near_duplicate_question_is_answered_from_the_cache_with_its_similarity(
    similar, model_server, runner
) -> None:
    hits = counting(
        "promptregistry_response_cache_lookups_total", prompt=KEY, kind="semantic", result="hit"
    )
    first = ask(runner, QUESTION)
    second = ask(runner, NEAR)
    assert first.status_code == second.status_code == 200, second.content
    assert first.json()["cache"] is None
    cache = second.json()["cache"]
    assert cache["kind"] == "semantic"
    assert cache["similarity"] == pytest.approx(0.9258, abs=1e-3)
    assert second.json()["output"] == first.json()["output"]  # the first question's answer
    assert second.json()["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert model_calls(model_server) == 1
    assert len(model_server.requests.for_path(EMBEDDINGS)) == 2
    assert hits() == 1
    missed, hit = Call.objects.order_by("id")
    assert (missed.cache, missed.cache_similarity, missed.cache_skipped) == ("", None, "")
    assert hit.cache == "semantic"
    assert hit.cache_similarity == pytest.approx(0.9258, abs=1e-3)
    assert hit.cost == 0
    assert hit.attempts == []


def test_an_unrelated_question_and_one_below_the_threshold_ask_the_model(
    similar, model_server, runner
) -> None:
    answers = [ask(runner, text) for text in (QUESTION, UNRELATED, PARAPHRASE)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["cache"] for a in answers] == [None, None, None]
    assert model_calls(model_server) == 3
    assert list(Call.objects.values_list("cache", flat=True)) == ["", "", ""]


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"environment": "development"},
        {"cache_partition": "tenant-b"},
        {"locale": "fr"},
    ],
)
def test_another_environment_partition_or_locale_never_reads_the_entry(
    similar, model_server, runner, elsewhere
) -> None:
    assert ask(runner, QUESTION, cache_partition="tenant-a").status_code == 200
    body = {"cache_partition": "tenant-a", **elsewhere}
    other = ask(runner, QUESTION, **body)
    assert other.status_code == 200, other.content
    assert other.json()["cache"] is None
    assert model_calls(model_server) == 2


def test_a_new_version_never_reads_an_older_ones_entries(
    similar, model_server, runner, environments, manager, django_capture_on_commit_callbacks
) -> None:
    assert ask(runner, QUESTION).json()["cache"] is None
    # The same content again, as a new version: its own namespace (version id, decision 0050).
    make_version(similar, model=BINDING, templates=TEMPLATES, variables=VARIABLES)
    with django_capture_on_commit_callbacks(execute=True):  # the served release moves on
        deploy(manager, environments, similar, 2, "staging")
    answer = ask(runner, QUESTION)
    assert answer.status_code == 200
    assert (answer.json()["version"], answer.json()["cache"]) == (2, None)
    assert model_calls(model_server) == 2


def test_the_exact_cache_is_tried_first_when_both_are_set(
    environments, manager, model_server, runner
) -> None:
    prompt = PromptFactory(key=KEY)
    both = {**BINDING, "cache": {"exact": {"ttl_seconds": 60}, "semantic": SEMANTIC}}
    make_version(prompt, model=both, templates=TEMPLATES, variables=VARIABLES)
    deploy(manager, environments, prompt, 1, "staging")
    kinds = [ask(runner, text).json()["cache"] for text in (QUESTION, QUESTION, NEAR)]
    assert kinds[0] is None
    assert kinds[1] == {"kind": "exact", "similarity": 1.0}
    assert kinds[2]["kind"] == "semantic"
    assert model_calls(model_server) == 1
    # The exact hit asked no embedding: the first question's and the near one's only.
    assert len(model_server.requests.for_path(EMBEDDINGS)) == 2


def test_the_embedding_provider_failing_sends_the_call_to_the_model_and_the_record_says_why(
    similar, model_server, runner
) -> None:
    skipped = counting(
        "promptregistry_response_cache_lookups_total",
        prompt=KEY,
        kind="semantic",
        result="skipped",
    )
    model_server.faults.push("embed-1", "500")
    first = ask(runner, QUESTION)
    assert first.status_code == 200, first.content
    assert first.json()["cache"] is None
    call = Call.objects.get()
    assert call.status == Call.Status.OK
    assert call.cache_skipped == "the embedding provider local failed (InternalServerError)"
    assert skipped() == 1
    # Nothing was stored: the same question asks the model again (and is stored this time).
    second = ask(runner, QUESTION)
    assert second.json()["cache"] is None
    assert ask(runner, NEAR).json()["cache"]["kind"] == "semantic"
    assert model_calls(model_server) == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("disable", "the embedding provider embedder is disabled"),
        ("delete", "the embedding provider is no longer configured"),
    ],
)
def test_the_embedding_provider_disabled_or_gone_is_a_model_call_never_a_500(
    environments, manager, model_server, runner, change, why
) -> None:
    Provider.objects.create(name="embedder", base_url=model_server.base_url, timeout_seconds=2)
    prompt = PromptFactory(key=KEY)
    binding = {**BINDING, "cache": {"semantic": {**SEMANTIC, "provider": "embedder"}}}
    make_version(prompt, model=binding, templates=TEMPLATES, variables=VARIABLES)
    deploy(manager, environments, prompt, 1, "staging")
    embedder = Provider.objects.filter(name="embedder")
    embedder.update(enabled=False) if change == "disable" else embedder.delete()
    answer = ask(runner, QUESTION)
    assert answer.status_code == 200, answer.content
    assert answer.json()["cache"] is None
    assert Call.objects.get().cache_skipped == why
    assert model_calls(model_server) == 1
    assert not model_server.requests.for_path(EMBEDDINGS)


def test_without_redis_the_process_holds_the_vectors(
    similar, model_server, runner, settings
) -> None:
    settings.REDIS_URL = ""
    assert ask(runner, QUESTION).json()["cache"] is None
    assert ask(runner, NEAR).json()["cache"]["kind"] == "semantic"
    assert model_calls(model_server) == 1
