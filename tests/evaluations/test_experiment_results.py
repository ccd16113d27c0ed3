"""A/B results from recorded calls: the figures against SciPy, the window and what is excluded,
the sample ratio check, the sequential correction, past experiments, the query budget, and the
admin pages.

Personas of the admin pages (STYLE R14): ``release_manager`` (in "Release managers": may read
calls) sees them; ``outsider`` (staff in no group) gets 403.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from scipy import stats

from evaluations.experiments.analysis import Metric, experiment_look
from evaluations.experiments.selectors import (
    ExperimentNotFound,
    NoExperimentRunning,
    experiment_list,
    experiment_results,
)
from releases.models import Release, ReleaseEvent
from releases.services import (
    release_experiment_start,
    release_experiment_stop,
    release_rollback,
)
from runs.models import Call
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
_ids = itertools.count()


def start(released, manager, *, planned=None, weights=(50, 50), name="tone") -> Release:
    release_experiment_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        name=name,
        variants=[
            ("control", 2, Decimal(weights[0])),
            ("treatment", 3, Decimal(weights[1])),
        ],
        actor=manager,
        reason="test",
        planned_calls=planned,
    )
    return released.release("staging")


def stop(released, manager, winner=None) -> Release:
    release_experiment_stop(
        prompt=released.prompt,
        environment=released.environments["staging"],
        winner=winner,
        actor=manager,
        reason="done",
    )
    return released.release("staging")


def record(released, release, variant, version, *, n=1, at=None, **fields) -> None:
    """``n`` calls of ``variant``; list-valued fields give one value per call."""
    at = at or timezone.now()
    rows = []
    for i in range(n):
        values = {k: (v[i] if isinstance(v, list) else v) for k, v in fields.items()}
        values.setdefault("status", Call.Status.OK)
        values.setdefault("sticky", True)
        values.setdefault("source", Call.Source.RUN)
        rows.append(
            Call(
                request_id=f"req-{next(_ids)}",
                created_at=at + timedelta(milliseconds=i),
                prompt=released.prompt,
                version=released.versions[version],
                environment=release.environment,
                variant=variant,
                release_revision=release.revision,
                **values,
            )
        )
    Call.objects.bulk_create(rows)


def errors(n: int, failed: int) -> list[str]:
    return [Call.Status.ERROR] * failed + [Call.Status.OK] * (n - failed)


def comparison(results, metric: Metric):
    return next(c for c in results.comparisons if c.metric is metric)


# --- The figures, against SciPy ------------------------------------------------------------------


@pytest.fixture
def known(released, manager):
    """Known data: 60 calls per variant with errors, schema checks, feedback, latency and cost."""
    release = start(released, manager)
    rng = random.Random(6)
    data = {}
    for variant, version, shift, failed in (("control", 2, 0.0, 6), ("treatment", 3, 300.0, 15)):
        latency = [rng.lognormvariate(6.0, 0.5) + shift for _ in range(60)]
        cost = [Decimal(f"{rng.uniform(0.001, 0.003) + shift / 1e5:.8f}") for _ in range(60)]
        feedback = [rng.choice([-1.0, 0.0, 0.5, 1.0]) for _ in range(50)] + [None] * 10
        schema = [True] * 30 + [False] * (failed // 3) + [None] * (30 - failed // 3)
        record(
            released,
            release,
            variant,
            version,
            n=60,
            status=errors(60, failed),
            latency_ms=latency,
            cost=cost,
            feedback=feedback,
            schema_valid=schema,
            input_tokens=100,
            output_tokens=[i for i in range(60)],
        )
        data[variant] = {
            "latency": latency,
            "cost": [float(c) for c in cost],
            "feedback": [f for f in feedback if f is not None],
            "failed": failed,
            "schema": (failed // 3, 30 + failed // 3),
        }
    return release, data


def test_per_variant_figures_match_scipy(known):
    release, data = known
    results = experiment_results(release=release)
    control, treatment = results.variants
    assert (control.name, control.control, treatment.control) == ("control", True, False)
    assert control.calls == treatment.calls == 60
    for figures, values in ((control, data["control"]), (treatment, data["treatment"])):
        ci = stats.binomtest(values["failed"], 60).proportion_ci(method="wilson")
        assert figures.error_rate.rate == pytest.approx(values["failed"] / 60)
        assert figures.error_rate.ci.low == pytest.approx(ci.low, abs=1e-9)
        assert figures.error_rate.ci.high == pytest.approx(ci.high, abs=1e-9)
        failures, checked = values["schema"]
        assert (figures.schema_failure_rate.count, figures.schema_failure_rate.total) == (
            failures,
            checked,
        )
        for mean, sample in (
            (figures.latency_ms, values["latency"]),
            (figures.cost, values["cost"]),
            (figures.feedback, values["feedback"]),
        ):
            low, high = stats.t.interval(
                0.95, len(sample) - 1, loc=np.mean(sample), scale=stats.sem(sample)
            )
            assert mean.n == len(sample)
            assert mean.mean == pytest.approx(np.mean(sample), rel=1e-9)
            assert mean.ci.low == pytest.approx(low, rel=1e-6)
            assert mean.ci.high == pytest.approx(high, rel=1e-6)
        for q, value in ((50, figures.latency_p50_ms), (95, figures.latency_p95_ms)):
            exact = np.percentile(values["latency"], q, method="inverted_cdf")
            assert value == pytest.approx(exact, rel=0.006)
        assert figures.input_tokens.mean == 100
        assert figures.output_tokens.mean == pytest.approx(29.5)


def test_differences_match_scipy(known):
    release, data = known
    results = experiment_results(release=release)
    for metric, key in (
        (Metric.LATENCY, "latency"),
        (Metric.COST, "cost"),
        (Metric.FEEDBACK, "feedback"),
    ):
        found = comparison(results, metric)
        expected = stats.ttest_ind(data["treatment"][key], data["control"][key], equal_var=False)
        interval = expected.confidence_interval(0.95)
        assert found.test == "Welch's t"
        assert found.difference == pytest.approx(
            np.mean(data["treatment"][key]) - np.mean(data["control"][key]), rel=1e-9
        )
        assert found.p_value == pytest.approx(expected.pvalue, rel=1e-6)
        assert found.ci.low == pytest.approx(interval.low, rel=1e-6)
        assert found.ci.high == pytest.approx(interval.high, rel=1e-6)

    # Two proportions: the pooled z-test, written out.
    found = comparison(results, Metric.ERROR_RATE)
    a, b = data["control"]["failed"], data["treatment"]["failed"]
    pooled = (a + b) / 120
    z = (b / 60 - a / 60) / np.sqrt(pooled * (1 - pooled) * (2 / 60))
    assert found.test == "two proportions"
    assert found.difference == pytest.approx((b - a) / 60)
    assert found.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert found.ci.low < found.difference < found.ci.high
    schema = comparison(results, Metric.SCHEMA_FAILURE_RATE)
    assert schema.difference == pytest.approx(5 / 35 - 2 / 32)


def test_no_planned_sample_declares_nothing_while_running_then_judges_the_stop(
    known, released, manager
):
    release, _ = known
    running = experiment_results(release=release)
    latency = comparison(running, Metric.LATENCY)
    assert latency.p_value < 0.001
    assert running.look.threshold is None
    assert not any(c.significant for c in running.comparisons)
    assert "no claim yet" in latency.reading
    assert "nothing is declared significant until the experiment stops" in running.look.explanation

    start_id = running.record.start_event_id
    stop(released, manager)
    final = experiment_results(release=release, experiment_event=start_id)
    assert final.look.final
    assert final.look.threshold == 0.05
    assert comparison(final, Metric.LATENCY).significant
    assert "worse" in comparison(final, Metric.LATENCY).reading


# --- What counts ---------------------------------------------------------------------------------


def test_only_sticky_calls_of_the_window_and_the_variants_count(released, manager):
    before = timezone.now() - timedelta(hours=1)
    release = start(released, manager)
    record(released, release, "control", 2, n=5, at=before)  # before the start
    record(released, release, "control", 2, n=7, sticky=False)  # no subject
    record(released, release, "treatment", 2, n=4)  # the treatment's name on control's version
    record(released, release, "stable", 2, n=9)  # outside the variants' share
    production = released.release("production")
    record(released, production, "control", 2, n=6)  # another environment
    record(released, release, "control", 2, n=10)
    record(released, release, "treatment", 3, n=8)

    results = experiment_results(release=release)

    assert [v.calls for v in results.variants] == [10, 8]
    assert results.excluded_non_sticky == 7
    assert results.look.sticky_calls == 18


def test_playground_calls_do_not_count(released, manager):
    """Decision 0036: runs from the admin's playground are left out, even on a variant's version."""
    release = start(released, manager)
    record(released, release, "control", 2, n=3)
    record(released, release, "control", 2, n=5, source=Call.Source.PLAYGROUND)
    record(released, release, "treatment", 3, n=4)

    results = experiment_results(release=release)

    assert [v.calls for v in results.variants] == [3, 4]


def test_response_cache_hits_count_as_calls_but_not_in_latency_cost_or_tokens(released, manager):
    """Decision 0050: a hit called no model; its millisecond and its nothing are not the model's."""
    release = start(released, manager)
    model = {"latency_ms": 200.0, "cost": Decimal("0.01"), "input_tokens": 10, "feedback": 1.0}
    record(released, release, "control", 2, n=3, **model)
    hit = {"latency_ms": 1.0, "cost": Decimal(0), "input_tokens": 0, "feedback": -1.0}
    record(released, release, "control", 2, n=3, cache="exact", **hit)
    record(released, release, "treatment", 3, n=4, **model)

    control, _ = experiment_results(release=release).variants

    assert control.calls == 6
    assert control.feedback.n == 6  # the caller got that answer: its feedback counts
    assert (control.latency_ms.n, control.latency_ms.mean) == (3, 200.0)
    assert control.latency_p50_ms == pytest.approx(200.0, rel=0.02)
    assert (control.cost.n, control.cost.mean) == (3, pytest.approx(0.01))
    assert (control.input_tokens.n, control.input_tokens.mean) == (3, 10.0)


