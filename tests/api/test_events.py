"""``POST /api/v1/events``: personas, the 202 answer, idempotency, limits and a real race."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.conf import settings

from runs.calls import subject_hash
from runs.events import MAX_EVENTS
from runs.models import Call
from runs.redaction import redact, redact_text
from tests.api.helpers import assert_problem
from tests.api.test_concurrency import by_status, race
from tests.factories import event

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"
EMAIL = "jane.doe@example.com"


def realistic(index: int) -> dict[str, Any]:
    """An outcome as a service's SDK reports it, every field filled in."""
    return event(
        event_id=str(uuid.uuid4()),
        variant="stable",
        sticky=True,
        subject=f"account-{index:08d}",
        locale="en",
        request_id=str(uuid.uuid4()),
        release_revision=12,
        provider="openai",
        model="gpt-4o-mini",
        latency_ms=812.4,
        time_to_first_token_ms=143.2,
        input_tokens=412,
        output_tokens=96,
        cost=0.0001194,
        feedback=1,
        schema_valid=True,
        inputs={"customer_name": "Jane", "order_total": 42.5},
        output="Hello Jane, your refund of 42.50 is on its way and should arrive within five days.",
    )


@pytest.fixture
def events_client(make_client):
    """A service reporting outcomes: may write events, nothing else."""
    return make_client("events:write", name="reporting-service")


def post(client, events: Any):
    return client.post(URL, {"events": events}, format="json")


# --- Personas ------------------------------------------------------------------------------------


def test_without_a_key_it_answers_401(anonymous_client, released):
    response = post(anonymous_client, [event()])

    assert_problem(response, 401, "/problems/unauthenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert not Call.objects.exists()


def test_a_key_without_events_write_gets_403(make_client, released):
    client = make_client("prompts:read", "runs:execute")

    response = post(client, [event()])

    body = assert_problem(response, 403, "/problems/insufficient-scope")
    assert body["required_scope"] == "events:write"
    assert not Call.objects.exists()


def test_a_key_limited_to_an_environment_reports_for_that_one_only(make_client, released):
    client = make_client("events:write", environments=("staging",))
    batch = [event(environment="production", version=1), event(event_id="in-staging")]

    response = post(client, batch)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 0
    assert rejected["errors"][0]["code"] == "environment_forbidden"
    assert rejected["errors"][0]["pointer"] == "/events/0/environment"
    assert list(Call.objects.values_list("event_id", flat=True)) == ["in-staging"]


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_methods_answer_405(events_client, method):
    response = getattr(events_client, method)(URL)

    assert_problem(response, 405, "/problems/method-not-allowed")


# --- Storing -------------------------------------------------------------------------------------


def test_it_stores_a_batch_redacted_and_answers_202(events_client, released):
    batch = [
        event(
            event_id="evt-1",
            subject="jane@example.org",
            inputs={"customer_name": "Jane", "contact": EMAIL},
            output=f"We wrote to {EMAIL}.",
        ),
        event(event_id="evt-2", status="error", error_class="RateLimited"),
    ]

    response = post(events_client, batch)

    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 2, "duplicates": [], "rejected": []}
    first = Call.objects.get(event_id="evt-1")
    assert first.source == Call.Source.REPORTED
    assert first.inputs == redact(batch[0]["inputs"])
    assert first.output == redact_text(batch[0]["output"])
    assert EMAIL not in json.dumps(first.inputs)
    assert EMAIL not in first.output
    assert first.subject_hash == subject_hash("jane@example.org")
    assert "jane@example.org" not in str(Call.objects.filter(pk=first.pk).values().get())
    assert Call.objects.get(event_id="evt-2").error_class == "RateLimited"


def test_a_repeated_batch_answers_202_with_duplicates_and_stores_nothing_new(
    events_client, released
):
    batch = [event(event_id="a"), event(event_id="b")]
    assert post(events_client, batch).status_code == 202

    response = post(events_client, batch)

    assert response.status_code == 202
    assert response.json() == {"accepted": 0, "duplicates": ["a", "b"], "rejected": []}
    assert Call.objects.count() == 2


def test_a_repeated_id_within_a_batch_is_stored_once(events_client, released):
    batch = [event(event_id="a", feedback=1), event(event_id="a", feedback=0), event(event_id="b")]

    response = post(events_client, batch)

    assert response.json() == {"accepted": 2, "duplicates": ["a"], "rejected": []}
    assert Call.objects.get(event_id="a").feedback == 1


