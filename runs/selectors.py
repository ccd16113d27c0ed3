"""Reads of the runs app (STYLE R1, R16): the call and shadow-run lists, the shadow report of a
release and the shadow's disagreeing answers.

Every read here costs a fixed number of queries, whatever the number of calls or runs: counts,
sums and means are aggregated in the database, and the latency percentiles are computed in Python
over a bounded sample (the latest ``LATENCY_SAMPLE`` values of each side).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, RowNumber

from registry.models import Prompt, PromptVersion
from releases.models import Release

from .models import Call, ModelPrice, Provider, ShadowRun

# Percentiles read at most this many latencies per side, the latest first: enough for a stable
# p95 (250 values above it), and bounded, so the report costs the same after a month of shadows.
LATENCY_SAMPLE = 5_000
# Below this many finished runs on either side, agreement rates are too noisy to compare.
MIN_RUNS = 30
# Two-sided 95 %: |z| at or above this is significant.
Z_95 = 1.96
DISAGREEMENTS_LIMIT = 50
COST_PLACES = Decimal("0.00000001")  # Call.cost and ShadowRun.cost keep 8 decimal places


# --- lists ----------------------------------------------------------------------------------------


def provider_names() -> frozenset[str]:
    """Every configured provider's name, disabled ones included: disabling one must not make the
    drafts that name it uncommittable (docs/decisions/0008)."""
    return frozenset(Provider.objects.values_list("name", flat=True))


def enabled_provider_names() -> list[str]:
    """The providers a call may go to now, by name: what the playground offers."""
    return list(
        Provider.objects.filter(enabled=True).order_by("name").values_list("name", flat=True)
    )


def priced_models() -> dict[str, list[str]]:
    """Per provider (every configured one, with or without prices), the models it has a price
    for: what the version editor offers to pick from."""
    models: dict[str, list[str]] = {name: [] for name in provider_names()}
    for provider, model in ModelPrice.objects.values_list("provider__name", "model"):
        models.setdefault(provider, []).append(model)
    return models


def call_list() -> QuerySet[Call]:
    """Calls, newest first, with what a list row shows joined: no query per row."""
    return Call.objects.select_related("prompt", "version", "environment").order_by(
        "-created_at", "-id"
    )


# The calls a model answered: what latency, cost and tokens compare (canary analysis, A/B
# results). A response cache hit called none (decision 0050), nor did a run an input guardrail
# refused or answered with its fallback (decision 0052); the cache test keeps rows recorded
# before ``model_called`` existed right.
MODEL_ANSWERED = Q(cache="", model_called=True)


def traffic_calls(calls: QuerySet[Call] | None = None) -> QuerySet[Call]:
    """``calls`` (default: all) without the playground's: the calls a release served or a service
    reported. What release metrics (canary analysis, A/B results, a prompt's recent calls, the
    calls list by default) count: an author's playground runs are no one's traffic (decision
    0036)."""
    return (Call.objects.all() if calls is None else calls).exclude(source=Call.Source.PLAYGROUND)


def shadow_run_list() -> QuerySet[ShadowRun]:
    """Shadow runs, newest first, with their call, version and release joined."""
    return ShadowRun.objects.select_related(
        "call", "version", "release__prompt", "release__environment"
    ).order_by("-created_at", "-id")


def shadowed_releases() -> QuerySet[Release]:
    """Releases that have or had shadow runs (an EXISTS per release, on the release index)."""
    return (
        Release.objects.filter(Exists(ShadowRun.objects.filter(release=OuterRef("pk"))))
        .select_related("prompt", "environment")
        .order_by("prompt__key", "environment__position")
    )


# --- search -------------------------------------------------------------------------------------
#
# The calls list's search box. Request ids, prompt keys and version numbers are matched exactly,
# on indexes. Text is looked for (case-insensitive) in the stored redacted inputs and output of
# the newest ``CALL_TEXT_SEARCH_WINDOW`` calls the list's filters select, never the whole table:
# there is no index for "contains" (a trigram index on the text would be another extension and a
# large index on the largest table), so the scan is bounded instead, at the cost of older calls
# being found only once the filters (time, prompt, version) narrow the list to them.

CALL_TEXT_SEARCH_WINDOW = 10_000
_VERSION_TOKEN = re.compile(r"v(\d{1,9})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CallSearch:
    """A search term read: prompt keys and version numbers named in it, and the rest as text."""

    prompt_keys: tuple[str, ...]
    versions: tuple[int, ...]
    text: str


def call_search_parse(term: str) -> CallSearch:
    """Words that are a prompt's key or ``v<number>`` narrow by prompt and version (one query
    for the keys); the other words, as written, are the text."""
    words = term.split()
    keys = (
        set(Prompt.objects.filter(key__in=words).values_list("key", flat=True)) if words else set()
    )
    versions = []
    rest = []
    for word in words:
        match = _VERSION_TOKEN.fullmatch(word)
        if word in keys:
            continue
        if match:
            versions.append(int(match.group(1)))
            continue
        rest.append(word)
    return CallSearch(tuple(sorted(keys)), tuple(versions), " ".join(rest))


def call_search(queryset: QuerySet[Call], term: str) -> QuerySet[Call]:
    """``queryset`` (the list as filtered) narrowed by the search term (see above): the calls of
    the prompts and versions it names, and, when it has text, those whose request id is the text
    or whose redacted inputs or output contain it, among the newest ``CALL_TEXT_SEARCH_WINDOW``.
    Two queries at most before the list's own: the keys, then the text matches' ids."""
    search = call_search_parse(term)
    if search.prompt_keys:
        queryset = queryset.filter(prompt__key__in=search.prompt_keys)
    if search.versions:
        queryset = queryset.filter(version__number__in=search.versions)
    if not search.text:
        return queryset
    window = queryset.order_by("-created_at", "-id").values("pk")[:CALL_TEXT_SEARCH_WINDOW]
    matched = list(
        Call.objects.filter(pk__in=Subquery(window))
        .annotate(inputs_text=Cast("inputs", output_field=TextField()))
        .filter(Q(output__icontains=search.text) | Q(inputs_text__icontains=search.text))
        .values_list("pk", flat=True)[:CALL_TEXT_SEARCH_WINDOW]
    )
    return queryset.filter(Q(request_id=search.text) | Q(pk__in=matched))


# --- the shadow report ----------------------------------------------------------------------------


class Side(StrEnum):
    LIVE = "live"
    CANDIDATE = ShadowRun.Kind.CANDIDATE.value
    NOISE = ShadowRun.Kind.NOISE.value


class Verdict(StrEnum):
    DIFFERS = "differs more than the noise floor"
    WITHIN = "within the noise floor"
    NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True, slots=True)
class SideStats:
    """One column of the report: the live calls, one candidate version, or the noise floor.

    ``finished`` runs are the ones that ran to an end (``ok`` or ``error``); skipped (over budget)
    and pending runs are counted but left out of every rate. ``agreed`` is how many finished runs
    answered exactly as live did (None on the live side, which is what the others are compared
    with); an error never agrees. Similarity and latency are over ``ok`` runs only; the mean cost
    is over the runs that recorded a cost.
    """

    side: Side
    versions: tuple[int, ...]
    runs: int = 0
    ok: int = 0
    errors: int = 0
    over_budget: int = 0
    pending: int = 0
    agreed: int | None = None
    mean_similarity: float | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_sample: int = 0
    total_cost: Decimal | None = None
    mean_cost: Decimal | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    verdict: Verdict | None = None  # candidates only
    z: float | None = None  # the test statistic behind the verdict, when there was one

    @property
    def finished(self) -> int:
        return self.ok + self.errors

    @property
    def agreement(self) -> float | None:
        if self.agreed is None or not self.finished:
            return None
        return self.agreed / self.finished


@dataclass(frozen=True, slots=True)
class ShadowReport:
    release: Release
    since: datetime | None
    live: SideStats
    candidates: tuple[SideStats, ...]
    noise: SideStats

    @property
    def sides(self) -> tuple[SideStats, ...]:
        """Live, each candidate, the noise floor: the report's columns, in reading order."""
        return (self.live, *self.candidates, self.noise)

    @property
    def has_runs(self) -> bool:
        return any(c.runs for c in self.candidates) or self.noise.runs > 0


