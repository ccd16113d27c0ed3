"""The response cache on the run path (issue 19 item 2, decision 0050): a version that opts in
answers a repeated request from the cache, without a model call, scoped so no other version,
environment, locale or partition ever reads it."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from registry.content import VersionContent, model_binding_check
from releases.services import release_deploy
from runs import response_cache
from runs.models import Call
from tests.api.helpers import sse_events
from tests.api.test_run import CHAT, SCHEMA, priced, run
from tests.factories import PromptFactory, content_data, make_version
from tests.metrics import counting

KEY = "support.cached"
URL = f"/api/v1/prompts/{KEY}/run"
CACHED = {
    "provider": "local",
    "model": "echo-1",
    "parameters": {"temperature": 0.2},
    "cache": {"exact": {"ttl_seconds": 3600}},
}
TEMPLATES = {
    "en": {"system": "You are a support agent.", "instruction": "Greet {{ customer_name }}."},
    "fr": {"system": "Vous êtes un agent.", "instruction": "Saluez {{ customer_name }}."},
}
ADA = {"customer_name": "Ada"}
SEMANTIC = {"ttl_seconds": 3600, "threshold": 0.9, "provider": "local", "model": "embed-1"}


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch) -> None:
    # Entries outlive a test's rolled-back rows (and Redis a test database), and a new test
    # database gives its version ids out again: each test reads and writes its own keys only.
    monkeypatch.setattr(response_cache, "KEY_PREFIX", f"test-{uuid.uuid4()}:")


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


@pytest.fixture
def cached(environments, manager, model_server):
    """``support.cached`` v1, caching exactly, stable in development and staging."""
    prompt = PromptFactory(key=KEY)
    make_version(prompt, model=CACHED, templates=TEMPLATES)
    for name in ("development", "staging"):
        release_deploy(
            prompt=prompt, environment=environments[name], version=1, actor=manager, reason="t"
        )
    return prompt


def ask(client, **body: Any):
    return run(client, {"environment": "staging", "variables": ADA, **body}, url=URL)


def model_calls(model_server) -> int:
    return len(model_server.requests.for_path(CHAT))


def test_a_repeated_request_is_answered_from_the_cache_without_a_model_call(
    cached, model_server, runner
) -> None:
    priced("echo-1")
    name = "promptregistry_response_cache_lookups_total"
    hits = counting(name, prompt=KEY, kind="exact", result="hit")
    misses = counting(name, prompt=KEY, kind="exact", result="miss")
    first = ask(runner, subject="u-1")
    second = ask(runner, subject="u-1")
    assert first.status_code == second.status_code == 200, second.content
    missed, hit = first.json(), second.json()
    assert model_calls(model_server) == 1
    assert missed["cache"] is None
    assert hit["cache"] == {"kind": "exact", "similarity": 1.0}
    assert hit["output"] == missed["output"]
    assert "Greet Ada" in hit["output"]
    assert hit["answered_by"] == missed["answered_by"]
    # Nothing counted twice: the model was paid once, by the call that stored the answer.
    assert missed["cost"] > 0
    assert missed["usage"]["input_tokens"] > 0
    assert (hit["cost"], hit["usage"], hit["attempts"]) == (
        0,
        {"input_tokens": 0, "output_tokens": 0},
        [],
    )
    assert (misses(), hits()) == (1, 1)
    model_call, cache_hit = Call.objects.order_by("id")
    assert (model_call.cache, model_call.cache_similarity) == ("", None)
    assert (cache_hit.cache, cache_hit.cache_similarity) == ("exact", 1.0)
    assert cache_hit.cost == Decimal(0)
    assert (cache_hit.input_tokens, cache_hit.output_tokens, cache_hit.attempts) == (0, 0, [])
    assert (cache_hit.status, cache_hit.output) == (Call.Status.OK, model_call.output)


@pytest.mark.parametrize(
    "other",
    [
        {"environment": "development"},
        {"locale": "fr"},
        {"cache_partition": "tenant-b"},
        {"variables": {"customer_name": "Bob"}},
    ],
    ids=["environment", "locale", "partition", "request"],
)
def test_another_scope_never_reads_the_answer(cached, model_server, runner, other) -> None:
    assert ask(runner, cache_partition="tenant-a").json()["cache"] is None
    assert ask(runner, cache_partition="tenant-a").json()["cache"] is not None
    answer = ask(runner, **{"cache_partition": "tenant-a", **other}).json()
    assert answer["cache"] is None
    assert model_calls(model_server) == 2


def test_a_new_version_never_reads_the_older_ones_answers(
    cached, environments, manager, model_server, runner, django_capture_on_commit_callbacks
) -> None:
    assert ask(runner).json()["cache"] is None
    assert ask(runner).json()["cache"]["kind"] == "exact"
    # The same content committed again: another version, another cache.
    make_version(cached, model=CACHED, templates=TEMPLATES)
    with django_capture_on_commit_callbacks(execute=True):  # the served release moves on
        release_deploy(
            prompt=cached,
            environment=environments["staging"],
            version=2,
            actor=manager,
            reason="t",
        )
    answer = ask(runner).json()
    assert (answer["version"], answer["cache"]) == (2, None)
    assert model_calls(model_server) == 2


def test_a_version_without_a_cache_calls_the_model_every_time(
    environments, manager, model_server, runner
) -> None:
    prompt = PromptFactory(key=KEY)
    make_version(prompt, model={"provider": "local", "model": "echo-1"}, templates=TEMPLATES)
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )
    assert ask(runner).json()["cache"] is None
    assert ask(runner).json()["cache"] is None
    assert model_calls(model_server) == 2
    assert set(Call.objects.values_list("cache", flat=True)) == {""}


def test_cache_false_bypasses_the_cache(cached, model_server, runner) -> None:
    assert ask(runner).json()["cache"] is None
    assert ask(runner, cache=False).json()["cache"] is None  # not read
    assert model_calls(model_server) == 2
    assert ask(runner).json()["cache"] is not None


@pytest.mark.parametrize(
    ("binding", "calls"),
    [
        ({"model": "fault-500"}, 6),  # the retries of both runs
        ({"model": "fault-badjson", "response_schema": SCHEMA}, 4),  # each with its repair
    ],
    ids=["error", "schema-refused"],
)
def test_a_failed_call_is_never_cached(
    environments, manager, model_server, runner, binding, calls
) -> None:
    prompt = PromptFactory(key=KEY)
    make_version(prompt, model={**CACHED, **binding}, templates=TEMPLATES)
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )
    assert ask(runner).status_code == 502
    assert ask(runner).status_code == 502
    assert model_calls(model_server) == calls  # nothing was served from the cache
    assert set(Call.objects.values_list("status", "cache")) == {(Call.Status.ERROR, "")}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"cache_partition": "t" * 129}, "max_length"),
        ({"cache_partition": 7}, "invalid"),
        ({"cache": "no"}, "invalid"),
    ],
)
def test_a_bad_cache_member_is_a_400_before_anything_runs(
    cached, model_server, runner, body, code
) -> None:
    name = "promptregistry_response_cache_lookups_total"
    misses = counting(name, prompt=KEY, kind="exact", result="miss")
    response = ask(runner, **body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    [error] = response.json()["errors"]
    pointer = "/cache_partition" if "cache_partition" in body else "/cache"
    assert (error["code"], error["pointer"]) == (code, pointer)
    assert model_calls(model_server) == 0
    assert not Call.objects.exists()
    assert misses() == 0


def test_a_partition_of_128_characters_is_taken(cached, model_server, runner) -> None:
    assert ask(runner, cache_partition="t" * 128).status_code == 200


def test_a_streamed_hit_sends_the_cached_answer_as_the_usual_events(
    cached, model_server, runner
) -> None:
    assert ask(runner).json()["cache"] is None
    events = sse_events(ask(runner, stream=True))
    kinds = [kind for kind, _ in events]
    assert (kinds[0], kinds[-1]) == ("start", "done")
    tokens = "".join(data["text"] for kind, data in events if kind == "token")
    done = events[-1][1]
    assert "Greet Ada" in tokens
    assert tokens == done["output"]
    assert done["cache"] == {"kind": "exact", "similarity": 1.0}
    assert model_calls(model_server) == 1
    assert Call.objects.order_by("-id").first().cache == "exact"


def test_a_streamed_answer_fills_the_cache(cached, model_server, runner) -> None:
    events = sse_events(ask(runner, stream=True))
    assert events[-1][1]["cache"] is None
    assert ask(runner).json()["cache"] is not None
    assert model_calls(model_server) == 1


def test_the_openai_compatible_endpoint_answers_from_the_same_cache(
    cached, model_server, runner
) -> None:
    body = {"model": f"prompt:{KEY}", "messages": [], "variables": ADA, "environment": "staging"}

    def chat():
        return runner.post(
            "/openai/v1/chat/completions", data=json.dumps(body), content_type="application/json"
        )

    first, second = chat(), chat()
    assert first.status_code == second.status_code == 200, second.content
    assert first.json()["choices"] == second.json()["choices"]
    assert second.json()["usage"]["total_tokens"] == 0
    assert model_calls(model_server) == 1
    assert list(Call.objects.order_by("id").values_list("cache", flat=True)) == ["", "exact"]


# --- the policy, at commit ------------------------------------------------------------------------


def binding_problems(cache: Any) -> list[tuple[str, str]]:
    content = VersionContent.from_dict(content_data(model={**CACHED, "cache": cache}))
    return [(p.code, p.pointer) for p in model_binding_check(content.model)]


@pytest.mark.parametrize(
    ("cache", "expected"),
    [
        ({"exact": {"ttl_seconds": 1}}, []),
        ({"exact": {"ttl_seconds": 30 * 86400}}, []),
        ({"exact": {"ttl_seconds": 0}}, [("invalid_cache_ttl", "/model/cache/exact/ttl_seconds")]),
        (
            {"exact": {"ttl_seconds": 30 * 86400 + 1}},
            [("invalid_cache_ttl", "/model/cache/exact/ttl_seconds")],
        ),
        (
            {"exact": {"ttl_seconds": True}},
            [("invalid_cache_ttl", "/model/cache/exact/ttl_seconds")],
        ),
        ({"exact": {}}, [("invalid_cache_ttl", "/model/cache/exact/ttl_seconds")]),
        ({"exact": []}, [("wrong_type", "/model/cache/exact")]),
        ({}, [("empty_cache", "/model/cache")]),
        ("yes", [("wrong_type", "/model/cache")]),
        (
            {"exact": {"ttl_seconds": 60, "size": 3}},
            [("unknown_field", "/model/cache/exact/size")],
        ),
        ({"semantic": SEMANTIC}, []),
        ({"exact": {"ttl_seconds": 60}, "semantic": SEMANTIC}, []),
        ({"semantic": {**SEMANTIC, "threshold": 1}}, []),
        (
            {"semantic": {**SEMANTIC, "threshold": 0}},
            [("invalid_cache_threshold", "/model/cache/semantic/threshold")],
        ),
        (
            {"semantic": {**SEMANTIC, "threshold": 1.01}},
            [("invalid_cache_threshold", "/model/cache/semantic/threshold")],
        ),
        (
            {"semantic": {**SEMANTIC, "threshold": "0.9"}},
            [("invalid_cache_threshold", "/model/cache/semantic/threshold")],
        ),
        (
            {"semantic": {k: v for k, v in SEMANTIC.items() if k != "provider"}},
            [("invalid_provider", "/model/cache/semantic/provider")],
        ),
        (
            {"semantic": {**SEMANTIC, "model": ""}},
            [("invalid_model", "/model/cache/semantic/model")],
        ),
        (
            {"semantic": {**SEMANTIC, "ttl_seconds": 0}},
            [("invalid_cache_ttl", "/model/cache/semantic/ttl_seconds")],
        ),
        ({"semantic": 0.9}, [("wrong_type", "/model/cache/semantic")]),
        (
            {"semantic": {**SEMANTIC, "k": 3}},
            [("unknown_field", "/model/cache/semantic/k")],
        ),
    ],
)
def test_the_cache_policy_is_checked(cache, expected) -> None:
    assert binding_problems(cache) == expected


def test_a_binding_without_a_cache_keeps_its_content_hash() -> None:
    plain = VersionContent.from_dict(content_data())
    assert "cache" not in plain.canonical()["model"]
    cached = VersionContent.from_dict(content_data(model=CACHED))
    assert cached.canonical()["model"]["cache"] == CACHED["cache"]
    assert cached.content_hash != plain.content_hash


def test_the_api_keeps_a_policy_and_refuses_a_bad_one_at_its_pointer(author_client, prompt) -> None:
    versions = f"/api/v1/prompts/{prompt.key}/versions"
    bad = content_data(model={**CACHED, "cache": {"exact": {"ttl_seconds": 0}}})
    response = author_client.post(versions, {"message": "m", **bad}, format="json")
    assert response.status_code == 400, response.content
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert "/model/cache/exact/ttl_seconds" in pointers
    assert not prompt.versions.exists()

    good = content_data(model=CACHED)
    response = author_client.post(versions, {"message": "m", **good}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["model"]["cache"] == CACHED["cache"]
    assert prompt.versions.get().cache == CACHED["cache"]


def test_a_cache_out_of_reach_is_a_miss_and_the_model_answers(
    cached, model_server, runner, monkeypatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(response_cache.default_cache, "get", refuse)
    monkeypatch.setattr(response_cache.default_cache, "set", refuse)
    first, second = ask(runner), ask(runner)
    assert first.status_code == second.status_code == 200
    assert (first.json()["cache"], second.json()["cache"]) == (None, None)
    assert model_calls(model_server) == 2
    assert Call.objects.count() == 2


def test_a_streamed_openai_compatible_hit_sends_the_cached_text(
    cached, model_server, runner
) -> None:
    body = {"model": f"prompt:{KEY}", "messages": [], "variables": ADA, "environment": "staging"}
    first = runner.post(
        "/openai/v1/chat/completions", data=json.dumps(body), content_type="application/json"
    )
    streamed = runner.post(
        "/openai/v1/chat/completions",
        data=json.dumps({**body, "stream": True}),
        content_type="application/json",
    )
    assert streamed.status_code == 200
    text = b"".join(streamed.streaming_content).decode()
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: {")
    ]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == first.json()["choices"][0]["message"]["content"]
    assert model_calls(model_server) == 1
    assert list(Call.objects.order_by("id").values_list("cache", flat=True)) == ["", "exact"]


@pytest.mark.parametrize(
    ("semantic", "code"),
    [
        ({k: v for k, v in SEMANTIC.items() if k != "provider"}, "invalid_provider"),
        ({**SEMANTIC, "provider": "nowhere"}, "unknown_provider"),
    ],
)
def test_a_semantic_cache_without_a_configured_embedding_provider_is_refused_at_commit(
    author_client, prompt, model_server, semantic, code
) -> None:
    versions = f"/api/v1/prompts/{prompt.key}/versions"
    bad = content_data(model={**CACHED, "cache": {"semantic": semantic}})
    response = author_client.post(versions, {"message": "m", **bad}, format="json")
    assert response.status_code == 400, response.content
    errors = {(e["code"], e["pointer"]) for e in response.json()["errors"]}
    assert errors == {(code, "/model/cache/semantic/provider")}
    assert not prompt.versions.exists()