def test_a_mixed_batch_stores_only_the_valid_events(events_client, released):
    batch = [
        event(event_id="good-1"),
        event(event_id="bad", latency_ms=-5),
        event(event_id="good-2"),
    ]

    response = post(events_client, batch)

    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [
        {
            "index": 1,
            "event_id": "bad",
            "errors": [
                {
                    "code": "out_of_range",
                    "detail": "Send a number >= 0.",
                    "pointer": "/events/1/latency_ms",
                }
            ],
        }
    ]
    assert sorted(Call.objects.values_list("event_id", flat=True)) == ["good-1", "good-2"]


def test_a_batch_of_duplicates_and_rejects_is_still_202(events_client, released):
    post(events_client, [event(event_id="a")])

    response = post(events_client, [event(event_id="a"), event(event_id="b", status="?")])

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (0, ["a"])
    assert [r["event_id"] for r in body["rejected"]] == ["b"]


# --- Refusals ------------------------------------------------------------------------------------


def test_an_all_invalid_batch_answers_400_and_stores_nothing(events_client, released):
    batch = [event(event_id="a", latency_ms=-1), event(event_id="b", prompt="support.nothing")]
    batch.append(event(event_id="c", unknown=1, feedback=3))
    batch.append(event(event_id="d", latency_ms="slow"))

    response = post(events_client, batch)

    body = assert_problem(response, 400, "/problems/validation-error")
    assert sorted((e["code"], e["pointer"]) for e in body["errors"]) == [
        ("out_of_range", "/events/0/latency_ms"),
        ("out_of_range", "/events/2/feedback"),
        ("unknown_field", "/events/2/unknown"),
        ("unknown_prompt", "/events/1/prompt"),
        ("wrong_type", "/events/3/latency_ms"),
    ]
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
        (3, "d"),
    ]
    assert not Call.objects.exists()


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"events": []}, "/events"),
        ({}, "/events"),
        ({"events": {"event_id": "a"}}, "/events"),
        ([{"event_id": "a"}], ""),
    ],
)
def test_a_body_without_a_list_of_events_answers_400(events_client, released, body, pointer):
    response = events_client.post(URL, body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == [pointer]


def test_a_body_that_is_not_json_answers_400(events_client, released):
    response = events_client.post(URL, "{not json", content_type="application/json")

    assert_problem(response, 400, "/problems/malformed-request")


def test_a_thousand_events_are_accepted(events_client, released):
    batch = [event(event_id=f"evt-{i:04d}") for i in range(MAX_EVENTS)]

    response = post(events_client, batch)

    assert response.status_code == 202, response.content[:500]
    assert response.json()["accepted"] == MAX_EVENTS
    assert Call.objects.count() == MAX_EVENTS


def test_a_thousand_and_one_events_answer_413_and_store_nothing(events_client, released):
    batch = [event(event_id=f"evt-{i:04d}") for i in range(MAX_EVENTS + 1)]

    response = post(events_client, batch)

    body = assert_problem(response, 413, "/problems/too-many-events")
    assert body["max_events"] == MAX_EVENTS
    assert not Call.objects.exists()


def test_a_thousand_realistic_events_fit_in_the_default_body_limit():
    body = json.dumps({"events": [realistic(i) for i in range(MAX_EVENTS)]}).encode()

    # Every field filled in and a short answer: the default 1 MiB leaves room for answers of
    # about 400 characters each; services with longer outputs send smaller batches.
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_it_is_described_in_the_openapi_schema(anonymous_client):
    schema = anonymous_client.get("/api/v1/schema/", {"format": "json"}).json()

    operation = schema["paths"]["/api/v1/events"]["post"]
    assert operation["operationId"] == "events_create"
    assert {"202", "400", "413"} <= set(operation["responses"])
    event_schema = schema["components"]["schemas"]["EventRequest"]
    assert {"event_id", "prompt", "version", "environment", "status"} <= set(
        event_schema["required"]
    )


# --- A real race ---------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_two_clients_posting_the_same_batch_at_once_store_each_event_once(
    make_client, released, round_
):
    batch = [event(event_id=f"race-{round_}-{i}") for i in range(200)]
    first, second = make_client("events:write"), make_client("events:write")

    responses = race(lambda: post(first, batch), lambda: post(second, batch))

    assert sorted(by_status(responses)) == [202], [r.content[:300] for r in responses]
    stored = list(Call.objects.values_list("event_id", flat=True))
    assert sorted(stored) == sorted(e["event_id"] for e in batch)
    # Whichever interleaving: every event is accounted for in each answer, none rejected.
    for response in responses:
        body = response.json()
        assert body["rejected"] == []
        assert body["accepted"] + len(body["duplicates"]) == len(batch)