def agreement_verdict(
    *, candidate_agreed: int, candidate_finished: int, noise_agreed: int, noise_finished: int
) -> tuple[Verdict, float | None]:
    """Whether a candidate disagrees with live more than live disagrees with itself.

    1. Fewer than ``MIN_RUNS`` (30) finished runs on either side: "not enough data".
    2. Otherwise a two-proportion z-test on the agreement rates, with the pooled rate p:
       ``z = (noise rate - candidate rate) / sqrt(p (1 - p) (1/n_candidate + 1/n_noise))``.
    3. ``z >= 1.96`` (significant at 95 %, two-sided, and the candidate is the one that agrees
       less): "differs more than the noise floor". Anything else, including a candidate that
       agrees *more* than the noise floor, is "within the noise floor": no evidence, at this
       sample size, that it differs more than the model differs from itself.
    4. Both sides agreeing always (or never): the rates are equal, z is 0, "within".
    """
    if candidate_finished < MIN_RUNS or noise_finished < MIN_RUNS:
        return Verdict.NOT_ENOUGH_DATA, None
    pooled = (candidate_agreed + noise_agreed) / (candidate_finished + noise_finished)
    variance = pooled * (1 - pooled) * (1 / candidate_finished + 1 / noise_finished)
    if variance <= 0:
        return Verdict.WITHIN, 0.0
    z = (noise_agreed / noise_finished - candidate_agreed / candidate_finished) / math.sqrt(
        variance
    )
    return (Verdict.DIFFERS if z >= Z_95 else Verdict.WITHIN), z


