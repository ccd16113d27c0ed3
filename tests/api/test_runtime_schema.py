"""The runtime path's OpenAPI description (api/runtime_schema.py, written by hand) against what its
views really answer: each view is called for real, and its status, content type, documented
headers and body (successes, problem documents, server-sent events' payloads) are validated with
jsonschema against the schema /api/v1/schema/ serves. A field renamed or added in a view without
the description, or the other way round, fails here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.api.helpers import sse_events
from tests.api.openapi import component, documented, served_openapi, strict, validate
from tests.factories import PromptFactory, event, make_version

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
RESOLVE = f"/api/v1/prompts/{KEY}/resolve"
RENDER = f"/api/v1/prompts/{KEY}/render"
RUN = f"/api/v1/prompts/{KEY}/run"
BUNDLE = "/api/v1/environments/staging/bundle"
STREAM = "/api/v1/environments/staging/stream"
EVENTS = "/api/v1/events"
GREETING = {"environment": "staging", "variables": {"customer_name": "Ana"}}


@pytest.fixture(scope="module")
def openapi(django_db_blocker) -> dict[str, Any]:
    """The schema as served, with OpenAPI 3.0's ``nullable`` turned into JSON Schema, and strict:
    a member a view sends that the description leaves out fails validation too."""
    with django_db_blocker.unblock():
        return strict(served_openapi())


@pytest.fixture
def service(make_client):
    return make_client("prompts:read", "runs:execute", "events:write", name="service")


def post(client, path: str, body: Any):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def experiment_with_shadow(released) -> None:
    """Staging splits every subject between v2 and v3 and shadows v1: the answers' fullest
    shapes (a variant, a shadow list, a release state with an experiment)."""
    from decimal import Decimal

    from registry.actors import Actor
    from releases.services import release_experiment_start, release_shadow_start

    actor = Actor(label="tests")
    staging = released.environments["staging"]
    release_experiment_start(
        prompt=released.prompt,
        environment=staging,
        name="tone",
        variants=[("control", 2, Decimal(50)), ("treatment", 3, Decimal(50))],
        planned_calls=1000,
        actor=actor,
    )
    release_shadow_start(
        prompt=released.prompt, environment=staging, versions=[1], sample_percent=100, actor=actor
    )


# --- resolve -------------------------------------------------------------------------------------

R = "/api/v1/prompts/{key}/resolve"


def test_resolve_answers_a_resolution_with_its_etag_and_a_304(openapi, service, released):
    response = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"})

    assert response.status_code == 200
    described = documented(openapi, R, "get", response)
    assert "ETag" in described["headers"]
    etag = response["ETag"]
    again = service.get(
        RESOLVE, {"environment": "staging", "subject": "user-1"}, HTTP_IF_NONE_MATCH=etag
    )
    assert again.status_code == 304
    documented(openapi, R, "get", again)
    assert again["ETag"] == etag


def test_resolve_a_canary_answers_its_trace(openapi, service, released):
    from decimal import Decimal

    from registry.actors import Actor
    from releases.services import release_canary_start

    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(100),
        actor=Actor(label="tests"),
    )
    response = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"})

    assert response.json()["reason"] == "canary"
    documented(openapi, R, "get", response)


def test_resolve_an_experiment_with_a_shadow_answers_as_documented(openapi, service, released):
    experiment_with_shadow(released)

    response = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"})

    answer = response.json()
    assert (answer["reason"], answer["shadow"]) == ("experiment", [1])
    assert answer["variant"] in {"control", "treatment"}
    documented(openapi, R, "get", response)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({}, 400),  # no environment
        ({"environment": "staging\x00"}, 400),
        ({"environment": "staging", "locale": "not a locale!"}, 400),
        ({"environment": "development"}, 404),  # never released there
        ({"environment": "nowhere"}, 404),
    ],
)
def test_resolve_refusals_are_documented_problems(openapi, service, released, query, status):
    response = service.get(RESOLVE, query)

    assert response.status_code == status
    documented(openapi, R, "get", response)


def test_resolve_without_a_key_or_its_scope_is_a_documented_problem(openapi, make_client, released):
    anonymous = APIClient().get(RESOLVE, {"environment": "staging"})
    assert anonymous.status_code == 401
    documented(openapi, R, "get", anonymous)
    writer = make_client("prompts:write").get(RESOLVE, {"environment": "staging"})
    assert writer.status_code == 403
    documented(openapi, R, "get", writer)


def test_resolve_with_the_database_down_is_a_documented_503(
    openapi, service, released, database_down, monkeypatch
):
    from releases import cache

    monkeypatch.setattr(cache, "_cache", cache.ReleaseCache(listen=False))
    service.get(RESOLVE, {"environment": "staging"})  # the key is known from now on
    database_down()

    response = service.get(RESOLVE, {"environment": "production"})

    assert response.status_code == 503
    documented(openapi, R, "get", response)
    assert response["Retry-After"]


# --- render --------------------------------------------------------------------------------------


def test_render_answers_a_rendering(openapi, service, released):
    response = post(service, RENDER, GREETING)

    assert response.status_code == 200
    documented(openapi, "/api/v1/prompts/{key}/render", "post", response)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"environment": "staging", "variables": {"nobody": 1}}, 400),  # ProblemError items
        ({"environment": "staging", "variables": []}, 400),
        ({"environment": "production", "locale": "fr"}, 400),  # no such locale's template
    ],
)
def test_render_refusals_are_documented_problems(openapi, service, released, body, status):
    response = post(service, RENDER, body)

    assert response.status_code == status
    documented(openapi, "/api/v1/prompts/{key}/render", "post", response)


def test_render_of_other_media_is_a_documented_415(openapi, service, released):
    response = service.post(RENDER, data="environment=staging", content_type="text/plain")

    assert response.status_code == 415
    documented(openapi, "/api/v1/prompts/{key}/render", "post", response)


# --- run -----------------------------------------------------------------------------------------

RUN_PATH = "/api/v1/prompts/{key}/run"


def test_run_answers_a_run_answer_with_its_request_id(openapi, service, released, model_server):
    response = post(service, RUN, GREETING)

    assert response.status_code == 200
    described = documented(openapi, RUN_PATH, "post", response)
    assert "X-Request-Id" in described["headers"]
    assert response["X-Request-Id"] == response.json()["request_id"]


STRUCTURED = {
    "type": "object",
    "properties": {"reply": {"type": "string"}, "tone": {"type": "string"}},
    "required": ["reply", "tone"],
}


@pytest.mark.parametrize("stream", [False, True])
def test_a_run_a_fallback_answered_with_a_parsed_answer_is_as_documented(
    openapi, service, environments, manager, model_server, stream
):
    """The run answer's fullest shape: answered by a fallback after failed attempts, with the
    parsed JSON of a response schema; alone, and as a stream's ``done`` event."""
    prompt = PromptFactory(key="support.structured")
    model = {
        "provider": "local",
        "model": "fault-500",
        "response_schema": STRUCTURED,
        "fallbacks": [{"provider": "local", "model": "echo-1"}],
    }
    make_version(prompt, model=model)
    _deploy(prompt, environments, manager)

    response = post(
        service, "/api/v1/prompts/support.structured/run", {**GREETING, "stream": stream}
    )

    assert response.status_code == 200
    described = documented(openapi, RUN_PATH, "post", response)
    if stream:
        kind, answer = sse_events(response)[-1]
        assert kind == "done"
        validate(
            openapi,
            described["content"]["text/event-stream"]["schema"],
            {"event": kind, "data": json.dumps(answer)},
        )
        component(openapi, "RunAnswer", answer)
    else:
        answer = response.json()
    assert answer["answered_by"]["fallback"] is True
    assert {a["outcome"] for a in answer["attempts"]} == {"server_error", "ok"}
    assert set(answer["parsed"]) >= {"reply", "tone"}


