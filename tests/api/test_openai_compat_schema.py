"""The OpenAI-compatible endpoints' OpenAPI description (api/openai_compat/schema.py, written by
hand) against what they answer, in process: bodies, refusals and headers validated with jsonschema
against the schema the service serves, strict (a member the description leaves out fails). And
what a live server cannot show: the database down, a client leaving a stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from releases.cache import release_cache
from releases.resolution import resolve
from runs.execution import run_prepare
from runs.models import Call
from tests.api.openapi import documented, served_openapi, strict
from tests.api.test_run import released_prompt
from tests.api.test_run_tools import PAY

pytestmark = pytest.mark.django_db

CHAT = "/openai/v1/chat/completions"
RESPONSES = "/openai/v1/responses"
ADA = {"customer_name": "Ada"}


@pytest.fixture(scope="module")
def openapi(django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        return strict(served_openapi())


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


def post(client, path: str, body: Any):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_a_chat_completion_and_a_response_are_as_documented(
    openapi, runner, released, model_server
):
    chat = post(runner, CHAT, {"model": "prompt:support.refund-reply", "variables": ADA})
    response = post(runner, RESPONSES, {"prompt": {"id": "support.refund-reply", "variables": ADA}})

    assert (chat.status_code, response.status_code) == (200, 200)
    documented(openapi, CHAT, "post", chat)
    documented(openapi, RESPONSES, "post", response)
    assert chat["X-Registry-Environment"] == "production"  # OPENAI_COMPAT_ENVIRONMENT's default


def test_tool_calls_are_as_documented(openapi, runner, environments, manager, model_server):
    model = {"provider": "local", "model": "echo-1", "tools": [PAY]}
    released_prompt(environments, manager, "support.orders", model=model)
    staging = {"environment": "staging", "variables": ADA}
    chat = post(runner, CHAT, {"model": "prompt:support.orders", **staging})
    response = post(
        runner,
        RESPONSES,
        {"prompt": {"id": "support.orders", "variables": ADA}, "environment": "staging"},
    )

    assert chat.json()["choices"][0]["message"]["tool_calls"]
    documented(openapi, CHAT, "post", chat)
    assert response.json()["output"][0]["type"] == "function_call"
    documented(openapi, RESPONSES, "post", response)


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "prompt:support.nothing"}, 404, "not_released", None),
        ({"model": "gpt-4o"}, 404, "not_found", None),
        (
            {"model": "prompt:support.refund-reply"},
            400,
            "invalid_variables",
            "variables.customer_name",
        ),
        ({"model": "prompt:support.refund-reply", "top_p": 1}, 400, "validation_error", "top_p"),
        ({"model": 7}, 400, "validation_error", "model"),
    ],
)
def test_refusals_are_documented_openai_errors(
    openapi, runner, released, model_server, body, status, code, param
):
    response = post(runner, CHAT, body)

    assert response.status_code == status
    documented(openapi, CHAT, "post", response)
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert response.json()["problem"]["status"] == status
    assert response["X-Request-Id"]


def test_other_media_and_other_methods_are_refused_in_openais_shape(runner, released):
    media = runner.post(CHAT, data="model=x", content_type="application/x-www-form-urlencoded")
    method = runner.get(RESPONSES)

    assert (media.status_code, media.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert (method.status_code, method["Allow"]) == (405, "POST")
    assert method.json()["error"]["type"] == "invalid_request_error"


def test_with_the_database_down_no_model_is_called(
    openapi, runner, released, model_server, database_down, monkeypatch
):
    from releases import cache

    monkeypatch.setattr(cache, "_cache", cache.ReleaseCache(listen=False))
    body = {"model": "prompt:support.refund-reply", "variables": ADA}
    post(runner, CHAT, body)  # the release and the key are held from now on
    model_server.reset()
    database_down()

    response = post(runner, CHAT, body)

    assert response.status_code == 503
    documented(openapi, CHAT, "post", response)
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"]
    assert model_server.requests.for_path("/v1/chat/completions") == []


def test_a_pin_outside_the_release_with_the_database_down_is_a_503(
    runner, released, model_server, database_down, monkeypatch
):
    from releases import cache

    monkeypatch.setattr(cache, "_cache", cache.ReleaseCache(listen=False))
    asked = {"prompt": {"id": "support.refund-reply", "variables": ADA}}
    post(runner, RESPONSES, asked)
    database_down()

    response = post(runner, RESPONSES, {"prompt": {**asked["prompt"], "version": "3"}})

    assert (response.status_code, response.json()["error"]["code"]) == (
        503,
        "database_unavailable",
    )


def test_a_client_leaving_a_stream_cancels_the_model_and_records_the_call(released, model_server):
    from api.openai_compat.streams import response_events

    model_server.faults.push("echo-1", "trickle-20")  # 200 tokens, 20 ms apart
    served = release_cache().lookup("staging", "support.refund-reply").release
    prepared = run_prepare(resolution=resolve(served, subject=None, locale=None), variables=ADA)
    events = response_events(prepared, subject=None, request_id="left-early", created_at=0.0)
    kinds = [next(events).split(b"\n", 1)[0] for _ in range(5)]
    events.close()

    assert kinds[-1] == b"event: response.output_text.delta"
    call = Call.objects.get(request_id="left-early")
    assert (call.status, call.error_class) == (Call.Status.ERROR, "cancelled")
    [attempt] = call.attempts
    assert attempt["detail"] == "The client left before the end of the stream."