def test_calls_after_the_stop_do_not_count(released, manager):
    release = start(released, manager)
    record(released, release, "control", 2, n=3)
    stopped = stop(released, manager, winner="treatment")
    record(released, stopped, "control", 2, n=50, at=timezone.now() + timedelta(minutes=1))

    (past,) = experiment_list(release=stopped)
    results = experiment_results(release=stopped, experiment_event=past.start_event_id)

    assert [v.calls for v in results.variants] == [3, 0]
    assert (past.winner, past.stop_action, past.running) == ("treatment", "experiment_stop", False)


def test_a_rollback_ends_the_window(released, manager):
    release = start(released, manager)
    release_rollback(
        prompt=released.prompt, environment=release.environment, actor=manager, reason="oops"
    )
    (past,) = experiment_list(release=release)
    assert past.stop_action == ReleaseEvent.Action.ROLLBACK
    assert past.winner is None
    with pytest.raises(NoExperimentRunning):
        experiment_results(release=release)


def test_a_past_experiment_by_its_start_event(released, manager):
    release = start(released, manager, name="first")
    record(released, release, "control", 2, n=4)
    record(released, release, "treatment", 3, n=4)
    first = experiment_list(release=release)[0].start_event_id
    stop(released, manager)
    release = start(released, manager, name="second")
    record(released, release, "control", 2, n=9)

    assert experiment_results(release=release).record.experiment.name == "second"
    past = experiment_results(release=release, experiment_event=first)
    assert past.record.experiment.name == "first"
    assert [v.calls for v in past.variants] == [4, 4]
    assert [r.experiment.name for r in experiment_list(release=release)] == ["second", "first"]


