"""Change requests over the API (decision 0048), as two people's keys use them: a direct change in
production is refused with the way to propose it; the proposer's key proposes, the reviewer's key
(one its owner holds, acting as them) approves, the proposer applies; a key acting for no one
never reviews, nor does a proposer approve their own; a schedule is proposed and made the same
way (decision 0049)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.services import apikey_create
from releases.models import ChangeRequest, Schedule
from releases.services.schedule import schedules_apply

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"  # tests/conftest.py's released prompt
SCOPES = ("prompts:read", "releases:write")
URL = "/api/v1/change-requests"
CANARY = {
    "action": "canary_start",
    "environment": "production",
    "prompt": KEY,
    "version": 2,
    "percent": "10",
    "reason": "v2 is ready",
}


def client_of(owner=None, name: str = "key") -> APIClient:
    _, raw = apikey_create(name=name, scopes=SCOPES, owner=owner)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def people(reviewed):
    return (
        client_of(reviewed.alice, "alice-laptop"),
        client_of(reviewed.bob, "bob-laptop"),
        client_of(None, "ci"),
    )


def test_a_direct_change_in_production_is_refused_naming_the_way_to_propose_it(reviewed, people):
    alice, _, _ = people
    release = reviewed.released.release("production")

    response = alice.post(
        f"/api/v1/releases/production/{KEY}/canary",
        {"version": 2, "percent": "10"},
        format="json",
    )

    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "/problems/review-required"
    assert "POST /api/v1/change-requests" in problem["detail"]
    assert reviewed.released.release("production").revision == release.revision


def test_proposed_by_one_approved_by_another_applied_by_the_proposer(reviewed, people):
    alice, bob, ci = people
    proposed = alice.post(URL, CANARY, format="json")
    assert proposed.status_code == 201, proposed.json()
    request_id = proposed.json()["id"]
    assert proposed.json()["proposed_by"].startswith("alice via key:alice-laptop#")

    own = alice.post(f"{URL}/{request_id}/approve", {"comment": "mine"}, format="json")
    assert (own.status_code, own.json()["type"]) == (403, "/problems/own-change-request")
    nobody = ci.post(f"{URL}/{request_id}/approve", {"comment": "bot"}, format="json")
    assert (nobody.status_code, nobody.json()["type"]) == (403, "/problems/review-forbidden")
    early = alice.post(f"{URL}/{request_id}/apply", format="json")
    assert (early.status_code, early.json()["type"]) == (409, "/problems/change-request-state")

    approved = bob.post(f"{URL}/{request_id}/approve", {"comment": "Go."}, format="json")
    assert approved.status_code == 200
    assert approved.json()["state"] == "approved"
    applied = alice.post(f"{URL}/{request_id}/apply", format="json")

    assert applied.status_code == 200, applied.json()
    assert applied.json()["state"] == "applied"
    release = reviewed.released.release("production")
    assert (release.canary_version.number, release.canary_weight) == (2, 1000)
    assert alice.get(f"{URL}/{request_id}").json()["state"] == "applied"
    listed = alice.get(URL, {"environment": "production", "state": "applied"}).json()
    assert [r["id"] for r in listed["results"]] == [request_id]


def test_a_ramp_is_proposed_as_a_schedule_and_made_when_the_request_is_applied(reviewed, people):
    alice, bob, _ = people
    t0 = timezone.now()
    steps = [
        {
            "at": (t0 + timedelta(hours=1)).isoformat(),
            "action": "canary_start",
            "version": 2,
            "percent": "10",
        },
        {"at": (t0 + timedelta(hours=2)).isoformat(), "action": "canary_percent", "percent": "50"},
        {"at": (t0 + timedelta(hours=3)).isoformat(), "action": "canary_promote"},
    ]
    body = {
        "action": "schedule",
        "environment": "production",
        "prompt": KEY,
        "reason": "ramp v2 overnight",
        "steps": steps,
    }
    direct = alice.post(
        f"/api/v1/releases/production/{KEY}/schedule",
        {"steps": steps, "reason": "ramp v2 overnight"},
        format="json",
    )
    assert (direct.status_code, direct.json()["type"]) == (409, "/problems/review-required")

    proposed = alice.post(URL, body, format="json")
    assert proposed.status_code == 201, proposed.json()
    request_id = proposed.json()["id"]
    assert [s["action"] for s in proposed.json()["steps"]] == [
        "canary_start",
        "canary_percent",
        "canary_promote",
    ]
    assert (
        bob.post(f"{URL}/{request_id}/approve", {"comment": "ok"}, format="json").status_code == 200
    )
    applied = alice.post(f"{URL}/{request_id}/apply", format="json")
    assert applied.status_code == 200, applied.json()

    schedule = Schedule.objects.get(pk=ChangeRequest.objects.get(pk=request_id).schedule_id)
    assert schedule.state == Schedule.State.ACTIVE
    schedules_apply(now=t0 + timedelta(hours=3, minutes=1))
    release = reviewed.released.release("production")
    assert (release.stable_version.number, release.canary_version_id) == (2, None)


@pytest.mark.parametrize(
    ("proposal", "after"),
    [
        (
            {
                "action": "experiment_start",
                "name": "tone",
                "variants": [
                    {"name": "A", "version": 2, "percent": "50"},
                    {"name": "B", "version": 3, "percent": "50"},
                ],
            },
            lambda state: (
                [(v["name"], v["version"], v["weight"]) for v in state["experiment"]["variants"]]
                == [("A", 2, 5000), ("B", 3, 5000)]
            ),
        ),
        (
            {"action": "shadow_start", "versions": [3], "sample_percent": "5"},
            lambda state: (state["shadow"]["versions"], state["shadow"]["sample"]) == ([3], 500),
        ),
        (
            {"action": "deploy", "version": 3, "override_gates": True},
            lambda state: state["stable"] == 3,
        ),
    ],
    ids=["experiment_start", "shadow_start", "deploy"],
)
def test_each_verb_is_proposed_with_its_endpoints_arguments(reviewed, people, proposal, after):
    alice, _, _ = people
    body = {"environment": "production", "prompt": KEY, "reason": "worth a look", **proposal}

    proposed = alice.post(URL, body, format="json")

    assert proposed.status_code == 201, proposed.json()
    request = ChangeRequest.objects.get(pk=proposed.json()["id"])
    assert request.action == proposal["action"]
    assert after(request.after), request.after