def test_a_run_no_model_answers_is_a_documented_502(
    openapi, service, environments, manager, model_server
):
    prompt = PromptFactory(key="support.down")
    make_version(prompt, model={"provider": "local", "model": "fault-500"})
    _deploy(prompt, environments, manager)

    response = post(service, "/api/v1/prompts/support.down/run", GREETING)

    assert response.status_code == 502
    documented(openapi, RUN_PATH, "post", response)


def test_a_streamed_run_sends_documented_events(openapi, service, released, model_server):
    response = post(service, RUN, {**GREETING, "stream": True})

    assert response.status_code == 200
    described = documented(openapi, RUN_PATH, "post", response)
    event_schema = described["content"]["text/event-stream"]["schema"]
    payloads = {"start": "RunStreamStart", "token": "RunStreamToken", "done": "RunAnswer"}
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert (kinds[0], kinds[-1]) == ("start", "done")
    for kind, data in events:
        validate(openapi, event_schema, {"event": kind, "data": json.dumps(data)})
        component(openapi, payloads[kind], data)


def test_a_streamed_run_no_model_answers_ends_with_a_documented_error_event(
    openapi, service, environments, manager, model_server
):
    prompt = PromptFactory(key="support.down")
    make_version(prompt, model={"provider": "local", "model": "fault-500"})
    _deploy(prompt, environments, manager)

    response = post(service, "/api/v1/prompts/support.down/run", {**GREETING, "stream": True})

    kind, data = sse_events(response)[-1]
    assert kind == "error"
    component(openapi, "RunFailure", data)