def test_unknown_or_foreign_events_are_not_found(released, manager):
    release = start(released, manager)
    production = released.release("production")
    foreign = ReleaseEvent.objects.filter(release=production).first()
    not_a_start = ReleaseEvent.objects.filter(release=release).order_by("id").first()
    for event_id in (foreign.pk, not_a_start.pk, 10**9):
        with pytest.raises(ExperimentNotFound):
            experiment_results(release=release, experiment_event=event_id)
    with pytest.raises(NoExperimentRunning):
        experiment_results(release=production)


# --- Sample ratio mismatch -----------------------------------------------------------------------


def test_a_sample_ratio_mismatch_holds_every_decision(released, manager):
    release = start(released, manager, planned=1000)
    record(released, release, "control", 2, n=600, status=errors(600, 10))
    record(released, release, "treatment", 3, n=400, status=errors(400, 200))

    results = experiment_results(release=release)

    assert results.srm.mismatch
    assert results.srm.p_value < 0.001
    assert [(a.observed, a.expected) for a in results.srm.arms] == [(600, 500.0), (400, 500.0)]
    assert results.decisions_held
    found = comparison(results, Metric.ERROR_RATE)
    assert found.p_value < 1e-30
    assert found.threshold == 0.05
    assert not any(c.significant for c in results.comparisons)
    assert "sample ratio does not match" in found.reading


