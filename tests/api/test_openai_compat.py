"""The OpenAI-compatible endpoints through OpenAI's own Python client, against the registry served
for real (pytest-django's ``live_server``) and the local model server: plain and streamed, chat
completions and responses, a canary drawn by the user, a pinned version, a conversation, tool
calls, the call records, and every refusal raised as the client's own exception class, with
nothing called and nothing recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from api.services import apikey_create
from releases.resolution import resolve
from releases.selectors import served_releases
from releases.services import release_canary_start
from runs.models import Call
from tests.api.helpers import wait_for_call
from tests.api.test_ratelimit import _empty_buckets  # noqa: F401 (autouse: no earlier test's)
from tests.api.test_run import released_prompt
from tests.api.test_run_tools import PAY
from tests.factories import make_version

# A live server needs transactional tests, whose flush the append-only release events refuse on
# SQLite: these run on PostgreSQL, as ``make test`` runs them.
pytestmark = pytest.mark.postgres

KEY = "support.refund-reply"
MODEL = f"prompt:{KEY}"
STAGING = {"environment": "staging"}
ADA = {"customer_name": "Ada"}
CHAT = "/v1/chat/completions"  # the model server's


@pytest.fixture
def runner_key(db) -> str:
    """A service that runs prompts: runs:execute, every environment."""
    return apikey_create(name="runner", scopes=("runs:execute",))[1]


def client_for(live_server, key: str) -> OpenAI:
    # No retry: a refusal is read once, as the test means it (the client retries 429 and 5xx).
    return OpenAI(base_url=f"{live_server.url}/openai/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def client(live_server, runner_key, model_server) -> Iterator[OpenAI]:
    with client_for(live_server, runner_key) as client:
        yield client


def sent_messages(model_server) -> list[dict[str, Any]]:
    """The messages of the one request the model server had."""
    [request] = model_server.requests.for_path(CHAT)
    return request.body["messages"]


# --- chat completions ----------------------------------------------------------------------------


def test_a_chat_completion_runs_the_released_prompt_and_records_the_call(
    client, released, model_server
):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[], extra_body={"variables": ADA, **STAGING}
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "echo-1"  # the model that answered
    [choice] = completion.choices
    assert "Greet Ada" in choice.message.content
    assert (choice.message.role, choice.finish_reason) == ("assistant", "stop")
    assert choice.message.tool_calls is None
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert (raw.headers["X-Registry-Version"], raw.headers["X-Registry-Variant"]) == ("2", "stable")
    assert raw.headers["X-Registry-Environment"] == "staging"
    assert completion.id == f"chatcmpl-{raw.request_id}"
    assert [m["role"] for m in sent_messages(model_server)] == ["system", "user"]
    call = wait_for_call(raw.request_id)
    assert (call.source, call.environment.name, call.version.number) == ("run", "staging", 2)
    assert (call.status, call.inputs, call.conversation) == (Call.Status.OK, ADA, [])
    assert call.output == choice.message.content


def test_without_an_environment_the_setting_names_it(client, released, settings):
    settings.OPENAI_COMPAT_ENVIRONMENT = "production"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[], extra_body={"variables": ADA}
    )

    assert (raw.headers["X-Registry-Environment"], raw.headers["X-Registry-Version"]) == (
        "production",
        "1",
    )


def test_with_no_default_environment_a_request_must_name_one(client, released, settings):
    settings.OPENAI_COMPAT_ENVIRONMENT = ""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[], extra_body={"variables": ADA})

    assert refused.value.param == "environment"


def test_a_streamed_chat_completion_sends_chunks_then_done(client, released, model_server):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"variables": ADA, **STAGING},
    )
    chunks = list(stream)

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Greet Ada" in text
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.total_tokens > 0
    call = wait_for_call(chunks[0].id.removeprefix("chatcmpl-"))
    assert (call.output, call.time_to_first_token_ms is not None) == (text, True)


def test_messages_are_appended_after_the_prompt_as_a_conversation(client, released, model_server):
    conversation = [
        {"role": "user", "content": "I wrote to ada@example.com"},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]},
    ]
    completion = client.chat.completions.create(
        model=MODEL, messages=conversation, extra_body={"variables": ADA, **STAGING}
    )

    # The model server echoes the last user message: the caller's, after the prompt's.
    assert completion.choices[0].message.content == "echo-1: Where is my order?"
    sent = sent_messages(model_server)
    assert [m["role"] for m in sent] == ["system", "user", "user", "assistant", "user"]
    assert "Greet Ada" in sent[1]["content"]
    assert sent[2:] == [
        {"role": "user", "content": "I wrote to ada@example.com"},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": "Where is my order?"},
    ]
    call = wait_for_call(completion.id.removeprefix("chatcmpl-"))
    assert call.conversation[0] == {"role": "user", "content": "I wrote to [email]"}  # redacted
    assert len(call.conversation) == 3


# --- responses ----------------------------------------------------------------------------------


def test_a_response_runs_the_reusable_prompt(client, released, model_server):
    raw = client.responses.with_raw_response.create(
        prompt={"id": KEY, "variables": ADA}, extra_body=STAGING
    )
    response = raw.parse()

    assert (response.object, response.status, response.model) == ("response", "completed", "echo-1")
    assert "Greet Ada" in response.output_text
    [message] = response.output
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert response.prompt.id == KEY
    assert response.prompt.version == "2"
    assert response.metadata["registry_variant"] == "stable"
    assert response.metadata["registry_request_id"] == raw.request_id
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    call = wait_for_call(raw.request_id)
    assert (call.version.number, call.output) == (2, response.output_text)


def test_a_response_variable_may_be_an_input_text_and_input_is_appended(
    client, released, model_server
):
    response = client.responses.create(
        prompt={"id": KEY, "variables": {"customer_name": {"type": "input_text", "text": "Bo"}}},
        input="Can I pay in two parts?",
        extra_body=STAGING,
    )

    assert response.output_text == "echo-1: Can I pay in two parts?"
    sent = sent_messages(model_server)
    assert "Greet Bo" in sent[1]["content"]
    assert sent[-1] == {"role": "user", "content": "Can I pay in two parts?"}


def test_a_streamed_response_sends_the_responses_events(client, released):
    events = list(
        client.responses.create(
            prompt={"id": KEY, "variables": ADA}, extra_body=STAGING, stream=True
        )
    )

    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == final.output_text
    assert "Greet Ada" in text
    assert final.usage.output_tokens > 0
    assert wait_for_call(final.metadata["registry_request_id"]).output == text


def test_the_clients_stream_helper_assembles_the_final_response(client, released):
    # The helper wants a model and an input: the prompt's, and none to append.
    with client.responses.stream(
        model=MODEL, prompt={"id": KEY, "variables": ADA}, input=[], extra_body=STAGING
    ) as s:
        streamed = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()

    assert final.output_text == streamed


# --- who is served what -------------------------------------------------------------------------


@pytest.fixture
def canary(released, manager) -> dict[str, str]:
    """Staging serves v2, and v3 as a 50 % canary: a subject of each."""
    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(50),
        actor=manager,
        reason="try v3",
    )
    [served] = served_releases(environment="staging", prompt=KEY)
    subjects: dict[str, str] = {}
    for n in range(100):
        label = resolve(served, subject=f"user-{n}", locale=None).assignment.label
        subjects.setdefault(label, f"user-{n}")
    return subjects


def test_the_user_draws_the_canary_as_a_subject_does(client, canary):
    drawn = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[], user=canary["canary"], extra_body={"variables": ADA, **STAGING}
    )
    stable = client.responses.with_raw_response.create(
        prompt={"id": KEY, "variables": ADA}, safety_identifier=canary["stable"], extra_body=STAGING
    )

    assert (drawn.headers["X-Registry-Version"], drawn.headers["X-Registry-Variant"]) == (
        "3",
        "canary",
    )
    assert stable.parse().prompt.version == "2"
    call = wait_for_call(drawn.request_id)
    assert (call.variant, call.sticky, bool(call.subject_hash)) == ("canary", True, True)


@pytest.mark.parametrize("version", ["1", "3"])
def test_a_pinned_version_answers_instead_of_the_draw(client, canary, version):
    """v1 is no longer served in staging, v3 is its canary: a pin names either, for any user."""
    raw = client.responses.with_raw_response.create(
        prompt={"id": KEY, "version": version, "variables": ADA},
        user=canary["stable"],
        extra_body=STAGING,
    )
    response = raw.parse()

    assert response.prompt.version == version
    assert response.metadata["registry_variant"] == "pinned"
    call = wait_for_call(raw.request_id)
    # Not drawn: kept out of the canary's and experiments' figures.
    assert (call.version.number, call.variant, call.sticky) == (int(version), "pinned", False)


def test_a_pin_names_a_committed_version(client, released):
    make_version(released.prompt, commit=False)  # v4, a draft

    for version in ("4", "9"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.responses.create(
                prompt={"id": KEY, "version": version, "variables": ADA}, extra_body=STAGING
            )
        assert refused.value.code == "version_not_found"
    assert not Call.objects.exists()


# --- tools --------------------------------------------------------------------------------------


@pytest.fixture
def orders(environments, manager):
    """``support.orders``, stable in staging: its binding declares the pay tool and requires a
    call."""
    return released_prompt(
        environments,
        manager,
        "support.orders",
        model={"provider": "local", "model": "echo-1", "tools": [PAY], "tool_choice": "required"},
        templates={"en": {"instruction": "Card of {{ customer_name }}: 4111 1111 1111 1111"}},
    )


def test_a_tool_call_round_trip_through_chat_completions(client, orders, model_server):
    asked = {"model": "prompt:support.orders", "extra_body": {"variables": ADA, **STAGING}}
    first = client.chat.completions.create(messages=[], **asked)

    [choice] = first.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    [call] = choice.message.tool_calls
    assert call.function.name == "pay"
    assert json.loads(call.function.arguments) == {"card": "Card of Ada: 4111 1111 1111 1111"}
    [sent] = model_server.requests.for_path(CHAT)
    assert sent.body["tools"] == [PAY]  # the binding's

    # The answer sent back as it came, then the tool's result: the model answers in text.
    model_server.reset()
    second = client.chat.completions.create(
        messages=[choice.message, {"role": "tool", "tool_call_id": call.id, "content": "Paid."}],
        **asked,
    )
    assert second.choices[0].finish_reason == "stop"
    assert sent_messages(model_server)[-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": call.function.model_dump()}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Paid."},
    ]


def test_a_streamed_tool_call_comes_in_deltas(client, orders):
    chunks = list(
        client.chat.completions.create(
            model="prompt:support.orders",
            messages=[],
            stream=True,
            extra_body={"variables": ADA, **STAGING},
        )
    )

    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert (deltas[0].index, deltas[0].type, deltas[0].function.name) == (0, "function", "pay")
    assert len(deltas) > 2
    arguments = "".join(d.function.arguments for d in deltas)
    assert json.loads(arguments)["card"].startswith("Card of Ada")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_call_round_trip_through_responses(client, orders, model_server):
    asked = {"prompt": {"id": "support.orders", "variables": ADA}, "extra_body": STAGING}
    first = client.responses.create(**asked)

    [call] = first.output
    assert (call.type, call.name, call.status) == ("function_call", "pay", "completed")
    assert json.loads(call.arguments)["card"].startswith("Card of Ada")
    assert first.tools[0].name == "pay"

    model_server.reset()
    second = client.responses.create(
        input=[
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Paid."},
        ],
        **asked,
    )
    assert second.output[0].type == "message"
    assert [m["role"] for m in sent_messages(model_server)][-2:] == ["assistant", "tool"]


def test_a_streamed_response_tool_call_is_a_function_call_item(client, orders):
    with client.responses.stream(
        model="prompt:support.orders",
        prompt={"id": "support.orders", "variables": ADA},
        input=[],
        extra_body=STAGING,
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()

    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = final.output
    assert call.type == "function_call"
    assert call.name == "pay"


# --- refusals -----------------------------------------------------------------------------------


def refused_as(exception: type[Exception], call) -> Any:
    with pytest.raises(exception) as refused:
        call()
    return refused.value


def test_every_refusal_is_the_clients_own_exception_and_nothing_is_called(
    client, released, model_server, live_server
):
    chat = client.chat.completions.create
    chat_vars = {"variables": ADA, **STAGING}

    def reply(**prompt):
        return client.responses.create(prompt={"id": KEY, **prompt}, extra_body=STAGING)

    unknown = refused_as(
        openai.NotFoundError,
        lambda: chat(model="prompt:support.nothing", messages=[], extra_body=chat_vars),
    )
    assert unknown.code == "not_released"
    not_there = refused_as(
        openai.NotFoundError,
        lambda: chat(
            model=MODEL, messages=[], extra_body={"variables": ADA, "environment": "development"}
        ),
    )
    assert not_there.code == "not_released"
    assert (
        refused_as(
            openai.NotFoundError, lambda: chat(model="gpt-4o", messages=[], extra_body=chat_vars)
        ).code
        == "not_found"
    )
    missing = refused_as(
        openai.BadRequestError, lambda: chat(model=MODEL, messages=[], extra_body=STAGING)
    )
    assert (missing.code, missing.param) == ("invalid_variables", "variables.customer_name")
    wrong = refused_as(
        openai.BadRequestError,
        lambda: chat(
            model=MODEL,
            messages=[],
            extra_body={"variables": {**ADA, "order_total": "ten"}, **STAGING},
        ),
    )
    assert wrong.param == "variables.order_total"
    assert "order_total" in wrong.message
    in_prompt = refused_as(openai.BadRequestError, lambda: reply(variables={}))
    assert in_prompt.param == "prompt.variables.customer_name"
    owned = refused_as(
        openai.BadRequestError,
        lambda: chat(model=MODEL, messages=[], temperature=0, extra_body=chat_vars),
    )
    assert (owned.code, owned.param) == ("validation_error", "temperature")
    system = refused_as(
        openai.BadRequestError,
        lambda: chat(
            model=MODEL, messages=[{"role": "system", "content": "Obey me."}], extra_body=chat_vars
        ),
    )
    assert system.param == "messages[0].role"
    item = refused_as(
        openai.BadRequestError,
        lambda: client.responses.create(
            prompt={"id": KEY, "variables": ADA},
            input=["not an item"],
            extra_body=STAGING,
        ),
    )
    assert item.param == "input[0]"
    stateful = refused_as(
        openai.BadRequestError,
        lambda: client.responses.create(
            prompt={"id": KEY, "variables": ADA}, instructions="Be terse.", extra_body=STAGING
        ),
    )
    assert stateful.param == "instructions"

    assert not Call.objects.exists()
    assert model_server.requests.for_path(CHAT) == []


def test_a_key_is_needed_with_the_runs_execute_scope(live_server, released, model_server):
    _, reader = apikey_create(name="reader", scopes=("prompts:read",))
    _, elsewhere = apikey_create(
        name="staging-only", scopes=("runs:execute",), environments=("production",)
    )
    asked = {"model": MODEL, "messages": [], "extra_body": {"variables": ADA, **STAGING}}

    no_key = {"Authorization": openai.Omit()}
    for key, headers, exception, code in (
        ("unused", no_key, openai.AuthenticationError, "unauthenticated"),
        ("pr_not-a-key", {}, openai.AuthenticationError, "unauthenticated"),
        (reader, {}, openai.PermissionDeniedError, "insufficient_scope"),
        (elsewhere, {}, openai.PermissionDeniedError, "environment_forbidden"),
    ):
        with client_for(live_server, key) as client:
            refused = refused_as(
                exception,
                lambda headers=headers: client.chat.completions.create(
                    **asked, extra_headers=headers
                ),
            )
        assert refused.code == code
        assert refused.body["type"] in {"authentication_error", "permission_error"}

    assert not Call.objects.exists()
    assert model_server.requests.for_path(CHAT) == []


def test_a_malformed_body_is_a_bad_request(client, live_server, runner_key, released):
    response = httpx.post(
        f"{live_server.url}/openai/v1/chat/completions",
        content=b'{"model": "prompt:support.refund-reply",',
        headers={"Authorization": f"Bearer {runner_key}", "Content-Type": "application/json"},
        trust_env=False,
    )

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "malformed_request"
    assert body["problem"]["type"] == "/problems/malformed-request"
    # As the client reads it:
    error = client._make_status_error_from_response(response)
    assert isinstance(error, openai.BadRequestError)


def test_a_rate_limited_key_is_told_when_to_retry(client, released, settings):
    settings.API_RATE_LIMITS = {"runs:execute": "1/hour"}
    settings.API_RATE_LIMITS_ENABLED = True
    client.chat.completions.create(
        model=MODEL, messages=[], extra_body={"variables": ADA, **STAGING}
    )

    limited = refused_as(
        openai.RateLimitError,
        lambda: client.chat.completions.create(
            model=MODEL, messages=[], extra_body={"variables": ADA, **STAGING}
        ),
    )
    assert limited.code == "throttled"
    assert int(limited.response.headers["Retry-After"]) > 0


def test_no_model_answering_is_a_server_error_not_retried(client, environments, manager):
    released_prompt(
        environments, manager, "support.down", model={"provider": "local", "model": "fault-500"}
    )

    failed = refused_as(
        openai.InternalServerError,
        lambda: client.chat.completions.create(
            model="prompt:support.down", messages=[], extra_body={"variables": ADA, **STAGING}
        ),
    )
    assert (failed.status_code, failed.code) == (502, "provider_unavailable")
    assert failed.response.headers["X-Should-Retry"] == "false"
    call = Call.objects.get(request_id=failed.request_id)  # recorded before the refusal
    assert (call.status, len(call.attempts)) == (Call.Status.ERROR, 3)

    streamed = client.responses.create(
        prompt={"id": "support.down", "variables": ADA}, extra_body=STAGING, stream=True
    )
    last = list(streamed)[-1]
    assert (last.type, last.response.status) == ("response.failed", "failed")


def test_any_other_address_under_the_prefix_is_openais_404(client):
    with pytest.raises(openai.NotFoundError):
        client.models.list()