def _deploy(prompt, environments, manager) -> None:
    from releases.services import release_deploy

    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )


# --- bundle and stream ---------------------------------------------------------------------------

B = "/api/v1/environments/{environment}/bundle"


def test_bundle_answers_a_bundle_with_its_etag_and_a_304(openapi, service, released):
    from decimal import Decimal

    from registry.actors import Actor
    from releases.services import release_canary_start, release_shadow_start

    actor = Actor(label="tests")
    staging = released.environments["staging"]
    release_canary_start(
        prompt=released.prompt, environment=staging, version=3, percent=Decimal(10), actor=actor
    )
    release_shadow_start(
        prompt=released.prompt, environment=staging, versions=[1], sample_percent=5, actor=actor
    )
    response = service.get(BUNDLE)

    assert response.status_code == 200
    assert "ETag" in documented(openapi, B, "get", response)["headers"]
    again = service.get(BUNDLE, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    documented(openapi, B, "get", again)


def test_bundle_with_an_experiment_is_as_documented(openapi, service, released):
    experiment_with_shadow(released)

    response = service.get(BUNDLE)

    state = response.json()["releases"][KEY]["state"]
    assert state["experiment"]["name"] == "tone"
    assert state["shadow"]["versions"] == [1]
    documented(openapi, B, "get", response)


def test_bundle_refusals_are_documented_problems(openapi, service, make_client, released):
    unknown = service.get("/api/v1/environments/nowhere/bundle")
    assert unknown.status_code == 404
    documented(openapi, B, "get", unknown)
    limited = make_client("prompts:read", environments=("production",)).get(BUNDLE)
    assert limited.status_code == 403
    documented(openapi, B, "get", limited)


def test_stream_says_hello_as_documented(openapi, service, released, settings):
    settings.RELEASE_STREAM_MAX_SECONDS = 0  # the hello, then the end

    response = service.get(STREAM)

    assert response.status_code == 200
    path = "/api/v1/environments/{environment}/stream"
    described = documented(openapi, path, "get", response)
    events = sse_events(response)
    assert [kind for kind, _ in events] == ["hello"]
    kind, data = events[0]
    validate(
        openapi,
        described["content"]["text/event-stream"]["schema"],
        {"event": kind, "data": json.dumps(data)},
    )
    component(openapi, "ReleaseStreamHello", data)
    assert data["etag"] == service.get(BUNDLE)["ETag"]


def test_a_release_change_event_is_as_documented(openapi, service, released, settings):
    """A real change heard by an open stream (from the database, checked every second without
    Redis): its ``release`` event as the stream sends it."""
    from decimal import Decimal

    from registry.actors import Actor
    from releases.services import release_canary_start

    settings.RELEASE_STREAM_MAX_SECONDS = 10  # bounds the wait should the event never come
    settings.REDIS_URL = ""
    response = service.get(STREAM)
    chunks = iter(response.streaming_content)
    assert b"event: hello\n" in next(chunks)
    release = release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(10),
        actor=Actor(label="tests"),
    )

    chunk = next(chunk for chunk in chunks if b"event: " in chunk)
    response.close()

    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().splitlines())
    kind, data = fields["event"], json.loads(fields["data"])
    assert (kind, data) == ("release", {"prompt": KEY, "revision": release.revision})
    path = "/api/v1/environments/{environment}/stream"
    validate(
        openapi,
        documented(openapi, path, "get", response)["content"]["text/event-stream"]["schema"],
        {"event": kind, "data": json.dumps(data)},
    )
    component(openapi, "ReleaseStreamChange", data)


# --- events (a DRF view: its schema is generated, its refusals added by api.schema) -------------


def test_events_answers_as_documented(openapi, service, released):
    accepted = post(service, EVENTS, {"events": [event(event_id="e-1")]})
    assert accepted.status_code == 202, accepted.content
    documented(openapi, EVENTS, "post", accepted)
    refused = post(service, EVENTS, {"events": []})
    assert refused.status_code == 400
    documented(openapi, EVENTS, "post", refused)
