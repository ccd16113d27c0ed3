"""runs.selectors: the shadow report's numbers on known data, its verdict rule, its query budget,
and the disagreeing pairs.

Calls and shadow runs are written straight with the ORM (``make_call``, ``make_shadow``): the
report reads records, whichever code path wrote them. Data comes from the ``released`` fixture
(tests/conftest.py): support.refund-reply v1, v2, v3; v2 stable in staging.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry.actors import Actor
from releases.models import Release
from releases.services import release_shadow_start
from runs import selectors
from runs.models import Call, ShadowRun
from runs.selectors import (
    Side,
    Verdict,
    agreement_verdict,
    percentile,
    shadow_disagreements,
    shadow_report,
)

pytestmark = pytest.mark.django_db

CANDIDATE, NOISE = ShadowRun.Kind.CANDIDATE, ShadowRun.Kind.NOISE
_request_ids = itertools.count(1)


# --- a small factory: records as the runs write them ----------------------------------------------


def make_call(released, *, version: int = 2, environment: str = "staging", **fields: Any) -> Call:
    values: dict[str, Any] = {
        "request_id": f"req-{next(_request_ids):05d}",
        "source": Call.Source.RUN,
        "created_at": timezone.now(),
        "prompt": released.prompt,
        "version": released.versions[version],
        "environment": released.environments[environment],
        "variant": "stable",
        "status": Call.Status.OK,
        "provider": "local",
        "model": "echo-1",
        "latency_ms": 100.0,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost": Decimal("0.001"),
        "inputs": {"customer_name": "Ada"},
        "output": "Hello Ada, your refund is on its way.",
    }
    values.update(fields)
    return Call.objects.create(**values)


def make_shadow(
    released,
    call: Call,
    *,
    version: int,
    kind: str = CANDIDATE,
    status: str = ShadowRun.Status.OK,
    exact_match: bool | None = True,
    **fields: Any,
) -> ShadowRun:
    answered = status == ShadowRun.Status.OK
    values: dict[str, Any] = {
        "call": call,
        "release": released.release(call.environment.name),
        "version": released.versions[version],
        "kind": kind,
        "status": status,
        "created_at": call.created_at,
        "finished_at": call.created_at if status != ShadowRun.Status.PENDING else None,
        "provider": "local",
        "model": "echo-1",
        "latency_ms": 100.0 if answered else None,
        "input_tokens": 100 if answered else None,
        "output_tokens": 30 if answered else None,
        "cost": Decimal("0.002") if answered else None,
        "output": call.output if exact_match else "Hi Ada. Refund sent.",
        "exact_match": exact_match if answered else None,
        "similarity": (1.0 if exact_match else 0.5) if answered else None,
    }
    values.update(fields)
    return ShadowRun.objects.create(**values)


def shadow_v3(released) -> Release:
    return release_shadow_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        versions=[3],
        sample_percent=Decimal(10),
        actor=Actor(label="release-manager"),
        reason="try v3 on real traffic",
    )


def known_shadow(released, *, start: datetime | None = None) -> Release:
    """44 shadowed live calls (v2) with latencies 10, 20, … 440 ms, and:

    - candidate v3: 40 answered (the first 20 identical, similarity 1.0; 20 different, 0.5;
      latencies 10 … 400 ms; cost 0.002 each), 2 errors, 1 skipped over budget, 1 pending:
      agreement 20 of 42 finished;
    - noise floor (v2 again) on the first 40 calls: 36 identical (1.0), 4 different (0.8),
      5 ms each, cost 0.001 each: agreement 36 of 40.
    """
    release = shadow_v3(released)
    start = start or timezone.now() - timedelta(minutes=30)
    for i in range(44):
        call = make_call(
            released, created_at=start + timedelta(seconds=i), latency_ms=float((i + 1) * 10)
        )
        if i < 40:
            make_shadow(
                released, call, version=3, exact_match=i < 20, latency_ms=float((i + 1) * 10)
            )
            make_shadow(
                released,
                call,
                version=2,
                kind=NOISE,
                exact_match=i < 36,
                similarity=1.0 if i < 36 else 0.8,
                latency_ms=5.0,
                cost=Decimal("0.001"),
            )
        else:
            status = [
                ShadowRun.Status.ERROR,
                ShadowRun.Status.ERROR,
                ShadowRun.Status.OVER_BUDGET,
                ShadowRun.Status.PENDING,
            ][i - 40]
            make_shadow(released, call, version=3, status=status, error_class="Timeout")
    return release


# --- the report on known data -----------------------------------------------------------------


def test_the_report_puts_live_each_candidate_and_the_noise_floor_side_by_side(released):
    release = known_shadow(released)

    report = shadow_report(release=release)

    assert [s.side for s in report.sides] == [Side.LIVE, Side.CANDIDATE, Side.NOISE]
    live, (candidate,), noise = report.live, report.candidates, report.noise

    assert (live.versions, live.runs, live.ok, live.errors) == ((2,), 44, 44, 0)
    assert live.agreement is None  # live is what the others are compared with
    assert (live.latency_p50, live.latency_p95, live.latency_sample) == (220.0, 420.0, 44)
    assert live.total_cost == Decimal("0.044")
    assert live.mean_cost == Decimal("0.001")
    assert (live.input_tokens, live.output_tokens) == (4400, 880)

    assert candidate.versions == (3,)
    assert (candidate.runs, candidate.ok, candidate.errors) == (44, 40, 2)
    assert (candidate.over_budget, candidate.pending, candidate.finished) == (1, 1, 42)
    assert candidate.agreed == 20
    assert candidate.agreement == pytest.approx(20 / 42)
    assert candidate.mean_similarity == pytest.approx(0.75)
    assert (candidate.latency_p50, candidate.latency_p95) == (200.0, 380.0)
    assert candidate.total_cost == Decimal("0.080")
    assert candidate.mean_cost == Decimal("0.002")
    assert (candidate.input_tokens, candidate.output_tokens) == (4000, 1200)
    assert candidate.verdict == Verdict.DIFFERS

    assert (noise.versions, noise.runs, noise.finished, noise.agreed) == ((2,), 40, 40, 36)
    assert noise.agreement == pytest.approx(0.9)
    assert noise.mean_similarity == pytest.approx((36 * 1.0 + 4 * 0.8) / 40)
    assert (noise.latency_p50, noise.latency_p95) == (5.0, 5.0)
    assert noise.total_cost == Decimal("0.040")
    assert noise.verdict is None


def test_a_candidate_close_to_the_noise_floor_is_within_it(released):
    release = shadow_v3(released)
    for i in range(40):
        call = make_call(released)
        make_shadow(released, call, version=3, exact_match=i < 34)  # 85 %
        make_shadow(released, call, version=2, kind=NOISE, exact_match=i < 36)  # 90 %

    (candidate,) = shadow_report(release=release).candidates

    assert candidate.verdict == Verdict.WITHIN
    assert candidate.z == pytest.approx(0.676, abs=0.001)


def test_the_window_keeps_only_recent_runs_and_the_calls_they_shadowed(released):
    release = shadow_v3(released)
    now = timezone.now()
    old = make_call(released, created_at=now - timedelta(days=2), latency_ms=900.0)
    make_shadow(released, old, version=3, exact_match=False)
    recent = make_call(released, created_at=now - timedelta(minutes=5), latency_ms=30.0)
    make_shadow(released, recent, version=3, exact_match=True)

    everything = shadow_report(release=release)
    last_day = shadow_report(release=release, since=now - timedelta(hours=24))

    assert (everything.live.runs, everything.candidates[0].runs) == (2, 2)
    assert (last_day.live.runs, last_day.candidates[0].runs) == (1, 1)
    assert last_day.candidates[0].agreement == 1.0
    assert last_day.live.latency_p95 == 30.0
    assert last_day.since == now - timedelta(hours=24)


def test_a_candidate_without_runs_yet_is_listed_with_not_enough_data(released):
    release = shadow_v3(released)

    report = shadow_report(release=release)

    (candidate,) = report.candidates
    assert (candidate.versions, candidate.runs, candidate.agreement) == ((3,), 0, None)
    assert (candidate.latency_p95, candidate.mean_cost, candidate.total_cost) == (None,) * 3
    assert candidate.verdict == Verdict.NOT_ENOUGH_DATA
    assert report.live.runs == 0
    assert not report.has_runs


def test_a_stopped_shadow_still_reports_its_past_candidates(released):
    release = shadow_v3(released)
    make_shadow(released, make_call(released), version=1)
    Release.objects.filter(pk=release.pk).update(shadow_versions=[])  # as after a stop
    release.refresh_from_db()

    report = shadow_report(release=release)

    assert [c.versions for c in report.candidates] == [(1,)]
    assert report.has_runs


def test_the_noise_floor_pools_every_live_version_of_the_window(released):
    release = shadow_v3(released)
    for live_version, agreed in ((1, True), (2, False), (2, True)):
        call = make_call(released, version=live_version)
        make_shadow(released, call, version=live_version, kind=NOISE, exact_match=agreed)

    report = shadow_report(release=release)

    assert report.noise.versions == (1, 2)
    assert report.live.versions == (1, 2)
    assert (report.noise.runs, report.noise.agreed) == (3, 2)


def test_percentiles_read_only_the_latest_sample(released, monkeypatch):
    monkeypatch.setattr(selectors, "LATENCY_SAMPLE", 10)
    release = shadow_v3(released)
    start = timezone.now() - timedelta(hours=1)
    for i in range(30):  # latencies 1 … 30 ms, the newest the slowest
        call = make_call(released, created_at=start + timedelta(seconds=i), latency_ms=i + 1.0)
        make_shadow(released, call, version=3, latency_ms=i + 1.0)
        make_shadow(released, call, version=2, kind=NOISE, latency_ms=100.0 - i)

    report = shadow_report(release=release)

    # The latest 10 of each side: 21 … 30 ms (live and candidate), 71 … 80 ms (noise).
    assert (report.live.latency_sample, report.live.latency_p50) == (10, 25.0)
    assert (report.candidates[0].latency_p50, report.candidates[0].latency_p95) == (25.0, 30.0)
    assert (report.noise.latency_p50, report.noise.latency_p95) == (75.0, 80.0)
    assert report.candidates[0].runs == 30  # the counters still read every run


def report_queries(release: Release) -> int:
    with CaptureQueriesContext(connection) as queries:
        shadow_report(release=release)
    return len(queries)


def test_the_report_costs_the_same_queries_for_3_and_120_runs(
    released, django_assert_max_num_queries
):
    release = shadow_v3(released)
    for _ in range(3):
        make_shadow(released, make_call(released), version=3)
    few = report_queries(release)
    for i in range(40):
        call = make_call(released, version=1 + i % 2)
        make_shadow(released, call, version=3, exact_match=i % 3 == 0)
        make_shadow(released, call, version=1 + i % 2, kind=NOISE)
        make_shadow(released, call, version=1 if i % 2 else 2, status=ShadowRun.Status.ERROR)

    with django_assert_max_num_queries(few):
        report = shadow_report(release=release)

    assert few == 4
    assert [c.versions for c in report.candidates] == [(1,), (2,), (3,)]
    assert report.candidates[2].runs == 43


# --- the verdict rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "noise", "verdict"),
    [
        ((20, 42), (36, 40), Verdict.DIFFERS),
        ((80, 100), (90, 100), Verdict.DIFFERS),  # z = 1.98
        ((81, 100), (90, 100), Verdict.WITHIN),  # z = 1.81
        ((34, 40), (36, 40), Verdict.WITHIN),
        ((40, 40), (30, 40), Verdict.WITHIN),  # agrees more than live with itself
        ((0, 40), (0, 40), Verdict.WITHIN),  # free text: never identical on either side
        ((40, 40), (40, 40), Verdict.WITHIN),
        ((0, 29), (40, 40), Verdict.NOT_ENOUGH_DATA),
        ((0, 40), (29, 29), Verdict.NOT_ENOUGH_DATA),
        ((0, 0), (0, 0), Verdict.NOT_ENOUGH_DATA),
    ],
)
def test_the_verdict_is_a_two_proportion_z_test_at_95_percent(candidate, noise, verdict):
    result, z = agreement_verdict(
        candidate_agreed=candidate[0],
        candidate_finished=candidate[1],
        noise_agreed=noise[0],
        noise_finished=noise[1],
    )

    assert result == verdict
    assert (z is None) == (verdict == Verdict.NOT_ENOUGH_DATA)


def test_the_z_statistic_is_the_pooled_two_proportion_one():
    _, z = agreement_verdict(
        candidate_agreed=80, candidate_finished=100, noise_agreed=90, noise_finished=100
    )

    # pooled p = 0.85; se = sqrt(0.85 * 0.15 * (1/100 + 1/100)) = 0.0505
    assert z == pytest.approx(0.10 / 0.050498, abs=1e-3)


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([float(v) for v in range(1, 101)], 0.95, 95.0),
        ([float(v) for v in range(1, 101)], 0.50, 50.0),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0], 0.50, 1.0),
        ([], 0.95, None),
    ],
)
def test_percentiles_are_by_nearest_rank(values, share, expected):
    assert percentile(values, share) == expected


# --- the disagreeing pairs --------------------------------------------------------------------


def test_disagreements_are_the_latest_answered_mismatches_with_the_live_answer(released):
    release = shadow_v3(released)
    start = timezone.now() - timedelta(hours=1)
    calls = [
        make_call(released, created_at=start + timedelta(minutes=i), output=f"live answer {i}")
        for i in range(6)
    ]
    make_shadow(released, calls[0], version=3, exact_match=False, output="shadow 0")
    make_shadow(released, calls[1], version=3, exact_match=True)
    make_shadow(released, calls[2], version=3, status=ShadowRun.Status.ERROR, exact_match=None)
    make_shadow(
        released,
        calls[3],
        version=3,
        exact_match=False,
        output='{"amount": 12}',
        similarity=0.4,
        structure_diff=["/amount"],
    )
    make_shadow(released, calls[4], version=1, exact_match=False, output="shadow v1")
    make_shadow(released, calls[5], version=2, kind=NOISE, exact_match=False, output="noise")

    every = shadow_disagreements(release=release)
    v3 = shadow_disagreements(release=release, version=3)
    noise = shadow_disagreements(release=release, kind=NOISE)
    latest = shadow_disagreements(release=release, limit=1)

    assert [d.shadow_output for d in every] == ["shadow v1", '{"amount": 12}', "shadow 0"]
    assert [d.shadow_output for d in v3] == ['{"amount": 12}', "shadow 0"]
    pair = v3[0]
    assert (pair.live_output, pair.live_version, pair.shadow_version) == ("live answer 3", 2, 3)
    assert (pair.similarity, pair.structure_diff) == (0.4, ("/amount",))
    assert (pair.request_id, pair.inputs) == (calls[3].request_id, {"customer_name": "Ada"})
    assert [(d.kind, d.shadow_output) for d in noise] == [("noise", "noise")]
    assert [d.shadow_output for d in latest] == ["shadow v1"]


def test_disagreements_take_one_query_and_respect_the_window(released, django_assert_num_queries):
    release = shadow_v3(released)
    now = timezone.now()
    for minutes in (5, 10, 3000):
        call = make_call(released, created_at=now - timedelta(minutes=minutes))
        make_shadow(released, call, version=3, exact_match=False)

    with django_assert_num_queries(1):
        pairs = shadow_disagreements(release=release, since=now - timedelta(hours=1))
        texts = [(p.live_output, p.live_version, p.request_id) for p in pairs]

    assert len(texts) == 2


@pytest.mark.parametrize(
    ("stored", "items"),
    [
        (None, ()),
        ([], ()),
        (["/a", "/b"], ("/a", "/b")),
        ({"/a": "changed"}, ({"path": "/a", "change": "changed"},)),
        ("/a", ("/a",)),
    ],
)
def test_structure_differences_read_whatever_shape_was_stored(stored, items):
    assert selectors.structure_differences(stored) == items
