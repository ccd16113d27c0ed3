"""Canary analysis: each verdict from recorded calls, the policy, its derived times, starting and
attaching, resume and stop, and two workers looking at once.

Calls are written directly with the latencies, errors, costs and feedback a test needs, inside the
window; every function takes ``now=`` so no clock is patched.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from evaluations.canary import services as canary
from evaluations.canary.policy import (
    CanaryPolicyInvalid,
    canary_policy_times,
    canary_policy_validate,
)
from evaluations.models import CanaryAnalysis, CanaryVerdict
from releases.errors import ReleaseStateInvalid
from releases.gates import GateVerdict, promotion_check_register, promotion_check_unregister
from releases.models import Release, ReleaseEvent
from releases.services import release_canary_set_percent, release_canary_start
from runs.models import Call
from tests.metrics import counting

Outcome = CanaryVerdict.Outcome
Status = CanaryAnalysis.Status
T0 = timezone.now().replace(microsecond=0) - timedelta(hours=6)
LOOK = T0 + timedelta(minutes=45)  # past min_minutes (30), before max_minutes (120)

# Small enough for a test to write both arms, wide enough margins that identical arms pass.
POLICY = {
    "steps": [50, 75, 100],
    "min_minutes": 30,
    "min_calls": 200,
    "max_minutes": 120,
    "max_error_rate_increase": 2.5,
    "max_schema_failure_increase": 2.5,
    "max_p95_latency_increase": 20,
    "max_cost_increase": 20,
    "max_feedback_decrease": 0.2,
    "measure_retries": 1,
}


def start(released, manager, **policy: Any) -> CanaryAnalysis:
    """v3 canaried in staging (stable: v2) under an analysis started at T0."""
    return canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={**POLICY, **policy},
        actor=manager,
        reason="try v3",
        now=T0,
    )


def record(
    release: Release,
    variant: str,
    n: int,
    *,
    errors: int = 0,
    latency=lambda i: 100.0 + i % 50,
    cost=None,
    feedback=None,
    schema_valid=None,
    sticky: bool = True,
    at: datetime = T0 + timedelta(minutes=10),
    cache: str = "",
) -> None:
    """``n`` calls of one arm; the first ``errors`` of them failed."""
    version = release.canary_version if variant == "canary" else release.stable_version
    Call.objects.bulk_create(
        Call(
            request_id=f"{variant}-{uuid.uuid4()}",
            source=Call.Source.REPORTED,
            created_at=at + timedelta(seconds=i % 600),
            prompt_id=release.prompt_id,
            version=version,
            environment_id=release.environment_id,
            variant=variant,
            sticky=sticky,
            latency_ms=latency(i),
            cost=cost(i) if cost else None,
            feedback=feedback(i) if feedback else None,
            schema_valid=schema_valid(i) if schema_valid else None,
            status=Call.Status.ERROR if i < errors else Call.Status.OK,
            cache=cache,
        )
        for i in range(n)
    )


def both_arms(release: Release, n: int = 200, **canary_calls: Any) -> None:
    """Stable and canary alike, except for what ``canary_calls`` changes in the canary."""
    record(release, "stable", n)
    record(release, "canary", n, **canary_calls)


def look(analysis: CanaryAnalysis, at: datetime = LOOK) -> canary.Look:
    result = canary.canary_analysis_look(analysis_id=analysis.pk, now=at)
    analysis.refresh_from_db()
    return result


def check(verdict: CanaryVerdict, name: str) -> dict[str, Any]:
    return next(c for c in verdict.figures["checks"] if c["name"] == name)


# --- each verdict from recorded calls -------------------------------------------------------------


def test_it_waits_below_the_minimum_sample_and_stores_the_wait_once(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    both_arms(release, n=150)  # min_calls is 200

    first = look(analysis)
    second = look(analysis, LOOK + timedelta(minutes=1))

    assert first.outcome == second.outcome == Outcome.WAIT
    assert first.verdict is not None
    assert second.verdict is None
    assert first.verdict.figures["calls"] == {"canary": 150, "stable": 150}
    assert analysis.status == Status.RUNNING
    assert analysis.last_looked_at == LOOK + timedelta(minutes=1)
    assert released.release("staging").revision == release.revision


def test_it_waits_for_the_minimum_minutes_even_with_the_sample(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"))

    assert look(analysis, T0 + timedelta(minutes=29)).outcome == Outcome.WAIT


def test_a_pass_ramps_to_the_next_step_and_the_event_carries_the_figures(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"))

    result = look(analysis)

    release = released.release("staging")
    assert result.outcome == Outcome.PASS
    assert release.canary_weight == 7500
    assert (analysis.step, analysis.step_started_at, analysis.status) == (1, LOOK, Status.RUNNING)
    event = result.verdict.release_event
    assert event.action == ReleaseEvent.Action.CANARY_PERCENT
    assert event.actor_label == "canary-analysis"
    assert event.reason == result.verdict.summary
    assert "passed: ramped to 75 %" in event.reason
    assert "error rate 0.00 % vs 0.00 %" in event.reason
    assert all(check(result.verdict, n)["passed"] for n in ("error_rate", "p95_latency"))
    # Optional signals with no data are reported, not judged.
    assert check(result.verdict, "feedback")["status"] == "not_judged"


def test_each_stored_verdict_is_counted_once_its_look_commits(
    released, manager, django_capture_on_commit_callbacks
):
    analysis = start(released, manager)
    release = released.release("staging")
    labels = {"prompt": "support.refund-reply", "environment": "staging"}
    waits = counting("promptregistry_canary_verdicts_total", **labels, verdict="wait")
    passes = counting("promptregistry_canary_verdicts_total", **labels, verdict="pass")
    both_arms(release, n=150)  # min_calls is 200

    with django_capture_on_commit_callbacks(execute=True):
        look(analysis)
        look(analysis, LOOK + timedelta(minutes=1))  # the same wait: not stored again
    assert (waits(), passes()) == (1, 0)

    both_arms(release, n=50)
    with django_capture_on_commit_callbacks() as committed:  # held until the commit
        assert look(analysis, LOOK + timedelta(minutes=2)).outcome == Outcome.PASS
    assert passes() == 0
    for callback in committed:
        callback()
    assert (waits(), passes()) == (1, 1)


def test_a_pass_at_the_last_step_promotes(released, manager):
    analysis = start(released, manager, steps=[50, 100])
    both_arms(released.release("staging"))

    result = look(analysis)

    release = released.release("staging")
    assert result.outcome == Outcome.PROMOTE
    assert analysis.status == Status.PROMOTED
    assert release.stable_version.number == 3
    assert release.canary_version is None
    assert result.verdict.release_event.action == ReleaseEvent.Action.CANARY_PROMOTE


def test_a_failed_error_rate_aborts_the_canary_with_the_figures_in_the_reason(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"), errors=40)  # 20 % against 0 %

    result = look(analysis)

    release = released.release("staging")
    assert result.outcome == Outcome.FAILED
    assert analysis.status == Status.ROLLED_BACK
    assert release.canary_version is None
    assert release.stable_version.number == 2
    event = release.events.first()
    assert event.action == ReleaseEvent.Action.CANARY_ABORT
    assert result.verdict.release_event == event
    assert "failed: rolled back" in event.reason
    assert "error rate 20.00 % vs 0.00 % (20.00 pp, CI" in event.reason
    figures = check(result.verdict, "error_rate")
    assert figures["passed"] is False
    assert figures["ci"][0] > POLICY["max_error_rate_increase"]
    assert figures["p_value"] < 0.001


def test_a_slower_p95_fails_by_mann_whitney(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"), latency=lambda i: 300.0 + i % 50)

    result = look(analysis)

    figures = check(result.verdict, "p95_latency")
    assert result.outcome == Outcome.FAILED
    assert figures["status"] == "failed"
    assert figures["increase_percent"] > 100
    assert figures["p_value"] < 0.001
    assert figures["rank_biserial"] == 1.0


def test_response_cache_hits_are_left_out_of_latency_and_cost(released, manager):
    # Stable's warm cache answers half its calls in a millisecond for nothing; the canary's
    # model calls are as fast and as cheap as stable's: no regression (decision 0050).
    analysis = start(released, manager)
    release = released.release("staging")
    model = {"latency": lambda i: 300.0 + i % 50, "cost": lambda i: Decimal("0.001")}
    record(release, "stable", 200, **model)
    record(release, "stable", 200, latency=lambda i: 1.0, cost=lambda i: Decimal(0), cache="exact")
    record(release, "canary", 400, **model)

    result = look(analysis)

    assert result.outcome == Outcome.PASS
    assert all(check(result.verdict, n)["passed"] for n in ("p95_latency", "cost", "error_rate"))


def test_a_costlier_canary_fails(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    record(release, "stable", 200, cost=lambda i: Decimal("0.001") + Decimal(i % 7) / 100000)
    record(release, "canary", 200, cost=lambda i: Decimal("0.002") + Decimal(i % 7) / 100000)

    result = look(analysis)

    figures = check(result.verdict, "cost")
    assert result.outcome == Outcome.FAILED
    assert figures["status"] == "failed"
    assert figures["increase_percent"] > 90


def test_a_higher_schema_failure_rate_fails(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    record(release, "stable", 200, schema_valid=lambda i: True)
    record(release, "canary", 200, schema_valid=lambda i: i >= 40)

    result = look(analysis)

    figures = check(result.verdict, "schema_failure_rate")
    assert result.outcome == Outcome.FAILED
    assert (figures["canary"], figures["stable"], figures["passed"]) == (20.0, 0.0, False)


def test_worse_feedback_fails(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    record(release, "stable", 200, feedback=lambda i: 0.6 if i % 2 else 0.4)
    record(release, "canary", 200, feedback=lambda i: -0.4 if i % 2 else -0.6)

    result = look(analysis)

    figures = check(result.verdict, "feedback")
    assert result.outcome == Outcome.FAILED
    assert figures["difference"] == pytest.approx(-1.0)
    assert figures["ci"][1] < -POLICY["max_feedback_decrease"]


def test_a_canary_that_disagrees_with_live_in_its_shadow_runs_fails(released, manager):
    from runs.models import ShadowRun

    analysis = start(released, manager)
    release = released.release("staging")
    both_arms(release)
    live = Call.objects.filter(variant="stable")[:60]
    ShadowRun.objects.bulk_create(
        ShadowRun(
            call=call,
            release=release,
            version=release.canary_version,
            kind=ShadowRun.Kind.CANDIDATE,
            status=ShadowRun.Status.OK,
            created_at=T0 + timedelta(minutes=20),
            exact_match=i < 10,  # 10 of 60 answered as live did
        )
        for i, call in enumerate(live)
    )

    result = look(analysis)

    figures = check(result.verdict, "shadow_agreement")
    assert result.outcome == Outcome.FAILED
    assert figures["canary"] == pytest.approx(100 / 6)
    assert figures["ci"][1] < 80


def test_without_shadow_runs_there_is_no_shadow_check(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"))

    result = look(analysis)

    assert "shadow_agreement" not in {c["name"] for c in result.verdict.figures["checks"]}


def test_no_sample_by_the_deadline_is_retried_then_held(released, manager):
    analysis = start(released, manager)  # measure_retries: 1
    both_arms(released.release("staging"), n=20)
    late = T0 + timedelta(minutes=121)

    first = look(analysis, late)
    assert first.outcome == Outcome.UNMEASURED
    assert (analysis.status, analysis.unmeasured_looks) == (Status.RUNNING, 1)

    second = look(analysis, late + timedelta(minutes=1))
    assert second.outcome == Outcome.UNMEASURED
    assert analysis.status == Status.HELD
    assert "could not measure" in analysis.hold_reason
    assert "held" in analysis.hold_reason
    assert analysis.verdicts.filter(outcome=Outcome.UNMEASURED).count() == 2
    assert released.release("staging").canary_weight == 5000  # a hold changes no traffic


def test_a_look_that_fails_to_measure_is_unmeasured_and_retried(released, manager):
    from django.test import override_settings

    analysis = start(released, manager)
    both_arms(released.release("staging"))

    with override_settings(CANARY_ANALYSIS_SAMPLE_CAP="many"):  # reading the sample raises
        result = look(analysis)

    assert result.outcome == Outcome.UNMEASURED
    assert result.verdict.figures["error"].startswith("TypeError")
    assert (analysis.status, analysis.unmeasured_looks) == (Status.RUNNING, 1)
    assert look(analysis, LOOK + timedelta(minutes=1)).outcome == Outcome.PASS
    assert analysis.unmeasured_looks == 0


def test_a_tick_past_its_soft_time_limit_stops_and_leaves_the_analysis_running(
    released, manager, monkeypatch
):
    from celery.exceptions import SoftTimeLimitExceeded

    analysis = start(released, manager)
    both_arms(released.release("staging"))

    def out_of_time(*args: Any, **kwargs: Any) -> None:
        raise SoftTimeLimitExceeded()

    with monkeypatch.context() as patched:
        patched.setattr(canary.metrics, "srm_check", out_of_time)
        # Not a failed measurement (no verdict, no unmeasured look): the tick ends, the look's
        # transaction rolls back, and the analysis waits for the next tick.
        with pytest.raises(SoftTimeLimitExceeded):
            canary.canary_analyses_look(now=LOOK)

    analysis.refresh_from_db()
    assert (analysis.status, analysis.unmeasured_looks) == (Status.RUNNING, 0)
    assert not analysis.verdicts.exists()
    assert [look.outcome for look in canary.canary_analyses_look(now=LOOK)] == [Outcome.PASS]


def test_a_handful_of_latencies_is_not_a_pass(released, manager):
    analysis = start(released, manager)
    # 200 calls per arm, but only 10 reported a latency: a p95 of 10 values shows nothing.
    both_arms(released.release("staging"), latency=lambda i: 100.0 if i < 10 else None)

    result = look(analysis)

    figures = check(result.verdict, "p95_latency")
    assert figures["status"] == "unmeasured"
    assert figures["n_canary"] == 10
    assert result.outcome == Outcome.UNMEASURED
    assert released.release("staging").canary_weight == 5000


def test_an_inconclusive_look_holds_for_a_person(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    record(release, "stable", 200, errors=2)
    record(release, "canary", 200, errors=8)  # +3 pp, but the interval crosses the 2.5 margin

    result = look(analysis)

    figures = check(result.verdict, "error_rate")
    assert figures["status"] == "unclear"
    assert figures["ci"][0] < POLICY["max_error_rate_increase"] < figures["ci"][1]
    assert result.outcome == Outcome.INCONCLUSIVE
    assert analysis.status == Status.HELD
    assert "inconclusive" in analysis.hold_reason
    assert result.verdict.release_event is None
    assert released.release("staging").canary_weight == 5000


def test_a_sample_ratio_mismatch_holds(released, manager):
    analysis = start(released, manager)  # 50 %: the arms should be about even
    release = released.release("staging")
    record(release, "stable", 400)
    record(release, "canary", 200)

    result = look(analysis)

    assert result.outcome == Outcome.INCONCLUSIVE
    assert result.verdict.figures["srm"]["mismatch"] is True
    assert "sample ratio mismatch" in analysis.hold_reason


def test_a_canary_changed_by_hand_ends_the_analysis(released, manager):
    analysis = start(released, manager)
    release_canary_set_percent(
        prompt=released.prompt,
        environment=released.environments["staging"],
        percent=Decimal(60),
        actor=manager,
    )
    both_arms(released.release("staging"))

    result = look(analysis)

    assert result.outcome == "ended"
    assert result.verdict is None
    assert analysis.status == Status.ENDED
    assert "60 % by hand" in analysis.hold_reason
    assert released.release("staging").canary_weight == 6000


def test_non_sticky_calls_are_left_out(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    both_arms(release)
    record(release, "canary", 300, errors=300, sticky=False)

    result = look(analysis)

    assert result.outcome == Outcome.PASS
    assert result.verdict.figures["calls"] == {"canary": 200, "stable": 200}


def test_calls_before_the_step_started_are_left_out(released, manager):
    analysis = start(released, manager)
    release = released.release("staging")
    record(release, "canary", 300, errors=300, at=T0 - timedelta(hours=1))
    both_arms(release)

    assert look(analysis).outcome == Outcome.PASS


def test_a_promotion_gate_that_refuses_holds_instead_of_promoting(released, manager):
    analysis = start(released, manager, steps=[50])

    def refuse(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        return GateVerdict(passed=False, gate="golden", detail="Pass rate 80 % < 95 %.")

    promotion_check_register(refuse)
    try:
        both_arms(released.release("staging"))
        result = look(analysis)
    finally:
        promotion_check_unregister(refuse)

    assert result.outcome == Outcome.INCONCLUSIVE
    assert analysis.status == Status.HELD
    assert "golden gate refuses" in analysis.hold_reason
    assert released.release("staging").canary_version.number == 3


def test_the_beat_tick_looks_at_running_analyses_only(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"))

    looks = canary.canary_analyses_look(now=LOOK)
    again = canary.canary_analyses_look(now=LOOK)  # step 2 opened at LOOK: nothing yet

    assert [look.outcome for look in looks] == [Outcome.PASS]
    assert [look.outcome for look in again] == [Outcome.WAIT]
    canary.canary_analysis_stop(analysis_id=analysis.pk, actor=manager)
    assert canary.canary_analyses_look(now=LOOK) == []


def test_a_look_reads_a_fixed_number_of_queries_whatever_the_traffic(released, manager):
    from django.test.utils import CaptureQueriesContext

    from evaluations.canary.metrics import window_measure

    start(released, manager)
    release = released.release("staging")
    counts = []
    for n in (50, 500):
        both_arms(release, n=n)
        with CaptureQueriesContext(connection) as queries:
            window = window_measure(release=release, since=T0, until=LOOK)
        counts.append(len(queries))
    assert window.canary.calls == 550
    assert counts == [5, 5]


def test_playground_calls_never_count_in_a_canary_window(released, manager):
    """Decision 0036: an author's playground run is no one's traffic, whatever its row says."""
    from evaluations.canary.metrics import window_measure

    start(released, manager)
    release = released.release("staging")
    both_arms(release, n=20)
    record(release, "canary", 30, errors=30)
    Call.objects.filter(variant="canary", status=Call.Status.ERROR).update(
        source=Call.Source.PLAYGROUND
    )

    window = window_measure(release=release, since=T0, until=LOOK)
    assert (window.canary.calls, window.canary.errors) == (20, 0)
    trusting = {"runs": True, "reports": True, "keys": None}
    window = window_measure(release=release, since=T0, until=LOOK, sources=trusting)
    assert (window.canary.calls, window.canary.errors) == (20, 0)


# --- the policy and its derived times -------------------------------------------------------------


def test_the_policy_is_stored_with_its_defaults():
    policy = canary_policy_validate({"steps": [10, 100], "min_calls": [300, 300]})

    assert policy["steps"] == [10, 100]
    assert policy["min_calls"] == [300, 300]
    assert policy["min_minutes"] == [30, 30]
    assert policy["max_minutes"] == [240, 240]
    assert policy["alpha"] == 0.05
    assert policy["measure_retries"] == 3
    assert canary_policy_validate(None)["steps"] == [5, 25, 50, 100]


def test_every_policy_problem_has_a_pointer():
    with pytest.raises(CanaryPolicyInvalid) as caught:
        canary_policy_validate(
            {
                "steps": [5, 50, 25, 100.001],
                "min_calls": [10, 500],
                "max_minutes": 10,
                "min_minutes": 20,
                "alpha": 0,
                "max_feedback_decrease": True,
                "measure_retries": 1.5,
                "speed": "fast",
            },
            pointer="/analysis",
        )
    found = {(p.code, p.pointer) for p in caught.value.problems}
    assert found >= {
        ("steps_not_ascending", "/analysis/steps/2"),
        ("invalid_percent", "/analysis/steps/3"),
        ("wrong_length", "/analysis/min_calls"),
        ("max_below_min", "/analysis/max_minutes"),
        ("invalid_number", "/analysis/alpha"),
        ("invalid_number", "/analysis/max_feedback_decrease"),
        ("invalid_number", "/analysis/measure_retries"),
        ("unknown_field", "/analysis/speed"),
    }


@pytest.mark.parametrize(
    ("policy", "code", "pointer"),
    [
        ("fast", "invalid_policy", ""),
        ({"steps": []}, "invalid_steps", "/steps"),
        ({"steps": [100]}, "no_step_to_judge", "/steps/0"),
        ({"steps": [5, 0.001]}, "invalid_percent", "/steps/1"),
        ({"min_calls": 29}, "invalid_number", "/min_calls"),
        ({"steps": [5, 50], "min_minutes": [10, -1]}, "invalid_number", "/min_minutes/1"),
        ({"min_shadow_agreement": 101}, "invalid_number", "/min_shadow_agreement"),
    ],
)
def test_it_refuses_a_bad_policy(policy, code, pointer):
    with pytest.raises(CanaryPolicyInvalid) as caught:
        canary_policy_validate(policy)
    assert (code, pointer) in {(p.code, p.pointer) for p in caught.value.problems}


def test_the_derived_times_count_the_remaining_steps():
    policy = canary_policy_validate(
        {"steps": [5, 25, 50, 100], "min_minutes": [10, 20, 30, 99], "max_minutes": 60}
    )

    first = canary_policy_times(policy=policy, step=0, step_started_at=T0)
    last = canary_policy_times(policy=policy, step=2, step_started_at=T0)

    # The final 100 % is not judged: its minutes never delay the promotion.
    assert first.earliest_promotion == T0 + timedelta(minutes=60)
    assert last.earliest_promotion == T0 + timedelta(minutes=30)
    assert first.latest_verdict == T0 + timedelta(minutes=60)


def test_derived_times_exist_only_while_the_analysis_runs(released, manager):
    analysis = start(released, manager)
    times = canary.canary_analysis_times(analysis)
    assert times.earliest_promotion == T0 + timedelta(minutes=60)  # steps 50 and 75: 30 each
    assert times.latest_verdict == T0 + timedelta(minutes=120)

    canary.canary_analysis_stop(analysis_id=analysis.pk, actor=manager, reason="by hand")
    analysis.refresh_from_db()
    assert canary.canary_analysis_times(analysis) is None


# --- starting, attaching, resume, stop ------------------------------------------------------------


def test_start_runs_the_canary_at_the_first_step(released, manager):
    analysis = start(released, manager)

    release = released.release("staging")
    assert (release.canary_version.number, release.canary_weight) == (3, 5000)
    assert analysis.canary_salt == release.canary_salt
    assert (analysis.step, analysis.step_started_at, analysis.status) == (0, T0, Status.RUNNING)
    assert analysis.created_by_label == "release-manager"


def test_start_refuses_a_percent_that_is_not_the_first_step_and_changes_nothing(released, manager):
    revision = released.release("staging").revision
    with pytest.raises(CanaryPolicyInvalid) as caught:
        canary.canary_analysis_start(
            prompt=released.prompt,
            environment=released.environments["staging"],
            version=3,
            percent=Decimal(10),
            policy=POLICY,
            actor=manager,
        )
    assert caught.value.problems[0].pointer == "/percent"
    assert released.release("staging").revision == revision
    assert not CanaryAnalysis.objects.exists()


def test_a_refused_canary_start_leaves_no_analysis(released, manager):
    with pytest.raises(ReleaseStateInvalid):
        canary.canary_analysis_start(
            prompt=released.prompt,
            environment=released.environments["staging"],
            version=2,  # the stable version
            policy=POLICY,
            actor=manager,
        )
    assert not CanaryAnalysis.objects.exists()


def canary_at(released, manager, percent: int) -> None:
    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(percent),
        actor=manager,
    )


def attach(released, manager, **policy: Any) -> CanaryAnalysis:
    return canary.canary_analysis_attach(
        prompt=released.prompt,
        environment=released.environments["staging"],
        policy={**POLICY, **policy},
        actor=manager,
        now=T0,
    )


def test_attach_ramps_a_canary_between_steps_up_to_the_next_one(released, manager):
    canary_at(released, manager, 30)

    analysis = attach(released, manager)

    release = released.release("staging")
    assert release.canary_weight == 5000
    assert analysis.step == 0
    assert release.events.first().action == ReleaseEvent.Action.CANARY_PERCENT


def test_attach_starts_at_the_canarys_step_without_a_change(released, manager):
    canary_at(released, manager, 75)
    revision = released.release("staging").revision

    analysis = attach(released, manager)

    assert analysis.step == 1
    assert released.release("staging").revision == revision


def test_attach_refuses_a_canary_past_the_last_judged_step(released, manager):
    canary_at(released, manager, 80)
    with pytest.raises(CanaryPolicyInvalid) as caught:
        attach(released, manager)
    assert caught.value.problems[0].code == "canary_past_steps"


def test_attach_refuses_without_a_canary_and_twice(released, manager):
    with pytest.raises(canary.CanaryNotRunning):
        attach(released, manager)
    canary_at(released, manager, 50)
    attach(released, manager)
    with pytest.raises(canary.CanaryAnalysisExists):
        attach(released, manager)


def test_attach_after_a_stop_takes_the_analysis_back(released, manager):
    analysis = start(released, manager)
    canary.canary_analysis_stop(analysis_id=analysis.pk, actor=manager)

    again = attach(released, manager, max_error_rate_increase=5)

    assert again.pk == analysis.pk
    assert again.status == Status.RUNNING
    assert again.policy["max_error_rate_increase"] == 5


def test_resume_judges_a_fresh_window(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"), errors=8)
    assert look(analysis).outcome == Outcome.INCONCLUSIVE

    resumed = canary.canary_analysis_resume(
        analysis_id=analysis.pk, actor=manager, now=LOOK + timedelta(minutes=5)
    )

    assert resumed.status == Status.RUNNING
    assert resumed.hold_reason == ""
    assert resumed.step_started_at == LOOK + timedelta(minutes=5)
    # The calls it was held on are before the new window: it waits for a new sample.
    assert look(analysis, LOOK + timedelta(minutes=50)).outcome == Outcome.WAIT


def test_resume_and_stop_refuse_the_wrong_state(released, manager):
    analysis = start(released, manager)
    with pytest.raises(canary.CanaryAnalysisStateInvalid):
        canary.canary_analysis_resume(analysis_id=analysis.pk, actor=manager)

    stopped = canary.canary_analysis_stop(analysis_id=analysis.pk, actor=manager, reason="done")

    assert stopped.status == Status.ENDED
    assert stopped.hold_reason == "Stopped by release-manager: done"
    assert released.release("staging").canary_weight == 5000  # the canary stays as it is
    with pytest.raises(canary.CanaryAnalysisStateInvalid):
        canary.canary_analysis_stop(analysis_id=analysis.pk, actor=manager)


# --- two workers at once --------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_never_analyse_the_same_canary_at_once(released, manager):
    analysis = start(released, manager, steps=[50, 100])
    both_arms(released.release("staging"))
    revision = released.release("staging").revision

    def slow_gate(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        time.sleep(0.5)  # the promotion runs under the analysis lock: the other look meets it
        return GateVerdict(passed=True)

    barrier = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[i] = canary.canary_analysis_look(analysis_id=analysis.pk, now=LOOK).outcome
        except Exception as exc:  # the outcome is what the test asserts on
            outcomes[i] = exc
        finally:
            connection.close()

    promotion_check_register(slow_gate)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        promotion_check_unregister(slow_gate)

    assert sorted(outcomes) == sorted([Outcome.PROMOTE, "skipped"])
    assert CanaryVerdict.objects.count() == 1
    assert released.release("staging").revision == revision + 1


# --- beat -----------------------------------------------------------------------------------------


def test_beat_runs_the_task_every_interval():
    from config.celery import app

    entry = app.conf.beat_schedule["analyse-canaries"]
    assert entry == {"task": "evaluations.analyse_canaries", "schedule": 60.0}


def test_the_task_looks_at_every_running_analysis(released, manager):
    from evaluations.tasks import analyse_canaries

    start(released, manager)

    assert analyse_canaries.apply().get() == 1


# --- a look by hand: manage.py canary look ----------------------------------------------------------


def canary_look(*args: str) -> tuple[str, str]:
    from io import StringIO

    from django.core.management import call_command

    out, err = StringIO(), StringIO()
    call_command("canary", "look", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_looks_at_every_running_analysis_now(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"))

    out, err = canary_look()

    analysis.refresh_from_db()
    assert analysis.verdicts.get().outcome == Outcome.PASS
    assert analysis.step == 1
    assert released.release("staging").canary_weight == 7500
    assert f"support.refund-reply @ staging, analysis {analysis.pk}: pass: " in out
    assert "passed: ramped to 75 %" in out
    assert err == ""


def test_the_command_looks_at_one_release(released, manager):
    analysis = start(released, manager)
    both_arms(released.release("staging"))
    release_id = released.release("staging").pk

    out, _ = canary_look("--release-id", str(release_id))

    assert "passed: ramped to 75 %" in out
    assert analysis.verdicts.count() == 1


def test_the_command_reports_a_rollback_on_stderr_with_status_1(released, manager):
    from django.core.management import CommandError

    analysis = start(released, manager)
    both_arms(released.release("staging"), errors=40)

    with pytest.raises(CommandError) as raised:
        canary_look()

    assert raised.value.returncode == 1
    analysis.refresh_from_db()
    assert analysis.status == Status.ROLLED_BACK
    assert released.release("staging").canary_version is None


def test_the_command_refuses_an_unknown_release_or_one_without_a_running_analysis(
    released, manager
):
    from django.core.management import CommandError

    analysis = start(released, manager)
    both_arms(released.release("staging"))
    with pytest.raises(CommandError, match="No release with id 999999"):
        canary_look("--release-id", "999999")
    production = Release.objects.get(prompt=released.prompt, environment__name="production")
    with pytest.raises(CommandError, match="has no running canary analysis"):
        canary_look("--release-id", str(production.pk))
    canary.canary_analysis_stop(analysis_id=analysis.pk, actor=manager)
    with pytest.raises(CommandError, match="has no running canary analysis"):
        canary_look("--release-id", str(released.release("staging").pk))

    assert not analysis.verdicts.exists()
    assert released.release("staging").canary_weight == 5000


def test_the_command_says_when_nothing_runs(db):
    out, _ = canary_look()
    assert out == "No running canary analysis.\n"
