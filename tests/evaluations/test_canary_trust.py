"""Which reported outcomes a canary analysis trusts (decision 0017): the reporting key is stored on
every reported call and on feedback, and the policy's ``sources`` decide what the analysis counts.

Outcomes are sent as a service sends them, through ``POST /api/v1/events`` and
``POST /api/v1/calls/{request_id}/feedback``, each with its own key; the analysis then looks at
them with ``now=`` in the window (no clock is patched).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse

from evaluations.canary.policy import (
    DEFAULT_SOURCES,
    CanaryPolicyInvalid,
    canary_policy_validate,
    sources_text,
)
from evaluations.models import CanaryVerdict
from runs.models import Call
from tests.evaluations.test_canary_analysis import T0, check, look, start

Outcome = CanaryVerdict.Outcome


@pytest.fixture
def trusted(make_client):
    return make_client("events:write", name="checkout-service")


@pytest.fixture
def forger(make_client):
    return make_client("events:write", environments=("staging",), name="leaked")


def report(client, variant: str, n: int, *, version: int, errors: int = 0, **extra: Any) -> None:
    """``n`` sticky outcomes of one arm in the analysis window, the first ``errors`` failed."""
    events = [
        {
            "event_id": f"{variant}-{uuid.uuid4()}",
            "prompt": "support.refund-reply",
            "version": version,
            "environment": "staging",
            "variant": variant,
            "subject": f"user-{i}",
            "status": "error" if i < errors else "ok",
            "latency_ms": 100.0 + i % 50,
            "occurred_at": (T0 + timedelta(minutes=10)).isoformat(),
            **extra,
        }
        for i in range(n)
    ]
    response = client.post(
        "/api/v1/events", data=json.dumps({"events": events}), content_type="application/json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == n


def arms(client, *, canary_errors: int = 0, **extra: Any) -> None:
    report(client, "stable", 200, version=2, **extra)
    report(client, "canary", 200, version=3, errors=canary_errors, **extra)


# --- the key is stored --------------------------------------------------------------------------


def test_a_reported_call_keeps_the_key_that_reported_it_and_its_feedback(released, trusted):
    report(trusted, "stable", 2, version=2, feedback=0.5)
    report(trusted, "stable", 1, version=2)
    calls = list(Call.objects.order_by("id"))
    assert {(c.reported_by_key_id, c.reported_by_key_label) for c in calls} == {
        (trusted.key.pk, "checkout-service")
    }
    assert [c.feedback_key_id for c in calls] == [trusted.key.pk, trusted.key.pk, None]


def test_feedback_sent_later_keeps_the_key_that_sent_it(released, trusted, forger):
    report(trusted, "stable", 1, version=2)
    call = Call.objects.get()
    response = forger.post(
        f"/api/v1/calls/{call.request_id}/feedback", {"feedback": -1}, format="json"
    )
    assert response.status_code == 200, response.content
    call.refresh_from_db()
    assert (call.feedback, call.feedback_key_id, call.feedback_key_label) == (
        -1,
        forger.key.pk,
        "leaked",
    )
    assert call.reported_by_key_id == trusted.key.pk  # the report's own key is untouched


# --- the analysis counts only what it trusts ----------------------------------------------------


def test_untrusted_reports_do_not_move_the_verdict(released, manager, trusted, forger):
    analysis = start(released, manager, sources={"keys": [trusted.key.pk]})
    before = released.release("staging").revision
    arms(forger, canary_errors=200)  # a canary failing every call, as the leaked key tells it

    result = look(analysis)

    assert result.outcome == Outcome.WAIT
    assert result.verdict.figures["calls"] == {"canary": 0, "stable": 0}
    assert released.release("staging").revision == before
    assert released.release("staging").canary_version.number == 3


def test_trusted_reports_move_the_verdict_and_untrusted_ones_cannot_mask_them(
    released, manager, trusted, forger
):
    analysis = start(released, manager, sources={"keys": [trusted.key.pk]})
    arms(trusted, canary_errors=40)  # 20 % against 0 %
    arms(forger)  # a flood of good canary calls to dilute the failure

    result = look(analysis)

    assert result.outcome == Outcome.FAILED
    assert result.verdict.figures["calls"] == {"canary": 200, "stable": 200}
    assert released.release("staging").canary_version is None


def test_by_default_every_keys_reports_count(released, manager, forger):
    analysis = start(released, manager)
    assert analysis.policy["sources"] == DEFAULT_SOURCES
    arms(forger, canary_errors=40)

    assert look(analysis).outcome == Outcome.FAILED


def test_a_runs_only_policy_ignores_every_report(released, manager, trusted):
    analysis = start(released, manager, sources={"reports": False})
    arms(trusted, canary_errors=40)

    result = look(analysis)

    assert result.outcome == Outcome.WAIT
    assert result.verdict.figures["calls"] == {"canary": 0, "stable": 0}


def test_feedback_counts_only_from_a_trusted_key(released, manager, trusted, forger):
    analysis = start(released, manager, sources={"keys": [trusted.key.pk]})
    arms(trusted, feedback=0.5)
    # The leaked key sours the canary's trusted calls after the fact.
    for call in Call.objects.filter(variant="canary"):
        response = forger.post(
            f"/api/v1/calls/{call.request_id}/feedback", {"feedback": -1}, format="json"
        )
        assert response.status_code == 200

    result = look(analysis)

    assert result.outcome == Outcome.PASS
    feedback = check(result.verdict, "feedback")
    assert feedback["status"] == "not_judged"  # the canary arm has no trusted feedback left


# --- the policy -------------------------------------------------------------------------------


def test_the_policy_names_its_sources_and_refuses_nonsense() -> None:
    assert canary_policy_validate({})["sources"] == {"runs": True, "reports": True, "keys": None}
    assert canary_policy_validate({"sources": {"keys": [9, 3, 3]}})["sources"]["keys"] == [3, 9]
    bad = {
        "/analysis/sources": {"runs": False, "reports": False},
        "/analysis/sources/keys": {"reports": False, "keys": [3]},
        "/analysis/sources/runs": {"runs": "yes"},
        "/analysis/sources/owner": {"owner": 1},
    }
    for pointer, sources in bad.items():
        with pytest.raises(CanaryPolicyInvalid) as refused:
            canary_policy_validate({"sources": sources}, pointer="/analysis")
        assert [p.pointer for p in refused.value.problems] == [pointer], sources
    for keys in ([], [0], ["3"], [True], list(range(1, 200)), 3):
        with pytest.raises(CanaryPolicyInvalid):
            canary_policy_validate({"sources": {"keys": keys}})
    assert sources_text({"runs": True, "reports": True, "keys": [3]}) == (
        "the registry's runs; reports and feedback from keys #3"
    )


def test_the_api_takes_and_answers_the_sources(released, make_client, trusted) -> None:
    releaser = make_client("releases:write", "prompts:read")
    response = releaser.post(
        "/api/v1/releases/staging/support.refund-reply/canary",
        {"version": 3, "analysis": {"steps": [10, 100], "sources": {"keys": [trusted.key.pk]}}},
        format="json",
    )
    assert response.status_code == 200, response.content
    answer = releaser.get("/api/v1/releases/staging/support.refund-reply/canary/analysis").json()
    assert answer["policy"]["sources"] == {"runs": True, "reports": True, "keys": [trusted.key.pk]}


def test_the_api_refuses_a_policy_that_trusts_nothing(released, make_client) -> None:
    releaser = make_client("releases:write", "prompts:read")
    refused = releaser.post(
        "/api/v1/releases/staging/support.refund-reply/canary",
        {"version": 3, "analysis": {"sources": {"runs": False, "reports": False}}},
        format="json",
    )
    assert refused.status_code == 400, refused.content
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/analysis/sources"]


# --- the admin --------------------------------------------------------------------------------


def test_the_admin_shows_what_an_analysis_trusts_and_who_reported_a_call(
    released, manager, trusted, admin_client
) -> None:
    analysis = start(released, manager, sources={"keys": [trusted.key.pk]})
    page = admin_client.get(
        reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk])
    ).content.decode()
    assert f"reports and feedback from keys #{trusted.key.pk}" in page

    report(trusted, "stable", 1, version=2, feedback=1)
    call = Call.objects.get()
    page = admin_client.get(reverse("admin:runs_call_change", args=[call.pk])).content.decode()
    assert f"checkout-service (key #{trusted.key.pk})" in page


def test_analyses_stored_before_get_the_sources_they_counted(released, manager) -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "evaluations.migrations.0006_canary_policies_name_their_trusted_sources"
    )
    analysis = start(released, manager)
    old_policy = {k: v for k, v in analysis.policy.items() if k != "sources"}
    type(analysis).objects.filter(pk=analysis.pk).update(policy=old_policy)

    migration.fill_in_sources(apps, None)

    analysis.refresh_from_db()
    assert analysis.policy == {**old_policy, "sources": DEFAULT_SOURCES}
