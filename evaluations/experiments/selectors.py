"""Reads of A/B experiments (STYLE R1, R16): a release's experiments, and the results of one.

An experiment is identified by its ``experiment_start`` release event. Its window runs from that
event (its time and revision) to the first later event that leaves the release without it: an
``experiment_stop`` or a rollback past its start. A rollback that later brings the experiment back
opens no new window. Its calls are the release's prompt and environment, inside the window, whose
variant is one of the experiment's with that variant's version. Only sticky calls (the caller sent
a subject) count; the others are reported as excluded, never used.

The control is the **first** variant of the experiment, as it was started; every difference is
variant − control. The judgement itself is pure and lives in ``evaluations.experiments.analysis``.

Cost: a fixed number of queries whatever the number of calls: the experiment events (1); counts,
means and variances grouped by variant (1); a latency histogram grouped by variant (1, so p50 and
p95 need no values read: see ``LATENCY_BUCKETS_PER_E``); the timeline, per minute, hour, day or week (1).

Imports registry, releases and runs; never ``api``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Case, Count, F, FloatField, Q, QuerySet, Sum, When
from django.db.models.functions import Cast, Floor, Ln, Trunc
from django.utils import timezone

from registry.errors import RegistryError
from releases.models import Release, ReleaseEvent
from releases.state import Experiment, ReleaseState, Variant
from runs.models import Call
from runs.selectors import MODEL_ANSWERED, traffic_calls

from ..chart_time import timeline_unit
from ..statistics import SrmResult, sample_ratio_mismatch
from .analysis import (
    Comparison,
    Look,
    VariantFigures,
    experiment_look,
    mean_figure,
    rate_figure,
    srm_held,
    variant_compare,
)

Action = ReleaseEvent.Action

# p50 and p95 come from a histogram the database counts: bucket = floor(ln(1 + ms) · 100), so a
# bucket spans 1 % of the latency and the percentile (its bucket's geometric middle) is within
# about 0.5 % of the exact one, for any number of calls, in at most ~1,400 rows per variant.
LATENCY_BUCKETS_PER_E = 100


class NoExperimentRunning(RegistryError):
    message = "No experiment is running on this release."


class ExperimentNotFound(RegistryError):
    message = "This release has no experiment started by that event."


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """One experiment of a release, as the history tells it."""

    start_event_id: int
    start_revision: int
    started_at: datetime
    stop_event_id: int | None
    stop_revision: int | None
    stopped_at: datetime | None
    stop_action: str | None  # experiment_stop or rollback
    experiment: Experiment
    stable_before: int | None  # the stable version while it ran
    winner: str | None  # the variant whose version became stable when it stopped

    @property
    def running(self) -> bool:
        return self.stop_event_id is None


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    at: datetime  # the start of the hour or day
    cumulative: dict[str, int]  # sticky calls per variant up to the end of this bucket


@dataclass(frozen=True, slots=True)
class ExperimentResults:
    release: Release
    record: ExperimentRecord
    alpha: float
    control: str
    variants: list[VariantFigures]  # in the experiment's order; the control first
    comparisons: list[Comparison]  # every non-control variant × metric
    look: Look
    srm: SrmResult | None  # None before any sticky call
    decisions_held: bool  # the sample ratio does not match the split: decide nothing
    excluded_non_sticky: int
    timeline_unit: str  # "minute", "hour", "day" or "week" (chart_time.timeline_unit)
    timeline: list[TimelinePoint]
    computed_at: datetime


def experiment_list(*, release: Release) -> list[ExperimentRecord]:
    """The release's experiments, newest first, from one query over the events that start or end
    one (grows with those events only, never with calls)."""
    events = list(
        ReleaseEvent.objects.filter(
            release=release,
            action__in=[Action.EXPERIMENT_START, Action.EXPERIMENT_STOP, Action.ROLLBACK],
        )
        .order_by("id")
        .only("id", "action", "revision", "created_at", "before", "after")
    )
    records = []
    for i, start in enumerate(events):
        if start.action != Action.EXPERIMENT_START:
            continue
        state = ReleaseState.from_dict(start.after)
        experiment = state.experiment
        if experiment is None:  # an append-only log never holds this; skip rather than guess
            continue
        stop = next((e for e in events[i + 1 :] if _ends(e, experiment.salt)), None)
        records.append(
            ExperimentRecord(
                start_event_id=start.pk,
                start_revision=start.revision,
                started_at=start.created_at,
                stop_event_id=stop.pk if stop else None,
                stop_revision=stop.revision if stop else None,
                stopped_at=stop.created_at if stop else None,
                stop_action=stop.action if stop else None,
                experiment=experiment,
                stable_before=state.stable,
                winner=_winner(stop, experiment),
            )
        )
    return records[::-1]


def _ends(event: ReleaseEvent, salt: str) -> bool:
    after = event.after.get("experiment") if isinstance(event.after, dict) else None
    return not after or after.get("salt") != salt


def _winner(stop: ReleaseEvent | None, experiment: Experiment) -> str | None:
    # The stop records states, not the winner's name: the winner is the variant whose version
    # became stable. Unknown (None) when stable did not move: no winner was named, or it was
    # already stable.
    if stop is None or stop.action != Action.EXPERIMENT_STOP:
        return None
    before, after = stop.before.get("stable"), stop.after.get("stable")
    if after == before:
        return None
    return next((v.name for v in experiment.variants if v.version == after), None)


def experiment_record(*, release: Release, experiment_event: int | None = None) -> ExperimentRecord:
    """The running experiment, or the one started by event ``experiment_event`` of this release."""
    records = experiment_list(release=release)
    if experiment_event is None:
        running = next((r for r in records if r.running), None)
        if running is None:
            raise NoExperimentRunning(
                f"No experiment is running on {release}; name a past one by its start event."
            )
        return running
    found = next((r for r in records if r.start_event_id == experiment_event), None)
    if found is None:
        raise ExperimentNotFound(
            f"Event {experiment_event} started no experiment of {release}; "
            "GET the release's experiments to find one."
        )
    return found


def experiment_calls(*, release: Release, record: ExperimentRecord) -> QuerySet[Call]:
    """The experiment's calls, sticky or not: its prompt, environment, window and variants."""
    window = Q(created_at__gte=record.started_at) & (
        Q(release_revision__gte=record.start_revision) | Q(release_revision__isnull=True)
    )
    if record.stopped_at is not None:
        window &= Q(created_at__lt=record.stopped_at) & (
            Q(release_revision__lt=record.stop_revision) | Q(release_revision__isnull=True)
        )
    variants = Q()
    for variant in record.experiment.variants:
        variants |= Q(variant=variant.name, version__number=variant.version)
    return (
        traffic_calls()
        .filter(
            window, variants, prompt_id=release.prompt_id, environment_id=release.environment_id
        )
        .order_by()
    )