def percentile(sorted_values: list[float], share: float) -> float | None:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


# The counters every side is aggregated into, per (kind, version) group, in one query; means are
# derived from sums and counts so groups can be pooled exactly (the noise floor over versions).
def _shadow_aggregates() -> dict[str, Any]:
    finished = Q(status__in=[ShadowRun.Status.OK, ShadowRun.Status.ERROR])
    ok = Q(status=ShadowRun.Status.OK)
    return {
        "runs": Count("id"),
        "ok": Count("id", filter=ok),
        "errors": Count("id", filter=Q(status=ShadowRun.Status.ERROR)),
        "over_budget": Count("id", filter=Q(status=ShadowRun.Status.OVER_BUDGET)),
        "pending": Count("id", filter=Q(status=ShadowRun.Status.PENDING)),
        "agreed": Count("id", filter=finished & Q(exact_match=True)),
        "similarity_sum": Sum("similarity", filter=ok),
        "similarity_n": Count("similarity", filter=ok),
        "cost_sum": Sum("cost"),
        "cost_n": Count("cost"),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
    }


def _call_aggregates() -> dict[str, Any]:
    return {
        "runs": Count("id"),
        "ok": Count("id", filter=Q(status=Call.Status.OK)),
        "errors": Count("id", filter=Q(status=Call.Status.ERROR)),
        "cost_sum": Sum("cost"),
        "cost_n": Count("cost"),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
    }


