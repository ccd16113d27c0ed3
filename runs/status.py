"""Reads of the runs app for the admin's status page (``config.status``): how each provider has
answered lately, from the attempts of recent call records, and the shadow runs that failed.

Both read a bounded sample on the ``created_at`` index, the newest first: the latest
``CALLS_SAMPLE`` calls of the window, the latest ``SHADOW_SAMPLE`` shadow runs of theirs. Past
that, the figures are the sample's, and say so. Percentiles are computed in Python over the
sample's latencies, as the shadow report's are (``runs.selectors.percentile``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Subquery

from .models import Call, Provider, ShadowRun
from .payloads import PayloadRefused
from .providers import Outcome
from .selectors import percentile, shadow_run_list
from .shadows import TIME_LIMIT

CALLS_SAMPLE = 5_000
SHADOW_SAMPLE = 10_000
PROVIDERS_LISTED = 100
FAILURES_LISTED = 10
ERROR_CLASSES_LISTED = 20
DETAIL_SHOWN = 300
# Attempts that never reached the provider (nothing was sent): counted, but they have no latency.
NOT_SENT = frozenset({Outcome.UNKNOWN_PROVIDER, Outcome.DISABLED, Outcome.REFUSED})
# What a shadow run's error class means to an operator, where it is the worker's doing.
SHADOW_FAILURE_MEANINGS = {
    TIME_LIMIT: "stopped at its Celery time limit",
    PayloadRefused.EXPIRED.value: "expired before a worker took it",
    PayloadRefused.UNREADABLE.value: "its sealed variables could not be opened",
}


# --- providers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastError:
    at: datetime
    call_id: int
    model: str
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """One provider's attempts in the window (retries and fallbacks each count once)."""

    name: str
    provider_id: int | None  # None: named by attempts, no longer configured
    enabled: bool
    attempts: int
    failed: int
    outcomes: list[tuple[str, int]]  # the failing outcomes, the most frequent first (then by name)
    p50_ms: float | None  # over the attempts sent to it
    p95_ms: float | None
    last_error: LastError | None

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.attempts if self.attempts else None


@dataclass(frozen=True, slots=True)
class ProviderHealthReport:
    providers: list[ProviderHealth]
    calls_read: int
    sampled: bool  # the window held more calls than CALLS_SAMPLE: the figures are the latest's


@dataclass
class _Tally:
    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    last_error: LastError | None = None


def provider_health(*, since: datetime, sample: int = CALLS_SAMPLE) -> ProviderHealthReport:
    """Every configured provider (and any other an attempt named) with its attempts since
    ``since``: how many, how many failed and by which outcome, p50 and p95 latency, and the last
    error. Two queries: the providers, and the sample's attempts."""
    rows = list(
        Call.objects.filter(created_at__gte=since)
        .order_by("-created_at", "-id")
        .values_list("id", "created_at", "attempts")[: sample + 1]
    )
    sampled = len(rows) > sample
    rows = rows[:sample]
    tallies: dict[str, _Tally] = {}
    for call_id, created_at, attempts in rows:  # newest first
        for attempt in reversed(_attempts(attempts)):  # a call's last attempt is its latest
            _count(tallies, attempt, call_id, created_at)
    configured = list(Provider.objects.order_by("name")[:PROVIDERS_LISTED])
    names = {p.name for p in configured}
    health = [_health(p.name, p.pk, p.enabled, tallies.get(p.name)) for p in configured]
    health += [
        _health(name, None, False, tally)
        for name, tally in sorted(tallies.items())
        if name not in names
    ][:PROVIDERS_LISTED]
    return ProviderHealthReport(health, len(rows), sampled)


def _attempts(value: Any) -> list[dict[str, Any]]:
    """A record's attempts that have the shape ``runs.calls.attempts_as_dicts`` writes."""
    if not isinstance(value, list):
        return []
    return [
        a
        for a in value
        if isinstance(a, dict)
        and isinstance(a.get("provider"), str)
        and isinstance(a.get("outcome"), str)
    ]


def _count(tallies: dict[str, _Tally], attempt: dict[str, Any], call_id: int, at: datetime) -> None:
    tally = tallies.setdefault(attempt["provider"], _Tally())
    tally.attempts += 1
    outcome = attempt["outcome"]
    tally.outcomes[outcome] += 1
    latency = attempt.get("latency_ms")
    if outcome not in NOT_SENT and isinstance(latency, int | float) and latency >= 0:
        tally.latencies.append(float(latency))
    if outcome != Outcome.OK and tally.last_error is None:
        detail = attempt.get("detail")
        model = attempt.get("model")
        tally.last_error = LastError(
            at=at,
            call_id=call_id,
            model=model if isinstance(model, str) else "",
            outcome=outcome,
            detail=_short(detail if isinstance(detail, str) else ""),
        )


def _health(
    name: str, provider_id: int | None, enabled: bool, tally: _Tally | None
) -> ProviderHealth:
    if tally is None:
        return ProviderHealth(name, provider_id, enabled, 0, 0, [], None, None, None)
    failing = sorted(
        ((o, n) for o, n in tally.outcomes.items() if o != Outcome.OK),
        key=lambda on: (-on[1], on[0]),
    )
    latencies = sorted(tally.latencies)
    return ProviderHealth(
        name=name,
        provider_id=provider_id,
        enabled=enabled,
        attempts=tally.attempts,
        failed=sum(n for _, n in failing),
        outcomes=failing,
        p50_ms=percentile(latencies, 0.5),
        p95_ms=percentile(latencies, 0.95),
        last_error=tally.last_error,
    )


def _short(text: str) -> str:
    return text if len(text) <= DETAIL_SHOWN else text[: DETAIL_SHOWN - 1] + "…"


# --- shadow runs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShadowFailures:
    by_error: list[tuple[str, str, int]]  # error class, what it means (or ""), how many
    latest: list[ShadowRun]
    sampled: bool  # the window held more runs than SHADOW_SAMPLE


def shadow_run_failures(*, since: datetime, sample: int = SHADOW_SAMPLE) -> ShadowFailures:
    """Shadow runs since ``since`` that ended in an error (a time limit, an expired payload, every
    model attempt failing...), counted by error class, and the latest few. Three queries, over the
    latest ``sample`` runs of the window."""
    window = ShadowRun.objects.filter(created_at__gte=since).order_by("-created_at", "-id")
    in_sample = Subquery(window.values("pk")[:sample])
    failed = ShadowRun.objects.filter(pk__in=in_sample, status=ShadowRun.Status.ERROR)
    counts = (
        failed.values("error_class")
        .annotate(runs=Count("pk"))
        .order_by("-runs", "error_class")[:ERROR_CLASSES_LISTED]
    )
    by_error = [
        (row["error_class"], SHADOW_FAILURE_MEANINGS.get(row["error_class"], ""), row["runs"])
        for row in counts
    ]
    latest = list(
        shadow_run_list().filter(pk__in=in_sample, status=ShadowRun.Status.ERROR)[:FAILURES_LISTED]
    )
    return ShadowFailures(by_error, latest, sampled=window[sample : sample + 1].exists())