def experiment_results(
    *, release: Release, experiment_event: int | None = None, alpha: float = 0.05
) -> ExperimentResults:
    """The results of the running experiment, or of the one started by ``experiment_event``.

    1. Find the experiment and its window (``experiment_record``).
    2. Aggregate its calls per variant in the database: sticky ones for the figures, the others
       counted as excluded.
    3. Check the sample ratio; a mismatch holds every decision.
    4. Judge the look (information fraction, threshold) and compare each variant with control.
    """
    record = experiment_record(release=release, experiment_event=experiment_event)
    calls = experiment_calls(release=release, record=record)
    rows = _aggregates(calls)
    sticky = {row["variant"]: row for row in rows if row["sticky"]}
    excluded = sum(row["calls"] for row in rows if not row["sticky"])
    percentiles = _latency_percentiles(calls.filter(sticky=True))

    variants = record.experiment.variants
    weight_sum = sum(v.weight for v in variants) or 1
    total = sum(sticky.get(v.name, {}).get("calls", 0) for v in variants)
    figures = [
        _figures(
            variant,
            control=index == 0,
            row=sticky.get(variant.name, {}),
            expected_share=variant.weight / weight_sum,
            total=total,
            percentiles=percentiles.get(variant.name, (None, None)),
        )
        for index, variant in enumerate(variants)
    ]
    srm = _srm(figures)
    held = srm_held(srm)
    look = experiment_look(
        sticky_calls=total,
        planned_calls=record.experiment.planned_calls,
        running=record.running,
        alpha=alpha,
    )
    control = figures[0]
    comparisons = [
        comparison
        for variant in figures[1:]
        for comparison in variant_compare(control=control, variant=variant, look=look, held=held)
    ]
    unit, timeline = _timeline(calls.filter(sticky=True), record, [v.name for v in variants])
    return ExperimentResults(
        release=release,
        record=record,
        alpha=alpha,
        control=control.name,
        variants=figures,
        comparisons=comparisons,
        look=look,
        srm=srm,
        decisions_held=held,
        excluded_non_sticky=excluded,
        timeline_unit=unit,
        timeline=timeline,
        computed_at=timezone.now(),
    )