def _pooled(
    side: Side, groups: Iterable[Mapping[str, Any]], latencies: list[float], *, compared: bool
) -> SideStats:
    """One side from its aggregated groups (summed) and its latency sample."""
    groups = list(groups)

    def total(name: str) -> Any:
        return sum((g.get(name) or 0 for g in groups), 0)

    similarity_n, cost_n = total("similarity_n"), total("cost_n")
    # SQLite sums decimals as floats (0.0800000000000001): back to the field's 8 places.
    cost_sum = sum(
        (Decimal(g["cost_sum"]) for g in groups if g.get("cost_sum") is not None), Decimal(0)
    ).quantize(COST_PLACES)
    latencies = sorted(latencies)
    return SideStats(
        side=side,
        versions=tuple(sorted({g["version__number"] for g in groups})),
        runs=total("runs"),
        ok=total("ok"),
        errors=total("errors"),
        over_budget=total("over_budget"),
        pending=total("pending"),
        agreed=total("agreed") if compared else None,
        mean_similarity=total("similarity_sum") / similarity_n if similarity_n else None,
        latency_p50=percentile(latencies, 0.50),
        latency_p95=percentile(latencies, 0.95),
        latency_sample=len(latencies),
        total_cost=cost_sum if cost_n else None,
        mean_cost=(cost_sum / cost_n).quantize(COST_PLACES) if cost_n else None,
        input_tokens=total("input_tokens"),
        output_tokens=total("output_tokens"),
    )


def _with_verdict(candidate: SideStats, noise: SideStats) -> SideStats:
    verdict, z = agreement_verdict(
        candidate_agreed=candidate.agreed or 0,
        candidate_finished=candidate.finished,
        noise_agreed=noise.agreed or 0,
        noise_finished=noise.finished,
    )
    return replace(candidate, verdict=verdict, z=z)


def shadow_report(*, release: Release, since: datetime | None = None) -> ShadowReport:
    """The release's shadows side by side: live, each candidate version, and the noise floor.

    In four queries, whatever the number of runs:

    1. the shadow runs' counters grouped by kind and version (the noise floor pooled over the
       versions that were live in the window);
    2. their latest ``LATENCY_SAMPLE`` ok latencies per candidate version and for the noise floor
       (a window function, one query), for p50 and p95 by nearest rank;
    3. the counters of the live calls that were shadowed, by version, pooled;
    4. those calls' latest ``LATENCY_SAMPLE`` ok latencies.

    ``since`` keeps the runs created at or after it (and the live calls they shadowed). Every
    candidate the release shadows now is listed even before its first run. Each candidate gets a
    verdict from ``agreement_verdict`` against the noise floor.
    """
    runs = ShadowRun.objects.filter(release=release)
    if since is not None:
        runs = runs.filter(created_at__gte=since)

    groups: dict[Side, list[dict[str, Any]]] = defaultdict(list)
    for row in (
        runs.order_by()
        .values("kind", "version__number")
        .annotate(**_shadow_aggregates())
        .order_by("kind", "version__number")
    ):
        groups[Side(row["kind"])].append(row)

    noise_group = Case(
        When(kind=ShadowRun.Kind.NOISE, then=Value(0)),
        default=F("version_id"),
        output_field=BigIntegerField(),
    )
    sampled = (
        runs.filter(status=ShadowRun.Status.OK, latency_ms__isnull=False)
        .annotate(
            sample_rank=Window(
                RowNumber(),
                partition_by=[F("kind"), noise_group],
                order_by=[F("created_at").desc(), F("id").desc()],
            )
        )
        .filter(sample_rank__lte=LATENCY_SAMPLE)
        .values_list("kind", "version__number", "latency_ms")
    )
    latencies: dict[tuple[Side, int | None], list[float]] = defaultdict(list)
    for kind, number, latency in sampled:
        key = (Side.NOISE, None) if kind == ShadowRun.Kind.NOISE else (Side.CANDIDATE, number)
        latencies[key].append(latency)

    shadowed = Call.objects.filter(pk__in=runs.order_by().values("call_id"))
    live_groups = (
        shadowed.order_by()
        .values("version__number")
        .annotate(**_call_aggregates())
        .order_by("version__number")
    )
    live_latencies = list(
        shadowed.filter(status=Call.Status.OK, latency_ms__isnull=False)
        .order_by("-created_at", "-id")
        .values_list("latency_ms", flat=True)[:LATENCY_SAMPLE]
    )

    live = _pooled(Side.LIVE, live_groups, live_latencies, compared=False)
    noise = _pooled(Side.NOISE, groups[Side.NOISE], latencies[(Side.NOISE, None)], compared=True)
    by_version = {g["version__number"]: g for g in groups[Side.CANDIDATE]}
    numbers = sorted(set(by_version) | set(release.shadow_versions or ()))
    candidates = tuple(
        _with_verdict(
            _pooled(
                Side.CANDIDATE,
                [by_version[n]] if n in by_version else [{"version__number": n}],
                latencies[(Side.CANDIDATE, n)],
                compared=True,
            ),
            noise,
        )
        for n in numbers
    )
    return ShadowReport(release=release, since=since, live=live, candidates=candidates, noise=noise)


