"""POST /api/v1/calls/{request_id}/feedback: a verdict on a call the registry ran, sent later."""

from __future__ import annotations

import json

import pytest

from runs.models import Call

pytestmark = pytest.mark.django_db


@pytest.fixture
def ran(released, model_server, make_client) -> Call:
    """One call of support.refund-reply in staging, run through the API as a service would."""
    runner = make_client("runs:execute")
    response = runner.post(
        "/api/v1/prompts/support.refund-reply/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Ida"}}),
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-feedback-1",
    )
    assert response.status_code == 200
    return Call.objects.get(request_id="req-feedback-1")


@pytest.fixture
def reporter(make_client):
    """A service that reports outcomes and feedback (events:write)."""
    return make_client("events:write", name="reporter")


def feedback(client, request_id: str, body: object):
    return client.post(
        f"/api/v1/calls/{request_id}/feedback",
        data=json.dumps(body),
        content_type="application/json",
    )


def test_feedback_is_recorded_on_the_call_and_a_later_one_replaces_it(ran, reporter):
    response = feedback(reporter, "req-feedback-1", {"feedback": -1})
    assert response.status_code == 200
    assert response.json() == {
        "request_id": "req-feedback-1",
        "prompt": "support.refund-reply",
        "version": 2,
        "environment": "staging",
        "variant": "stable",
        "feedback": -1.0,
    }
    feedback(reporter, "req-feedback-1", {"feedback": 0.5})
    ran.refresh_from_db()
    assert ran.feedback == 0.5


@pytest.mark.parametrize("body", [{"feedback": 2}, {"feedback": "good"}, {}, {"feedback": None}])
def test_bad_feedback_is_a_400_problem_and_changes_nothing(ran, reporter, body):
    response = feedback(reporter, "req-feedback-1", body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["pointer"] == "/feedback"
    ran.refresh_from_db()
    assert ran.feedback is None


def test_unknown_calls_and_other_environments_are_404(ran, make_client, reporter):
    assert feedback(reporter, "no-such-request", {"feedback": 1}).status_code == 404
    production_only = make_client("events:write", environments=("production",))
    response = feedback(production_only, "req-feedback-1", {"feedback": 1})
    assert response.status_code == 404
    assert response.json()["type"].endswith("/call-not-found")
    ran.refresh_from_db()
    assert ran.feedback is None


def test_feedback_needs_the_events_write_scope(ran, reader_client, anonymous_client):
    assert feedback(anonymous_client, "req-feedback-1", {"feedback": 1}).status_code == 401
    refused = feedback(reader_client, "req-feedback-1", {"feedback": 1})
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "events:write"


@pytest.mark.parametrize("request_id", ["req%00feedback-1", "req-feedback-1%00", "x" * 101])
def test_a_request_id_no_call_can_have_is_a_404_problem(ran, reporter, request_id):
    response = feedback(reporter, request_id, {"feedback": 1})

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert Call.objects.get(request_id="req-feedback-1").feedback is None
