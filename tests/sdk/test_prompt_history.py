"""promptregistry.Prompt with a conversation history (a ``messages`` variable): built from the
bundle the server really serves, its local render gives the messages of the server's ``render``,
with the history where the version puts it, and refuses a bad history as the server does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from promptregistry import VariablesInvalid

from tests.api.test_run import released_prompt
from tests.sdk.test_prompt import get, served

pytestmark = pytest.mark.django_db

KEY = "support.chat"
TURNS = [
    {"role": "user", "content": "My order {{ 7 * 6 }} is late."},
    {"role": "assistant", "content": "Sorry to hear that.\nWhich order?"},
    {"role": "tool", "content": '{"order": 42, "status": "shipped"}', "tool_call_id": "call_1"},
]


@pytest.fixture
def service(make_client):
    return make_client("prompts:read", name="sdk-chat")


def chat_bundle(service, environments, manager, after: str | None):
    history: dict[str, Any] = {"name": "history", "type": "messages", "required": False}
    if after is not None:
        history["after"] = after
    released_prompt(
        environments,
        manager,
        KEY,
        model={"provider": "local", "model": "echo-1"},
        variables=[{"name": "question", "type": "string"}, history],
        templates={
            "en": {
                "system": "One line.",
                "context": "Orders ship in two days.",
                "instruction": "{{ question }}",
                "format": "Plain text.",
            }
        },
    )
    return served(service, "staging")


def server_render(service, variables: dict[str, Any]) -> dict[str, Any]:
    return service.post(
        f"/api/v1/prompts/{KEY}/render",
        json.dumps({"environment": "staging", "variables": variables}),
        content_type="application/json",
    ).json()


@pytest.mark.parametrize("after", [None, "system", "instruction", "format"])
def test_the_sdk_renders_the_history_where_the_server_does(service, environments, manager, after):
    bundle = chat_bundle(service, environments, manager, after)
    variables = {"question": "Where is it?", "history": TURNS}

    answer = server_render(service, variables)
    prompt = get(bundle, KEY)

    assert prompt.render(**variables) == answer["messages"]
    assert prompt.render_sections(**variables) == answer["rendered"]
    assert (
        prompt.render(question="Where is it?")
        == server_render(service, {"question": "Where is it?"})["messages"]
    )


def test_the_sdk_refuses_a_bad_history_as_the_server_does(service, environments, manager):
    bundle = chat_bundle(service, environments, manager, None)
    variables = {
        "question": "q",
        "history": [{"role": "system", "content": "x"}, {"role": "user", "content": 3}],
    }

    answer = server_render(service, variables)
    with pytest.raises(VariablesInvalid) as caught:
        get(bundle, KEY).render(**variables)

    assert caught.value.errors == answer["errors"]
    assert [e["pointer"] for e in answer["errors"]] == [
        "/variables/history/0/role",
        "/variables/history/1/content",
    ]


def test_an_assistant_turn_with_tool_calls_and_no_content_renders_on_both_sides(
    service, environments, manager
):
    """OpenAI's chat API lets an assistant message that calls tools leave ``content`` out (the
    fuzzing found it answered 500): it is a turn with no text, on the server and in the SDK."""
    bundle = chat_bundle(service, environments, manager, None)
    call = {"id": "call_1", "type": "function", "function": {"name": "order", "arguments": "{}"}}
    turns = [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_1"},
    ]
    variables = {"question": "And now?", "history": turns}

    answer = server_render(service, variables)

    (assistant,) = [m for m in answer["messages"] if m["role"] == "assistant"]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert get(bundle, KEY).render(**variables) == answer["messages"]
