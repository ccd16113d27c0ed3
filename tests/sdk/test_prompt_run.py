"""Prompt.run(openai_client, **variables): the real ``openai`` client against the local fake.

Every call goes to runs.fake_provider on loopback (no proxy from the environment), so nothing
leaves the machine. What ``run`` reports is then posted to the registry's real events endpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from promptregistry import Prompt, RegistryError, VariablesInvalid
from promptregistry.core import resolve

from releases.services import release_deploy
from runs.fake_provider import FakeProvider
from runs.models import Call
from tests.factories import PromptFactory, make_version
from tests.sdk.test_prompt import Outcomes, get, served

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
TRIAGE = "support.triage"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"category": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["category", "urgent"],
    "additionalProperties": False,
}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment may take a call off loopback."""
    for name in (*PROXY_VARIABLES, "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_seconds=5) as server:
        yield server


@pytest.fixture
def model(fake: FakeProvider) -> openai.OpenAI:
    """The caller's own client; no retries of its own, so one failure is one request."""
    return openai.OpenAI(base_url=fake.base_url, api_key="not-checked", max_retries=0, timeout=5)


@pytest.fixture
def service(make_client):
    """A service using the SDK: reads prompts, reports outcomes."""
    return make_client("prompts:read", "events:write", name="sdk-service")


@pytest.fixture
def outcomes(environments) -> Iterator[Outcomes]:
    with Outcomes.recording() as recorded:
        yield recorded


@pytest.fixture
def staging(service, released) -> Any:
    return served(service, "staging")


@pytest.fixture
def triage(environments, manager, service) -> Any:
    """``support.triage`` v1 in development: a response schema and three parameters."""
    prompt = PromptFactory(key=TRIAGE)
    make_version(
        prompt,
        variables=[{"name": "message", "type": "string", "required": True}],
        model={
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.3, "max_tokens": 200, "seed": 7},
            "response_schema": SCHEMA,
        },
        templates={
            "en": {
                "system": "You sort support messages.",
                "instruction": "Classify: {{ message }}",
                "format": "Answer in JSON.",
            }
        },
    )
    release_deploy(
        prompt=prompt,
        environment=environments["development"],
        version=1,
        actor=manager,
        reason="setup",
    )
    return served(service, "development")


def chats(fake: FakeProvider) -> list[dict[str, Any]]:
    return [request.body for request in fake.requests.for_path(CHAT)]


def test_run_calls_the_bound_model_and_reports_the_outcome(fake, model, triage, outcomes):
    prompt = get(triage, TRIAGE, subject="user-7", reporter=outcomes.reporter)

    completion = prompt.run(model, message="My parcel never arrived")

    [request] = chats(fake)
    assert request == {
        "model": "echo-1",
        "messages": prompt.render(message="My parcel never arrived"),
        "temperature": 0.3,
        "max_tokens": 200,
        "seed": 7,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": SCHEMA, "strict": True},
        },
    }  # no "stream": the call is not streamed
    answer = completion.choices[0].message.content
    assert set(json.loads(answer)) == {"category", "urgent"}
    [sent] = outcomes.queued()
    assert (sent["status"], sent["prompt"], sent["version"], sent["environment"]) == (
        "ok",
        TRIAGE,
        1,
        "development",
    )
    assert isinstance(sent["latency_ms"], float)
    assert sent["latency_ms"] >= 0
    assert (sent["input_tokens"], sent["output_tokens"]) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert (sent["output"], sent["inputs"]) == (answer, {"message": "My parcel never arrived"})
    assert (sent["provider"], sent["model"], sent["subject"]) == ("local", "echo-1", "user-7")
    assert "error_class" not in sent
    assert outcomes.post() == 0
    call = Call.objects.get()
    assert (call.status, call.input_tokens, call.output_tokens) == (
        "ok",
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert call.output == answer


def test_a_failing_model_is_reported_as_an_error_then_raised(fake, model, triage, outcomes):
    prompt = get(triage, TRIAGE, reporter=outcomes.reporter)
    fake.faults.push("echo-1", "500")

    with pytest.raises(openai.InternalServerError):
        prompt.run(model, message="Where is my refund?")

    assert len(chats(fake)) == 1
    [sent] = outcomes.queued()
    assert (sent["status"], sent["error_class"]) == ("error", "InternalServerError")
    assert sent["latency_ms"] >= 0
    assert sent["inputs"] == {"message": "Where is my refund?"}
    assert {"input_tokens", "output_tokens", "output"}.isdisjoint(sent)
    assert outcomes.post() == 0
    assert (Call.objects.get().status, Call.objects.get().error_class) == (
        "error",
        "InternalServerError",
    )


def test_a_model_that_is_down_is_reported_too(model, triage, outcomes, fake):
    prompt = get(triage, TRIAGE, reporter=outcomes.reporter)
    fake.stop()  # nothing listens on the port any more

    with pytest.raises(openai.APIConnectionError):
        prompt.run(model, message="Hello?")

    [sent] = outcomes.queued()
    assert (sent["status"], sent["error_class"]) == ("error", "APIConnectionError")


def test_run_without_a_response_schema_sends_no_response_format(fake, model, staging, outcomes):
    prompt = get(staging, subject="user-1", reporter=outcomes.reporter)

    prompt.run(model, customer_name="Ana")

    [request] = chats(fake)
    assert "response_format" not in request
    assert (request["model"], request["temperature"]) == ("echo-1", 0.2)
    assert request["messages"] == [
        {"role": "system", "content": "You are a support agent (v2)"},
        {"role": "user", "content": "Greet Ana."},
    ]


def test_bad_variables_fail_before_any_call_and_report_nothing(fake, model, triage, outcomes):
    prompt = get(triage, TRIAGE, reporter=outcomes.reporter)

    with pytest.raises(VariablesInvalid):
        prompt.run(model, mesage="typo")

    assert chats(fake) == []
    assert outcomes.queued() == []


def test_a_prompt_without_a_model_cannot_run(fake, model, triage, outcomes):
    # A caller's fallback prompt may come without a binding.
    resolution = resolve(triage.releases[TRIAGE], subject=None, locale=None)
    unbound = dataclasses.replace(
        resolution, version=dataclasses.replace(resolution.version, model={})
    )
    prompt = Prompt(unbound, source="fallback", reporter=outcomes.reporter)

    with pytest.raises(RegistryError, match="no model binding"):
        prompt.run(model, message="x")

    assert chats(fake) == []
    assert outcomes.queued() == []


def test_a_version_with_guardrails_is_run_by_the_registry_not_here(fake, model, triage, outcomes):
    # Calling the model from the service would skip the checks without a word.
    resolution = resolve(triage.releases[TRIAGE], subject=None, locale=None)
    guarded = {**resolution.version.model, "guardrails": {"input": {"pii": {"action": "redact"}}}}
    resolution = dataclasses.replace(
        resolution, version=dataclasses.replace(resolution.version, model=guarded)
    )
    prompt = Prompt(resolution, source="live", reporter=outcomes.reporter)

    with pytest.raises(RegistryError, match="declares guardrails"):
        prompt.run(model, message="write to ada@example.com")

    assert chats(fake) == []
    assert outcomes.queued() == []


def test_run_works_without_a_reporter(fake, model, triage):
    prompt = get(triage, TRIAGE)

    completion = prompt.run(model, message="Thanks!")

    assert completion.choices[0].finish_reason == "stop"
    assert len(chats(fake)) == 1
