"""Canary analysis over the API: a canary started with ``analysis``, and
/api/v1/releases/{environment}/{key}/canary/analysis[/resume|/stop], with personas and unhappy
paths (every refusal a problem document that changes nothing)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from evaluations.canary import services as canary
from evaluations.models import CanaryAnalysis
from registry.actors import Actor
from releases.services import release_canary_start
from tests.api.helpers import assert_problem

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
MANAGER = Actor(label="release-manager")
POLICY = {"steps": [10, 50, 100], "min_minutes": [15, 30, 0], "min_calls": 100}


def url(suffix: str = "canary/analysis", environment: str = "staging", key: str = KEY) -> str:
    return f"/api/v1/releases/{environment}/{key}/{suffix}"


@pytest.fixture
def staging_bot(make_client):
    """Release automation limited to staging: may change staging, not production."""
    return make_client("prompts:read", "releases:write", environments=("staging",))


def start_with_analysis(client, **body):
    return client.post(
        url("canary"), {"version": 3, "analysis": POLICY, "reason": "try v3", **body}, format="json"
    )


def held(released) -> CanaryAnalysis:
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy=POLICY,
        actor=MANAGER,
    )
    analysis.status, analysis.hold_reason = CanaryAnalysis.Status.HELD, "inconclusive"
    analysis.save()
    return analysis


# --- a canary started with an analysis ------------------------------------------------------------


def test_a_canary_starts_with_an_analysis_at_its_first_step(releaser_client, released):
    response = start_with_analysis(releaser_client)

    assert response.status_code == 200, response.json()
    assert response.json()["canary"]["percent"] == 10
    analysis = CanaryAnalysis.objects.get()
    assert analysis.policy["min_minutes"] == [15, 30, 0]
    assert analysis.policy["max_error_rate_increase"] == 1.0  # a default, stored
    assert analysis.created_by_label == f"key:release-bot#{releaser_client.key.pk}"


def test_a_canary_without_analysis_or_percent_is_a_400(releaser_client, released):
    response = releaser_client.post(url("canary"), {"version": 3}, format="json")

    body = assert_problem(response, 400, "/problems/validation-error")
    assert body["errors"] == [
        {
            "code": "percent_or_analysis",
            "detail": "Give the canary's percent, or an analysis policy.",
            "pointer": "/percent",
        }
    ]


def test_a_bad_policy_is_a_400_with_pointers_and_starts_no_canary(releaser_client, released):
    response = start_with_analysis(
        releaser_client, analysis={"steps": [50, 10], "alpha": 2, "retries": 1}
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert {e["pointer"] for e in body["errors"]} == {
        "/analysis/steps/1",
        "/analysis/alpha",
        "/analysis/retries",
    }
    assert released.release("staging").canary_version is None
    assert not CanaryAnalysis.objects.exists()


def test_a_percent_other_than_the_first_step_is_a_400(releaser_client, released):
    response = start_with_analysis(releaser_client, percent="25")

    body = assert_problem(response, 400, "/problems/validation-error")
    assert body["errors"][0]["code"] == "percent_not_first_step"


def test_a_stale_if_match_starts_nothing(releaser_client, released):
    revision = released.release("staging").revision
    response = releaser_client.post(
        url("canary"),
        {"version": 3, "analysis": POLICY},
        format="json",
        HTTP_IF_MATCH=f'"{revision - 1}"',
    )

    body = assert_problem(response, 409, "/problems/stale-revision")
    assert body["current_revision"] == revision
    assert not CanaryAnalysis.objects.exists()


def test_attach_with_a_stale_if_match_changes_nothing(releaser_client, released):
    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(5),
        actor=MANAGER,
    )
    revision = released.release("staging").revision

    response = releaser_client.post(
        url(), {"analysis": POLICY}, format="json", HTTP_IF_MATCH=str(revision - 1)
    )

    assert_problem(response, 409, "/problems/stale-revision")
    assert released.release("staging").canary_weight == 500
    assert not CanaryAnalysis.objects.exists()


# --- reading --------------------------------------------------------------------------------------


def test_the_analysis_reads_with_its_policy_times_and_verdicts(reader_client, released):
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy=POLICY,
        actor=MANAGER,
    )
    canary.canary_analysis_look(analysis_id=analysis.pk, now=timezone.now())  # a WAIT

    response = reader_client.get(url())

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["step"], body["percent"]) == ("running", 0, 10)
    started = analysis.step_started_at
    times = {name: datetime.fromisoformat(value) for name, value in body["times"].items()}
    assert times["earliest_promotion"] == started + timedelta(minutes=45)
    assert times["latest_verdict"] == started + timedelta(minutes=240)
    assert [v["outcome"] for v in body["verdicts"]] == ["wait"]
    assert body["verdicts"][0]["figures"]["calls"] == {"canary": 0, "stable": 0}


def test_reading_without_an_analysis_is_a_404(reader_client, released):
    assert_problem(reader_client.get(url()), 404, "/problems/canary-analysis-not-found")
    assert_problem(
        reader_client.get(url(environment="development")), 404, "/problems/release-not-found"
    )
    assert_problem(reader_client.get(url(key="no.such")), 404, "/problems/prompt-not-found")


def test_reading_needs_a_key_and_respects_environment_limits(
    anonymous_client, make_client, released
):
    held(released)
    production_reader = make_client("prompts:read", environments=("production",))

    assert anonymous_client.get(url()).status_code == 401
    assert_problem(production_reader.get(url()), 403, "/problems/environment-forbidden")


# --- attaching ------------------------------------------------------------------------------------


def test_attach_analyses_a_running_canary(staging_bot, released):
    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(5),
        actor=MANAGER,
    )

    response = staging_bot.post(url(), {"analysis": POLICY}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["percent"] == 10
    assert released.release("staging").canary_weight == 1000  # ramped up to the first step


def test_attach_without_a_canary_is_a_409(releaser_client, released):
    response = releaser_client.post(url(), {"analysis": POLICY}, format="json")
    assert_problem(response, 409, "/problems/no-canary")


def test_attach_twice_is_a_409(releaser_client, released):
    held(released)
    response = releaser_client.post(url(), {"analysis": POLICY}, format="json")
    assert_problem(response, 409, "/problems/canary-analysis-exists")


def test_attach_needs_the_releases_write_scope(reader_client, released):
    response = reader_client.post(url(), {"analysis": POLICY}, format="json")
    assert_problem(response, 403, "/problems/insufficient-scope")


def test_a_staging_key_cannot_attach_in_production(staging_bot, released):
    response = staging_bot.post(url(environment="production"), {"analysis": POLICY}, format="json")
    assert_problem(response, 403, "/problems/environment-forbidden")


def test_attach_needs_a_policy(releaser_client, released):
    body = assert_problem(
        releaser_client.post(url(), {}, format="json"), 400, "/problems/validation-error"
    )
    assert body["errors"][0]["pointer"] == "/analysis"


# --- resume and stop ------------------------------------------------------------------------------


def test_resume_runs_a_held_analysis_again(releaser_client, released):
    analysis = held(released)

    response = releaser_client.post(url("canary/analysis/resume"))

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["status_reason"]) == ("running", "")
    analysis.refresh_from_db()
    assert analysis.status == CanaryAnalysis.Status.RUNNING


def test_resume_of_a_running_analysis_is_a_409(releaser_client, released):
    held(released)
    releaser_client.post(url("canary/analysis/resume"))

    response = releaser_client.post(url("canary/analysis/resume"))

    assert_problem(response, 409, "/problems/canary-analysis-state")


def test_stop_leaves_the_canary_as_it_is(releaser_client, released):
    held(released)
    revision = released.release("staging").revision

    response = releaser_client.post(
        url("canary/analysis/stop"), {"reason": "judging by hand"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["status"] == "ended"
    assert response.json()["status_reason"] == (
        f"Stopped by key:release-bot#{releaser_client.key.pk}: judging by hand"
    )
    assert response.json()["times"] is None
    assert released.release("staging").revision == revision


@pytest.mark.parametrize("suffix", ["canary/analysis/resume", "canary/analysis/stop"])
def test_resume_and_stop_need_the_scope_and_an_analysis(
    reader_client, releaser_client, released, suffix
):
    assert_problem(reader_client.post(url(suffix)), 403, "/problems/insufficient-scope")
    assert_problem(releaser_client.post(url(suffix)), 404, "/problems/canary-analysis-not-found")


@pytest.mark.parametrize("suffix", ["canary/analysis/resume", "canary/analysis/stop"])
def test_resume_and_stop_answer_405_to_get(releaser_client, released, suffix):
    assert_problem(releaser_client.get(url(suffix)), 405, "/problems/method-not-allowed")


def test_the_analysis_answers_405_to_delete(releaser_client, released):
    assert_problem(releaser_client.delete(url()), 405, "/problems/method-not-allowed")


def test_a_gate_refusing_the_canary_starts_no_analysis_unless_overridden(releaser_client, released):
    from releases.gates import GateVerdict, promotion_check_register, promotion_check_unregister

    def refuse(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        return GateVerdict(passed=False, gate="golden-run", detail="No gate run of version 3.")

    promotion_check_register(refuse)
    try:
        refused = start_with_analysis(releaser_client)
        overridden = start_with_analysis(
            releaser_client, override_gates=True, reason="Hotfix; golden set broken."
        )
    finally:
        promotion_check_unregister(refuse)

    problem = assert_problem(refused, 409, "/problems/promotion-blocked")
    assert problem["gate"] == "golden-run"
    assert overridden.status_code == 200, overridden.json()
    analysis = CanaryAnalysis.objects.get()  # the refused start left none behind
    assert analysis.release.events.order_by("-id").first().overridden_gates == [
        {"gate": "golden-run", "detail": "No gate run of version 3.", "version": 3}
    ]