def _aggregates(calls: QuerySet[Call]) -> list[dict[str, Any]]:
    """Counts, sums and sums of squares per (variant, sticky), in one grouped query. Sums of
    squares rather than the database's variance: SQLite's VAR_SAMP fails on a group of one, and
    in double precision the cancellation costs ~1e-16 · mean² / variance, far below what a
    results page shows for latencies, costs and feedback."""
    # Latency, cost and tokens are the model's: a response cache hit (decision 0050) called none,
    # nor did a run an input guardrail decided (0052), so they count in the calls, errors and
    # feedback but not in these.
    modelled = MODEL_ANSWERED
    values = {
        "feedback": F("feedback"),
        "latency": Case(When(modelled, then=F("latency_ms"))),
        "cost": Case(When(modelled, then=Cast("cost", FloatField()))),
        "input": Case(When(modelled, then=Cast("input_tokens", FloatField()))),
        "output": Case(When(modelled, then=Cast("output_tokens", FloatField()))),
    }
    sums: dict[str, Any] = {}
    for name, value in values.items():
        sums[f"{name}_n"] = Count(value)
        sums[f"{name}_sum"] = Sum(value)
        sums[f"{name}_squares"] = Sum(value * value)
    return list(
        calls.values("variant", "sticky").annotate(
            calls=Count("id"),
            errors=Count("id", filter=Q(status=Call.Status.ERROR)),
            schema_checked=Count("schema_valid"),
            schema_failures=Count("id", filter=Q(schema_valid=False)),
            **sums,
        )
    )


def _moments(row: dict[str, Any], prefix: str) -> tuple[int, float | None, float | None]:
    """n, mean and sample variance of one value from its count, sum and sum of squares."""
    n = row.get(f"{prefix}_n", 0)
    if not n:
        return 0, None, None
    total, squares = float(row[f"{prefix}_sum"]), float(row[f"{prefix}_squares"])
    mean = total / n
    if n < 2:
        return n, mean, None
    return n, mean, max(0.0, (squares - total * total / n) / (n - 1))


def _figures(
    variant: Variant,
    *,
    control: bool,
    row: dict[str, Any],
    expected_share: float,
    total: int,
    percentiles: tuple[float | None, float | None],
) -> VariantFigures:
    def mean(prefix: str, with_variance: bool = True):
        n, average, variance = _moments(row, prefix)
        return mean_figure(n, average, variance if with_variance else None)

    calls = row.get("calls", 0)
    return VariantFigures(
        name=variant.name,
        version=variant.version,
        weight=variant.weight,
        control=control,
        calls=calls,
        expected_share=expected_share,
        observed_share=calls / total if total else None,
        error_rate=rate_figure(row.get("errors", 0), calls),
        schema_failure_rate=rate_figure(
            row.get("schema_failures", 0), row.get("schema_checked", 0)
        ),
        feedback=mean("feedback"),
        latency_ms=mean("latency"),
        latency_p50_ms=percentiles[0],
        latency_p95_ms=percentiles[1],
        cost=mean("cost"),
        input_tokens=mean("input", with_variance=False),
        output_tokens=mean("output", with_variance=False),
    )


def _latency_percentiles(
    calls: QuerySet[Call],
) -> dict[str, tuple[float | None, float | None]]:
    """p50 and p95 per variant from the database's latency histogram (nearest rank)."""
    bucket = Floor(Ln(F("latency_ms") + 1.0) * float(LATENCY_BUCKETS_PER_E))
    rows = (
        calls.filter(latency_ms__isnull=False, cache="")  # the model's latencies: no cache hit
        .annotate(bucket=bucket)
        .values("variant", "bucket")
        .annotate(n=Count("id"))
    )
    histograms: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        histograms[row["variant"]].append((int(row["bucket"]), row["n"]))
    return {
        name: (_percentile(sorted(buckets), 0.5), _percentile(sorted(buckets), 0.95))
        for name, buckets in histograms.items()
    }


def _percentile(buckets: list[tuple[int, int]], q: float) -> float | None:
    total = sum(n for _, n in buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, n in buckets:
        seen += n
        if seen >= rank:
            return math.expm1((bucket + 0.5) / LATENCY_BUCKETS_PER_E)
    return None  # unreachable: the last bucket reaches the total


def _srm(figures: list[VariantFigures]) -> SrmResult | None:
    # A variant with weight 0 has no place in the split (and should see no calls).
    arms = [f for f in figures if f.weight > 0]
    if len(arms) < 2 or sum(f.calls for f in arms) == 0:
        return None
    return sample_ratio_mismatch(
        observed={f.name: f.calls for f in arms}, weights={f.name: f.weight for f in arms}
    )


def _timeline(
    calls: QuerySet[Call], record: ExperimentRecord, names: list[str]
) -> tuple[str, list[TimelinePoint]]:
    """Cumulative sticky calls per variant, per minute, hour, day or week: the bucket follows the
    experiment's window (``chart_time.timeline_unit``), so an hour-old experiment is not one
    point and a month-long one is not seven hundred."""
    end = record.stopped_at or timezone.now()
    unit = timeline_unit(end - record.started_at)
    rows = (
        calls.annotate(at=Trunc("created_at", unit))
        .values("at", "variant")
        .annotate(n=Count("id"))
        .order_by("at")
    )
    running = dict.fromkeys(names, 0)
    points: list[TimelinePoint] = []
    for row in rows:
        running[row["variant"]] += row["n"]
        if points and points[-1].at == row["at"]:
            points[-1].cumulative.update(running)
        else:
            points.append(TimelinePoint(at=row["at"], cumulative=dict(running)))
    return unit, points