def test_a_split_that_matches_its_weights_holds_nothing(released, manager):
    release = start(released, manager, weights=(20, 60))
    record(released, release, "control", 2, n=250)
    record(released, release, "treatment", 3, n=750)
    results = experiment_results(release=release)
    assert [v.expected_share for v in results.variants] == [0.25, 0.75]
    assert not results.srm.mismatch
    assert not results.decisions_held


# --- Looking repeatedly --------------------------------------------------------------------------


@pytest.mark.parametrize(("planned", "significant"), [(1000, False), (200, True)])
def test_an_early_look_needs_more_evidence(released, manager, planned, significant):
    """10 % against 24 % errors on 100 calls each: p ≈ 0.009. At 20 % of the plan that is not
    enough (the threshold is about 1.2e-5); at the planned sample it is."""
    release = start(released, manager, planned=planned)
    record(released, release, "control", 2, n=100, status=errors(100, 10))
    record(released, release, "treatment", 3, n=100, status=errors(100, 24))

    results = experiment_results(release=release)
    found = comparison(results, Metric.ERROR_RATE)

    assert 0.005 < found.p_value < 0.015
    assert results.look.information_fraction == pytest.approx(200 / planned)
    assert found.significant is significant
    assert (found.threshold < 1e-4) is not significant
    assert ("worse" in found.reading) is significant


def test_the_look_past_the_plan_is_final_at_full_alpha():
    look = experiment_look(sticky_calls=1500, planned_calls=1000, running=True, alpha=0.05)
    assert (look.information_fraction, look.final, look.threshold) == (1.0, True, 0.05)
    assert "adds error" in look.explanation
    early = experiment_look(sticky_calls=100, planned_calls=1000, running=False, alpha=0.05)
    assert not early.final
    assert early.threshold < 1e-8
    assert "stopped before its planned sample" in early.explanation


# --- Cost ----------------------------------------------------------------------------------------


def test_queries_do_not_grow_with_the_calls(released, manager):
    release = start(released, manager)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            experiment_results(release=release)
        return len(captured)

    record(released, release, "control", 2, n=5, latency_ms=100.0, feedback=0.5)
    record(released, release, "treatment", 3, n=5, latency_ms=120.0, feedback=1.0)
    few = queries()
    record(released, release, "control", 2, n=400, latency_ms=[float(i) for i in range(400)])
    record(released, release, "treatment", 3, n=400, latency_ms=[i * 1.5 for i in range(400)])
    assert queries() == few <= 4


def test_the_timeline_accumulates_per_variant(released, manager):
    release = start(released, manager)
    now = timezone.now()
    record(released, release, "control", 2, n=3, at=now)
    record(released, release, "treatment", 3, n=2, at=now + timedelta(hours=1))
    record(released, release, "control", 2, n=1, at=now + timedelta(hours=2))
    results = experiment_results(release=release)
    # The bucket follows the experiment's window (started just now), not these future calls.
    assert results.timeline_unit == "minute"
    assert [p.cumulative for p in results.timeline] == [
        {"control": 3, "treatment": 0},
        {"control": 3, "treatment": 2},
        {"control": 4, "treatment": 2},
    ]


