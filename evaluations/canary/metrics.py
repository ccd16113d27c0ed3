"""The figures of one look at a canary: each arm's calls in the window, and every check on them.

Only sticky calls count (a call without a subject was drawn at random per request, so it says
nothing about a split), and only the two arms of the canary: variant ``canary`` served by the
canary's version, and variant ``stable`` served by the stable version, over the same window.
Calls in an experiment's variants are in neither arm.

Reads, a fixed number whatever the traffic:

1. one aggregate query over both arms, grouped by variant: calls, errors, schema checks and
   failures, cost count and sum, feedback count, sum and sum of squares;
2. the latest ``CANARY_ANALYSIS_SAMPLE_CAP`` latencies and costs of each arm (four queries): the
   rank tests and the p95 read at most that many values per arm, the newest first;
3. the shadow report of the release since the window opened (``runs.selectors.shadow_report``),
   when the canary's version has shadow runs in it.

Each check answers one of: ``within`` (the canary is shown within its margin), ``failed`` (worse
than its margin, and significantly so), ``unclear`` (neither, at this sample), ``not_judged`` (an
optional signal, schema, cost, feedback or shadow agreement, with fewer than ``MIN_VALUES`` values
in an arm) or ``unmeasured`` (a required figure is missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from statistics import NormalDist
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, Sum

from releases.models import BASIS_POINTS, Release
from runs.models import Call
from runs.selectors import MODEL_ANSWERED, percentile, shadow_report, traffic_calls

from .. import statistics

CANARY, STABLE = "canary", "stable"
# Below this many values in an arm, an optional signal (schema validity, cost, feedback, shadow
# agreement) is not judged: its interval would be too wide to show anything either way.
MIN_VALUES = 30


class CheckStatus(StrEnum):
    WITHIN = "within"
    FAILED = "failed"
    UNCLEAR = "unclear"
    NOT_JUDGED = "not_judged"
    UNMEASURED = "unmeasured"


@dataclass
class Arm:
    calls: int = 0
    errors: int = 0
    schema_checked: int = 0
    schema_failed: int = 0
    cost_n: int = 0
    cost_sum: Decimal = Decimal(0)
    feedback_n: int = 0
    feedback_mean: float | None = None
    feedback_variance: float | None = None
    latencies: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)


@dataclass
class Window:
    since: datetime
    until: datetime
    canary: Arm
    stable: Arm
    sample_cap: int

    @property
    def minutes(self) -> float:
        return (self.until - self.since).total_seconds() / 60


def trusted_calls(sources: dict[str, Any]) -> Q:
    """The calls a policy's ``sources`` trust (decision 0017): the registry's runs, and reports
    from any key or from the listed keys only. Never empty: the policy trusts one source at least."""
    trusted = Q(source=Call.Source.RUN) if sources["runs"] else None
    if sources["reports"]:
        reports = Q(source=Call.Source.REPORTED)
        if sources["keys"] is not None:
            reports &= Q(reported_by_key_id__in=sources["keys"])
        trusted = reports if trusted is None else trusted | reports
    assert trusted is not None  # canary_policy_validate refuses a policy trusting nothing
    return trusted


def trusted_feedback(sources: dict[str, Any]) -> Q | None:
    """Which feedback counts: feedback is always sent by an API key (with a report, or later for
    a run), so it follows the trust in reports; None when no feedback counts."""
    if not sources["reports"]:
        return None
    if sources["keys"] is None:
        return Q(feedback__isnull=False)
    return Q(feedback_key_id__in=sources["keys"])


def window_measure(
    *,
    release: Release,
    since: datetime,
    until: datetime,
    sources: dict[str, Any] | None = None,
) -> Window:
    """Both arms' figures for the window [since, until), in five queries, counting only the calls
    (and the feedback) that ``sources`` (a validated policy's) trusts; None counts every one."""
    cap = settings.CANARY_ANALYSIS_SAMPLE_CAP
    arms_filter = Q(variant=CANARY, version_id=release.canary_version_id)
    if release.stable_version_id is not None:
        arms_filter |= Q(variant=STABLE, version_id=release.stable_version_id)
    feedback = trusted_feedback(sources) if sources else Q(feedback__isnull=False)
    feedback_figures = (
        {
            "feedback_n": Count("feedback", filter=feedback),
            # Sums, not Variance(): SQLite's VAR_SAMP raises on fewer than two values, and
            # scores are bounded (-1..1), so the sum of squares loses nothing that matters.
            "feedback_sum": Sum("feedback", filter=feedback),
            "feedback_squares": Sum(F("feedback") * F("feedback"), filter=feedback),
        }
        if feedback is not None
        else {}
    )
    calls = traffic_calls().filter(
        arms_filter,
        trusted_calls(sources) if sources else Q(),
        prompt_id=release.prompt_id,
        environment_id=release.environment_id,
        sticky=True,
        created_at__gte=since,
        created_at__lt=until,
    )
    arms = {CANARY: Arm(), STABLE: Arm()}
    for row in (
        calls.order_by()
        .values("variant")
        .annotate(
            calls=Count("id"),
            errors=Count("id", filter=Q(status=Call.Status.ERROR)),
            schema_checked=Count("schema_valid"),
            schema_failed=Count("id", filter=Q(schema_valid=False)),
            cost_n=Count("cost", filter=MODEL_ANSWERED),  # a cache hit cost nothing: see below
            cost_sum=Sum("cost", filter=MODEL_ANSWERED),
            **feedback_figures,
        )
    ):
        arm = arms[row["variant"]]
        arm.calls, arm.errors = row["calls"], row["errors"]
        arm.schema_checked, arm.schema_failed = row["schema_checked"], row["schema_failed"]
        # SQLite sums decimals as floats: back through str to keep the digits it has.
        arm.cost_n, arm.cost_sum = row["cost_n"], Decimal(str(row["cost_sum"] or 0))
        n = arm.feedback_n = row.get("feedback_n", 0)
        if n:
            arm.feedback_mean = row["feedback_sum"] / n
        if n > 1:
            arm.feedback_variance = max(
                0.0, (row["feedback_squares"] - n * arm.feedback_mean**2) / (n - 1)
            )
    for name, arm in arms.items():
        # Latency and cost compare model calls: a response cache hit (decision 0050) called no
        # model, and a canary starts with a cold cache that stable's warm one would flatter; nor
        # did a run an input guardrail refused or answered (decision 0052), instant and free.
        # Errors, schema failures and feedback keep hits: the caller got that answer.
        newest = calls.filter(MODEL_ANSWERED, variant=name).order_by("-created_at", "-id")
        arm.latencies = list(
            newest.filter(latency_ms__isnull=False).values_list("latency_ms", flat=True)[:cap]
        )
        arm.costs = [
            float(c) for c in newest.filter(cost__isnull=False).values_list("cost", flat=True)[:cap]
        ]
    return Window(
        since=since, until=until, canary=arms[CANARY], stable=arms[STABLE], sample_cap=cap
    )


# --- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankFigures:
    """What a rank check (latency, cost) adds: the figure's increase over stable, the effect size,
    and whether the values read were capped (``CANARY_ANALYSIS_SAMPLE_CAP``)."""

    increase_percent: float | None
    rank_biserial: float
    values_capped: bool


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a look, with the figures it was decided on. Stored in a verdict's figures as
    ``as_dict()`` gives it (the API serves that JSON); ``from_dict`` reads a stored one back."""

    name: str
    label: str
    status: CheckStatus
    unit: str
    margin: float
    canary: float | None = None
    stable: float | None = None
    difference: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    n_canary: int = 0
    n_stable: int = 0
    detail: str = ""
    rank: RankFigures | None = None

    @property
    def passed(self) -> bool | None:
        return {CheckStatus.WITHIN: True, CheckStatus.FAILED: False}.get(self.status)

    def as_dict(self) -> dict[str, Any]:
        stored = {
            "name": self.name,
            "label": self.label,
            "status": str(self.status),
            "passed": self.passed,
            "unit": self.unit,
            "canary": self.canary,
            "stable": self.stable,
            "difference": self.difference,
            "ci": list(self.ci) if self.ci is not None else None,
            "p_value": self.p_value,
            "margin": self.margin,
            "n_canary": self.n_canary,
            "n_stable": self.n_stable,
            "detail": self.detail,
        }
        if self.rank is not None:
            stored["increase_percent"] = self.rank.increase_percent
            stored["rank_biserial"] = self.rank.rank_biserial
            stored["values_capped"] = self.rank.values_capped
        return stored

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Check:
        ci = stored.get("ci")
        rank = None
        if "rank_biserial" in stored:
            rank = RankFigures(
                stored.get("increase_percent"),
                stored["rank_biserial"],
                bool(stored.get("values_capped")),
            )
        return cls(
            name=stored["name"],
            label=stored["label"],
            status=CheckStatus(stored["status"]),
            unit=stored["unit"],
            margin=stored["margin"],
            canary=stored.get("canary"),
            stable=stored.get("stable"),
            difference=stored.get("difference"),
            ci=(ci[0], ci[1]) if ci else None,
            p_value=stored.get("p_value"),
            n_canary=stored.get("n_canary", 0),
            n_stable=stored.get("n_stable", 0),
            detail=stored.get("detail", ""),
            rank=rank,
        )


@dataclass(frozen=True, slots=True)
class SrmArm:
    name: str
    observed: int
    expected: float


@dataclass(frozen=True, slots=True)
class SrmFigures:
    """The sample ratio check of a look: does the arms' split match the canary's weight?"""

    arms: tuple[SrmArm, ...]
    statistic: float
    p_value: float
    threshold: float
    mismatch: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "arms": {a.name: {"observed": a.observed, "expected": a.expected} for a in self.arms},
            "statistic": self.statistic,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "mismatch": self.mismatch,
        }


@dataclass(frozen=True, slots=True)
class LookFigures:
    """Everything a look measured, as its verdict stores it (``as_dict``): the window, the minutes
    and calls the step needs, then, once measured, the calls per arm, the checks and the sample
    ratio check; or the error that stopped the measuring."""

    since: datetime
    until: datetime
    minutes: float
    needed_minutes: float
    needed_calls_per_arm: int
    calls: tuple[int, int] | None = None  # (canary, stable)
    checks: tuple[Check, ...] | None = None
    srm: SrmFigures | None = None
    sample_cap: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "minutes": self.minutes,
            "needed": {
                "minutes": self.needed_minutes,
                "calls_per_arm": self.needed_calls_per_arm,
            },
        }
        if self.calls is not None:
            stored["calls"] = {CANARY: self.calls[0], STABLE: self.calls[1]}
        if self.checks is not None:
            stored["checks"] = [c.as_dict() for c in self.checks]
            stored["srm"] = self.srm.as_dict() if self.srm is not None else None
            stored["sample_cap"] = self.sample_cap
        if self.error is not None:
            stored["error"] = self.error
        return stored


def _by_interval(low: float, high: float, margin: float) -> CheckStatus:
    """Worse is larger: the whole interval past the margin fails, the whole interval within it
    passes, an interval across the margin is unclear."""
    if low > margin:
        return CheckStatus.FAILED
    if high <= margin:
        return CheckStatus.WITHIN
    return CheckStatus.UNCLEAR


def rate_check(
    *,
    name: str,
    label: str,
    canary: tuple[int, int],
    stable: tuple[int, int],
    margin_pp: float,
    alpha: float,
    optional: bool,
) -> Check:
    """A rate (errors, schema failures) as (events, total) per arm; the margin in percentage
    points on canary − stable, judged by its (1 − alpha) Newcombe interval."""
    (events_c, total_c), (events_s, total_s) = canary, stable
    if min(total_c, total_s) < (MIN_VALUES if optional else 1):
        status = CheckStatus.NOT_JUDGED if optional else CheckStatus.UNMEASURED
        return Check(
            name,
            label,
            status,
            unit="pp",
            margin=margin_pp,
            n_canary=total_c,
            n_stable=total_s,
            detail=f"fewer than {MIN_VALUES} values in an arm",
        )
    result = statistics.two_proportions(
        successes_a=events_s,
        total_a=total_s,
        successes_b=events_c,
        total_b=total_c,
        confidence=1 - alpha,
    )
    low, high = result.ci.low * 100, result.ci.high * 100
    return Check(
        name,
        label,
        _by_interval(low, high, margin_pp),
        unit="pp",
        margin=margin_pp,
        canary=result.rate_b * 100,
        stable=result.rate_a * 100,
        difference=result.difference * 100,
        ci=(low, high),
        p_value=result.p_value,
        n_canary=total_c,
        n_stable=total_s,
    )


def _relative_increase(canary: float, stable: float) -> float | None:
    if stable > 0:
        return (canary - stable) / stable * 100
    return 0.0 if canary == 0 else None  # from nothing to something: no finite percent


def rank_check(
    *,
    name: str,
    label: str,
    canary_values: list[float],
    stable_values: list[float],
    canary_figure: float,
    stable_figure: float,
    margin_percent: float,
    alpha: float,
    unit: str,
    sample_cap: int,
) -> Check:
    """Latency (figure: p95) or cost (figure: mean) per call: fails when the figure is more than
    ``margin_percent`` above stable's *and* Mann–Whitney U says the canary's values tend to be
    larger (p < alpha); within when the figure is within the margin; else unclear."""
    increase = _relative_increase(canary_figure, stable_figure)
    mw = statistics.mann_whitney_u(stable_values, canary_values)
    worse = mw.p_value < alpha and mw.rank_biserial > 0
    if increase is not None and increase <= margin_percent:
        status = CheckStatus.WITHIN
    elif worse:
        status = CheckStatus.FAILED
    else:
        status = CheckStatus.UNCLEAR
    return Check(
        name,
        label,
        status,
        unit=unit,
        margin=margin_percent,
        canary=canary_figure,
        stable=stable_figure,
        difference=canary_figure - stable_figure,
        p_value=mw.p_value,
        n_canary=len(canary_values),
        n_stable=len(stable_values),
        rank=RankFigures(
            increase_percent=increase,
            rank_biserial=mw.rank_biserial,
            values_capped=max(len(canary_values), len(stable_values)) >= sample_cap,
        ),
    )


def latency_check(window: Window, *, margin: float, alpha: float) -> Check:
    c, s = window.canary.latencies, window.stable.latencies
    # Required, so a handful of latencies (calls reported without one) is not a pass: the p95
    # of five values is their maximum, and no rank test could show it worse.
    if min(len(c), len(s)) < MIN_VALUES:
        return Check(
            "p95_latency",
            "p95 latency",
            CheckStatus.UNMEASURED,
            unit="ms",
            margin=margin,
            n_canary=len(c),
            n_stable=len(s),
            detail=f"fewer than {MIN_VALUES} calls with a latency in an arm",
        )
    return rank_check(
        name="p95_latency",
        label="p95 latency",
        canary_values=c,
        stable_values=s,
        canary_figure=percentile(sorted(c), 0.95),
        stable_figure=percentile(sorted(s), 0.95),
        margin_percent=margin,
        alpha=alpha,
        unit="ms",
        sample_cap=window.sample_cap,
    )


def cost_check(window: Window, *, margin: float, alpha: float) -> Check:
    c, s = window.canary, window.stable
    if min(c.cost_n, s.cost_n) < MIN_VALUES:
        return Check(
            "cost",
            "cost per call",
            CheckStatus.NOT_JUDGED,
            unit="cost",
            margin=margin,
            n_canary=c.cost_n,
            n_stable=s.cost_n,
            detail=f"fewer than {MIN_VALUES} calls with a cost in an arm",
        )
    return rank_check(
        name="cost",
        label="cost per call",
        canary_values=c.costs,
        stable_values=s.costs,
        # The means over every call of the window (aggregated in the database), not the sample.
        canary_figure=float(c.cost_sum / c.cost_n),
        stable_figure=float(s.cost_sum / s.cost_n),
        margin_percent=margin,
        alpha=alpha,
        unit="cost",
        sample_cap=window.sample_cap,
    )


def feedback_check(window: Window, *, margin: float, alpha: float) -> Check:
    """Mean feedback (−1..1), canary − stable, by Welch's t on the database's means and
    variances: fails when the whole interval is below −margin, within when it is all above."""
    c, s = window.canary, window.stable
    common = {"unit": "score", "margin": margin, "n_canary": c.feedback_n, "n_stable": s.feedback_n}
    if min(c.feedback_n, s.feedback_n) < MIN_VALUES:
        return Check(
            "feedback",
            "feedback",
            CheckStatus.NOT_JUDGED,
            detail=f"fewer than {MIN_VALUES} calls with feedback in an arm",
            **common,
        )
    difference = c.feedback_mean - s.feedback_mean
    try:
        result = statistics.welch_t(
            mean_a=s.feedback_mean,
            variance_a=max(0.0, s.feedback_variance or 0.0),
            n_a=s.feedback_n,
            mean_b=c.feedback_mean,
            variance_b=max(0.0, c.feedback_variance or 0.0),
            n_b=c.feedback_n,
            confidence=1 - alpha,
        )
    except ValueError:
        # Both arms gave one constant score: no sampling error, the difference is exact.
        status = CheckStatus.WITHIN if difference >= -margin else CheckStatus.FAILED
        return Check(
            "feedback",
            "feedback",
            status,
            canary=c.feedback_mean,
            stable=s.feedback_mean,
            difference=difference,
            ci=(difference, difference),
            detail="every score the same in each arm",
            **common,
        )
    # Worse is smaller here: flip the signs to judge by the same rule as the rates.
    status = _by_interval(-result.ci.high, -result.ci.low, margin)
    return Check(
        "feedback",
        "feedback",
        status,
        canary=result.mean_b,
        stable=result.mean_a,
        difference=result.difference,
        ci=(result.ci.low, result.ci.high),
        p_value=result.p_value,
        **common,
    )


def _wilson(successes: int, total: int, confidence: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def shadow_check(*, release: Release, since: datetime, margin: float, alpha: float) -> Check | None:
    """The share of the canary version's shadow runs that answered as live did, against
    ``min_shadow_agreement`` (percent) by its Wilson interval; None when the canary's version
    has no shadow runs in the window (the check does not apply)."""
    number = release.canary_version.number
    report = shadow_report(release=release, since=since)
    candidate = next((c for c in report.candidates if c.versions == (number,)), None)
    if candidate is None or not candidate.runs:
        return None
    noise = report.noise.agreement
    common = {"unit": "%", "margin": margin, "n_canary": candidate.finished}
    common["n_stable"] = report.noise.finished
    if candidate.finished < MIN_VALUES:
        return Check(
            "shadow_agreement",
            "shadow agreement",
            CheckStatus.NOT_JUDGED,
            detail=f"fewer than {MIN_VALUES} finished shadow runs",
            **common,
        )
    agreement = candidate.agreed / candidate.finished
    low, high = _wilson(candidate.agreed, candidate.finished, 1 - alpha)
    # Worse is smaller: judge the shortfall below the minimum by the same rule as the rates.
    status = _by_interval(-high * 100, -low * 100, -margin)
    return Check(
        "shadow_agreement",
        "shadow agreement",
        status,
        canary=agreement * 100,
        stable=noise * 100 if noise is not None else None,
        difference=(agreement - noise) * 100 if noise is not None else None,
        ci=(low * 100, high * 100),
        detail="stable: the noise floor (live against itself)",
        **common,
    )


def srm_check(window: Window, *, release: Release) -> SrmFigures | None:
    """Do the arms' counts match the split? The canary draws first with its weight; the rest of
    the subjects go to an experiment's variants (their total weight) or stay on stable, so the
    expected canary : stable ratio is w : (1 − w)(1 − e). None when there is nothing to check."""
    canary_weight = release.canary_weight
    experiment_weight = sum(v["weight"] for v in release.experiment_variants or [])
    stable_weight = (BASIS_POINTS - canary_weight) * (BASIS_POINTS - experiment_weight)
    counts = {CANARY: window.canary.calls, STABLE: window.stable.calls}
    if canary_weight <= 0 or stable_weight <= 0 or not sum(counts.values()):
        return None
    result = statistics.sample_ratio_mismatch(
        observed=counts,
        weights={CANARY: canary_weight * BASIS_POINTS, STABLE: stable_weight},
    )
    return SrmFigures(
        arms=tuple(SrmArm(a.name, a.observed, a.expected) for a in result.arms),
        statistic=result.statistic,
        p_value=result.p_value,
        threshold=result.threshold,
        mismatch=result.mismatch,
    )


def _number(value: float | None, places: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{places}f}"


def check_text(check: Check) -> str:
    """One clause of a verdict's summary, with the figures it was decided on."""
    label, unit, status = check.label, check.unit, check.status
    if status in (CheckStatus.NOT_JUDGED, CheckStatus.UNMEASURED):
        return f"{label}: {status.replace('_', ' ')} ({check.detail})"
    places = 6 if unit == "cost" else 2
    shown_unit = {"pp": " %", "%": " %", "ms": " ms"}.get(unit, "")
    text = (
        f"{label} {_number(check.canary, places)}{shown_unit} vs "
        f"{_number(check.stable, places)}{shown_unit}"
    )
    if check.rank is not None and check.rank.increase_percent is not None:
        text += f" ({check.rank.increase_percent:+.1f} %, margin +{check.margin:g} %"
    elif unit == "%":
        text += f" (minimum {check.margin:g} %"
    else:
        diff_unit = " pp" if unit == "pp" else ""
        text += f" ({_number(check.difference, places)}{diff_unit}"
        if check.ci is not None:
            low, high = check.ci
            text += f", CI {_number(low, places)} to {_number(high, places)}{diff_unit}"
        sign = "-" if check.name == "feedback" else "+"
        text += f", margin {sign}{check.margin:g}{diff_unit}"
    if unit == "%" and check.ci is not None:
        text += f", CI {_number(check.ci[0])} to {_number(check.ci[1])} %"
    if check.p_value is not None:
        text += f", p={check.p_value:.3g}"
    return f"{text}): {status}"