# --- the disagreeing pairs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A live answer and a shadow's answer to the same inputs, which did not match exactly."""

    shadow_run_id: int
    call_id: int
    request_id: str
    created_at: datetime
    kind: str
    live_version: int
    shadow_version: int
    inputs: Any
    live_output: str
    shadow_output: str
    similarity: float | None
    structure_diff: tuple[Any, ...]


def shadow_disagreements(
    *,
    release: Release,
    version: int | None = None,
    kind: ShadowRun.Kind = ShadowRun.Kind.CANDIDATE,
    since: datetime | None = None,
    limit: int = DISAGREEMENTS_LIMIT,
) -> list[Disagreement]:
    """The latest answered shadow runs of ``kind`` (one candidate ``version`` or all) that did not
    match the live answer exactly, with the live answer, for reading side by side. One query."""
    runs = (
        ShadowRun.objects.filter(
            release=release, kind=kind, status=ShadowRun.Status.OK, exact_match=False
        )
        .select_related("call__version", "version")
        .defer("attempts", "call__attempts")
        .order_by("-created_at", "-id")
    )
    if version is not None:
        runs = runs.filter(version__number=version)
    if since is not None:
        runs = runs.filter(created_at__gte=since)
    return [
        Disagreement(
            shadow_run_id=run.pk,
            call_id=run.call_id,
            request_id=run.call.request_id,
            created_at=run.created_at,
            kind=run.kind,
            live_version=run.call.version.number,
            shadow_version=run.version.number,
            inputs=run.call.inputs,
            live_output=run.call.output,
            shadow_output=run.output,
            similarity=run.similarity,
            structure_diff=structure_differences(run.structure_diff),
        )
        for run in runs[:limit]
    ]


def structure_differences(value: Any) -> tuple[Any, ...]:
    """``structure_diff`` as a sequence of differences, whatever shape it was stored in."""
    if value is None or value == [] or value == {}:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, dict):
        return tuple({"path": path, "change": change} for path, change in value.items())
    return (value,)


# --- the admin's filter choices -----------------------------------------------------------------

VARIANT_SAMPLE = 5_000


def call_variants(*, sample: int = VARIANT_SAMPLE) -> list[str]:
    """The variant names to filter calls by: stable and canary, then the experiment variants seen
    in the latest ``sample`` calls (a DISTINCT over the whole table would read every row)."""
    latest = Call.objects.order_by("-created_at").values("pk")[:sample]
    seen = set(
        Call.objects.filter(pk__in=latest)
        .exclude(variant__in=["", "stable", "canary"])
        .order_by()
        .values_list("variant", flat=True)
        .distinct()
    )
    return ["stable", "canary", *sorted(seen)]


def prompt_version_numbers(*, prompt_id: int) -> list[tuple[int, int]]:
    """(version id, number) of a prompt's versions, newest first: the version filter's choices."""
    return list(
        PromptVersion.objects.filter(prompt_id=prompt_id)
        .order_by("-number")
        .values_list("pk", "number")
    )