def test_the_timeline_chart_spaces_points_by_time_not_by_index():
    import re
    from datetime import datetime

    from evaluations.experiments.charts import timeline_chart
    from evaluations.experiments.selectors import TimelinePoint

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    points = [  # hours 0, 1 and 10: eight empty hours between the last two
        TimelinePoint(at=t0, cumulative={"a": 1}),
        TimelinePoint(at=t0 + timedelta(hours=1), cumulative={"a": 2}),
        TimelinePoint(at=t0 + timedelta(hours=10), cumulative={"a": 3}),
    ]
    svg = str(timeline_chart(points, ["a"], "hour", start=t0, end=t0 + timedelta(hours=11)))
    xs = [float(x) for x in re.findall(r"(\d+(?:\.\d)?),", re.search(r'points="([^"]+)"', svg)[1])]
    rises = sorted(set(xs[1:-1]))  # each bucket's calls are drawn at the bucket's end
    assert rises[2] - rises[0] == pytest.approx(10 * (rises[1] - rises[0]), abs=1)
    assert "2026-01-01 00:00" in svg  # the first tick dates the axis


# --- The admin pages -----------------------------------------------------------------------------


@pytest.fixture
def release_manager(client):
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(user)
    return client


def test_results_page_shows_charts_and_the_mismatch_warning(released, manager, release_manager):
    release = start(released, manager, planned=1000)
    record(released, release, "control", 2, n=600, latency_ms=100.0, status=errors(600, 5))
    record(released, release, "treatment", 3, n=400, latency_ms=[100.0 + i % 7 for i in range(400)])

    response = release_manager.get(
        reverse("admin:evaluations_experiment_results", args=[release.pk])
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "Sample ratio mismatch: decisions held" in html
    assert html.count('<svg class="experiment-chart"') == 3
    assert "Difference of each metric against control" in html
    assert "Observed against expected share" in html
    assert "Cumulative sticky calls per variant" in html
    assert "60 % (expected 50 %)" in html


def test_index_lists_releases_with_experiments_and_links_from_the_admin_index(
    released, manager, release_manager
):
    release = start(released, manager)
    index = release_manager.get(reverse("admin:evaluations_experiments"))
    assert index.status_code == 200
    assert (
        reverse("admin:evaluations_experiment_results", args=[release.pk]) in index.content.decode()
    )
    home = release_manager.get(reverse("admin:index"))
    assert reverse("admin:evaluations_experiments") in home.content.decode()


def test_the_release_page_links_to_the_running_experiments_results(
    released, manager, release_manager
):
    release = start(released, manager)
    results = reverse("admin:evaluations_experiment_results", args=[release.pk])

    page = release_manager.get(reverse("admin:releases_release_change", args=[release.pk]))

    assert page.status_code == 200
    assert results in page.content.decode()


def test_results_page_picks_a_past_experiment_and_refuses_unknown_ones(
    released, manager, release_manager
):
    release = start(released, manager, name="first")
    first = experiment_list(release=release)[0].start_event_id
    stop(released, manager)
    url = reverse("admin:evaluations_experiment_results", args=[release.pk])

    idle = release_manager.get(url)
    assert idle.status_code == 200
    assert "No experiment is running" in idle.content.decode()
    assert release_manager.get(f"{url}?experiment={first}").status_code == 200
    assert release_manager.get(f"{url}?experiment=999999").status_code == 404
    assert release_manager.get(f"{url}?experiment=abc").status_code == 404
    assert release_manager.get(f"{url}?experiment=%C2%B2").status_code == 404  # "²" is a digit


def test_outsiders_may_not_read_results(released, manager, client):
    release = start(released, manager)
    client.force_login(UserFactory(username="carol", is_staff=True))
    for url in (
        reverse("admin:evaluations_experiments"),
        reverse("admin:evaluations_experiment_results", args=[release.pk]),
    ):
        assert client.get(url).status_code == 403
    assert (
        reverse("admin:evaluations_experiments")
        not in client.get(reverse("admin:index")).content.decode()
    )


def test_a_reader_of_calls_alone_finds_the_page_in_the_app_list(released, manager, client):
    """Staff with only runs.view_call: no other evaluations page, so the app holds just this one."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="vera", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_call"))
    client.force_login(user)
    release = start(released, manager)
    home = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:evaluations_experiments") in home
    page = client.get(reverse("admin:evaluations_experiment_results", args=[release.pk]))
    assert page.status_code == 200
