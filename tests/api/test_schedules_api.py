"""Scheduled changes over the API (api/schedules.py; decision 0049): schedule a canary's ramp,
read it with its next step, cancel it; every refusal a problem document naming what is wrong,
and nothing written."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from registry.actors import Actor
from releases.models import Schedule, ScheduledStep
from releases.services import release_canary_start, schedules_apply
from tests.api.helpers import assert_problem, errors_by_code

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
URL = f"/api/v1/releases/staging/{KEY}/schedule"
POLICY = {"steps": [10, 50, 100], "min_minutes": 30, "min_calls": 100}


def at(hours: float) -> str:
    return (timezone.now() + timedelta(hours=hours)).astimezone(UTC).isoformat()


RAMP = [
    {"at": None, "action": "canary_percent", "percent": 25},
    {"at": None, "action": "canary_percent", "percent": "50"},
    {"at": None, "action": "canary_promote"},
]


def ramp() -> list[dict]:
    return [{**step, "at": at(hours)} for step, hours in zip(RAMP, (1, 5, 6), strict=True)]


@pytest.fixture
def canary(released):
    return release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(10),
        actor=Actor(label="release-manager"),
    )


def test_a_ramp_is_scheduled_read_with_its_next_step_and_applied(releaser_client, canary):
    created = releaser_client.post(
        URL,
        {"steps": ramp(), "reason": "overnight"},
        format="json",
        HTTP_IF_MATCH=f'"{canary.revision}"',
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["state"] == "active"
    assert body["created_by"] == "key:release-bot#" + str(releaser_client.key.pk)
    assert body["revision"] == canary.revision
    assert [(s["action"], s["percent"], s["state"]) for s in body["steps"]] == [
        ("canary_percent", 25.0, "pending"),
        ("canary_percent", 50.0, "pending"),
        ("canary_promote", None, "pending"),
    ]
    assert body["summary"].startswith("25 % at ")
    assert body["summary"].count(", then ") == 2

    schedules_apply(now=timezone.now() + timedelta(hours=1, minutes=1))
    shown = releaser_client.get(URL).json()
    assert [s["state"] for s in shown["steps"]] == ["applied", "pending", "pending"]
    assert shown["steps"][0]["release_event"] is not None
    assert shown["summary"].startswith("50 % at ")


def test_cancelling_is_audited_and_a_second_cancel_is_refused(releaser_client, canary):
    releaser_client.post(URL, {"steps": ramp()}, format="json")
    cancelled = releaser_client.post(f"{URL}/cancel", {"reason": "launch moved"}, format="json")
    assert cancelled.status_code == 200, cancelled.content
    body = cancelled.json()
    assert body["state"] == "cancelled"
    assert body["ended_by"].startswith("key:release-bot#")
    assert body["end_reason"].endswith(": launch moved")
    assert {s["state"] for s in body["steps"]} == {"cancelled"}
    again = releaser_client.post(f"{URL}/cancel", {}, format="json")
    assert_problem(again, 409, "/problems/schedule-ended")


def test_a_step_in_the_past_is_a_400_naming_the_step(releaser_client, canary):
    steps = ramp()
    steps[0]["at"] = at(-1)
    response = releaser_client.post(URL, {"steps": steps}, format="json")
    body = assert_problem(response, 400, "/problems/validation-error")
    [error] = errors_by_code(body)["in_the_past"]
    assert error["pointer"] == "/steps/0/at"
    assert error["detail"].startswith("Step 1 (25 %) is due at ")
    assert not Schedule.objects.exists()


def test_steps_out_of_order_are_a_400(releaser_client, canary):
    steps = ramp()
    steps[1]["at"], steps[2]["at"] = steps[2]["at"], steps[1]["at"]
    response = releaser_client.post(URL, {"steps": steps}, format="json")
    body = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in errors_by_code(body)["steps_not_in_order"]] == ["/steps/2/at"]


def test_a_step_missing_or_adding_arguments_is_a_400(releaser_client, canary):
    steps = [
        {"at": at(1), "action": "canary_percent"},
        {"at": at(2), "action": "canary_promote", "version": 3},
    ]
    response = releaser_client.post(URL, {"steps": steps}, format="json")
    body = assert_problem(response, 400, "/problems/validation-error")
    assert {(e["code"], e["pointer"]) for e in body["errors"]} == {
        ("arguments_of_action", "/steps/0/percent"),
        ("arguments_of_action", "/steps/1/version"),
    }


def test_two_schedules_on_one_canary_are_a_409(releaser_client, canary):
    assert releaser_client.post(URL, {"steps": ramp()}, format="json").status_code == 201
    response = releaser_client.post(URL, {"steps": ramp()}, format="json")
    body = assert_problem(response, 409, "/problems/schedule-exists")
    assert "cancel it before scheduling again" in body["detail"]
    assert Schedule.objects.count() == 1


def test_a_canary_under_analysis_and_a_schedule_refuse_each_other(releaser_client, released):
    started = releaser_client.post(
        f"/api/v1/releases/staging/{KEY}/canary", {"version": 3, "analysis": POLICY}, format="json"
    )
    assert started.status_code == 200, started.content
    refused = releaser_client.post(URL, {"steps": ramp()}, format="json")
    assert_problem(refused, 409, "/problems/schedule-refused")

    releaser_client.post(f"/api/v1/releases/staging/{KEY}/canary/analysis/stop", {}, format="json")
    assert releaser_client.post(URL, {"steps": ramp()}, format="json").status_code == 201
    attach = releaser_client.post(
        f"/api/v1/releases/staging/{KEY}/canary/analysis", {"analysis": POLICY}, format="json"
    )
    assert_problem(attach, 409, "/problems/canary-scheduled")


def test_a_release_never_scheduled_is_a_404_and_reading_needs_no_write_scope(
    reader_client, released
):
    assert_problem(reader_client.get(URL), 404, "/problems/schedule-not-found")
    refused = reader_client.post(URL, {"steps": ramp()}, format="json")
    assert_problem(refused, 403, "/problems/insufficient-scope")


def test_a_key_limited_to_another_environment_cannot_schedule(make_client, canary):
    client = make_client("prompts:read", "releases:write", environments=("production",))
    response = client.post(URL, {"steps": ramp()}, format="json")
    assert_problem(response, 403, "/problems/environment-forbidden")
    assert not ScheduledStep.objects.exists()


def test_a_schedule_in_an_environment_that_requires_review_is_refused(releaser_client, reviewed):
    """The schedule itself is what is reviewed (decision 0048): scheduling directly would have
    beat apply the steps as the system, which review does not hold."""
    steps = [
        {"at": at(1), "action": "canary_start", "version": 2, "percent": 10},
        {"at": at(2), "action": "canary_promote"},
    ]
    answer = releaser_client.post(
        f"/api/v1/releases/production/{KEY}/schedule", {"steps": steps}, format="json"
    )
    body = assert_problem(answer, 409, "/problems/review-required")
    assert body["environment"] == "production"
    assert "change request" in body["detail"]
    assert not Schedule.objects.exists()
