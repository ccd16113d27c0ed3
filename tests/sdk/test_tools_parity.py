"""Tools and strict structured output, server and SDK side by side: the registry's ``render``
answers ``request`` (what ``chat.completions.create`` takes) and the SDK's ``Prompt.request``,
from the bundle the server serves, builds the same, strictness included (the bundle carries each
provider's flag); ``Prompt.run`` sends it and ``Prompt.tool_calls`` reads the model's calls."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from promptregistry import RegistryError

from releases.services import release_deploy
from runs.fake_provider import FakeProvider
from runs.models import Provider
from runs.services import provider_save
from tests.factories import PromptFactory, make_version
from tests.sdk.test_prompt import get, served

pytestmark = pytest.mark.django_db

KEY = "support.orders"
SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string"}},
    "required": ["reply"],
    "additionalProperties": False,
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "order_lookup",
        "description": "Find an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
VARIABLES = {"question": "Where is order 42"}


@pytest.fixture
def fake(model_server) -> FakeProvider:
    """The local model server, configured as the provider ``local`` (tests/conftest.py)."""
    return model_server


@pytest.fixture
def local(fake: FakeProvider) -> Provider:
    return Provider.objects.get(name="local")


@pytest.fixture
def service(make_client):
    return make_client("prompts:read", name="sdk-service")


@pytest.fixture
def orders(environments, manager, local) -> None:
    """``support.orders`` v1 in development: a tool, a tool choice and a response schema."""
    prompt = PromptFactory(key=KEY)
    make_version(
        prompt,
        variables=[{"name": "question", "type": "string", "required": True}],
        model={
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.1},
            "response_schema": SCHEMA,
            "tools": [LOOKUP],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
        templates={"en": {"system": "You help with orders.", "instruction": "{{ question }}"}},
    )
    release_deploy(
        prompt=prompt,
        environment=environments["development"],
        version=1,
        actor=manager,
        reason="setup",
    )


def server_render(service) -> dict[str, Any]:
    response = service.post(
        f"/api/v1/prompts/{KEY}/render",
        json.dumps({"environment": "development", "variables": VARIABLES}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content[:500]
    return response.json()


@pytest.mark.parametrize("strict", [True, False])
def test_the_sdk_builds_the_request_the_server_renders(service, orders, local, strict):
    local.strict_output = strict
    local.save()

    answer = server_render(service)
    prompt = get(served(service, "development"), KEY)

    assert prompt.request(**VARIABLES) == answer["request"]
    assert answer["request"] == {
        "model": "echo-1",
        "messages": answer["messages"],
        "temperature": 0.1,
        "tools": [LOOKUP],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": SCHEMA, "strict": strict},
        },
    }
    assert answer["model"]["tools"] == [LOOKUP]
    assert prompt.tools == [LOOKUP]


def test_turning_a_providers_strictness_off_changes_the_bundle(service, orders, local):
    before = service.get("/api/v1/environments/development/bundle")
    provider_save(
        name="local",
        base_url=local.base_url,
        timeout_seconds=local.timeout_seconds,
        strict_output=False,
    )

    after = service.get(
        "/api/v1/environments/development/bundle", HTTP_IF_NONE_MATCH=before["ETag"]
    )

    assert after.status_code == 200  # not a 304: the SDK must hear of it
    assert after.json()["providers"] == {"local": {"strict_output": False}}
    assert before.json()["providers"] == {"local": {"strict_output": True}}


def test_the_sdk_runs_with_the_tools_and_reads_the_tool_call(service, orders, fake):
    prompt = get(served(service, "development"), KEY)
    client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=5)

    completion = prompt.run(client, **VARIABLES)

    [sent] = [r.body for r in fake.requests.for_path("/v1/chat/completions")]
    assert sent == prompt.request(**VARIABLES)
    [call] = prompt.tool_calls(completion)
    assert call["name"] == "order_lookup"
    assert call["arguments"] == {"order_id": "Where is order 42"}
    assert call["id"].startswith("call_")


def test_the_sdk_refuses_a_call_to_an_undeclared_tool(service, orders, fake):
    prompt = get(served(service, "development"), KEY)
    client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=5)
    fake.faults.push("echo-1", "badtool")

    completion = prompt.run(client, **VARIABLES)

    with pytest.raises(RegistryError, match="not a tool"):
        prompt.tool_calls(completion)
