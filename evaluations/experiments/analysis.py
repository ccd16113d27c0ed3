"""The judgement behind A/B results: per-variant figures, the look, and each variant against control.

Pure: it works on counts, means and variances the database has already aggregated
(``evaluations.experiments.selectors`` reads them), and on ``evaluations.statistics``. How a look is
judged follows that module's docstring:

1. The sample ratio is checked first; a mismatch holds every decision (no "significant" at all).
2. The information fraction is sticky calls so far / the experiment's ``planned_calls``. With no
   planned sample, figures are shown but nothing is declared significant while the experiment
   runs; once it stops, that single look is the final one, at the full alpha.
3. Each metric's p-value is compared with the sequential threshold of the look (Lan–DeMets,
   O'Brien–Fleming type), not with alpha.

Rates use Wilson intervals (one variant) and Newcombe's interval with the pooled z-test (two);
means use Student's t interval (one) and Welch's t (two). Every difference is variant − control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

from registry.templatetags.registry_display import (
    MINUS,
    decimal,
    money,
    ms,
    p_phrase,
    percent,
    percent_points,
    sig_figs,
)

from ..statistics import (
    Interval,
    ProportionsResult,
    SrmResult,
    WelchResult,
    proportion_interval,
    sequential_threshold,
    student_t_ppf,
    two_proportions,
    welch_t,
)

CONFIDENCE = 0.95


class Metric(StrEnum):
    ERROR_RATE = "error_rate"
    SCHEMA_FAILURE_RATE = "schema_failure_rate"
    FEEDBACK = "feedback"
    LATENCY = "latency_ms"
    COST = "cost"


# label, whether lower is better, how a difference is written
METRICS: dict[Metric, tuple[str, bool, str]] = {
    Metric.ERROR_RATE: ("error rate", True, "points"),
    Metric.SCHEMA_FAILURE_RATE: ("schema-failure rate", True, "points"),
    Metric.FEEDBACK: ("mean feedback", False, ""),
    Metric.LATENCY: ("mean latency", True, "ms"),
    Metric.COST: ("mean cost per call", True, "cost"),
}


@dataclass(frozen=True, slots=True)
class Rate:
    count: int  # the calls with the outcome (errors, schema failures)
    total: int  # the calls it could happen to
    rate: float | None  # None with no calls
    ci: Interval | None  # Wilson score interval


@dataclass(frozen=True, slots=True)
class Mean:
    n: int  # calls with a value
    mean: float | None
    variance: float | None  # sample variance (n − 1); None below 2 values
    ci: Interval | None  # Student's t interval; None below 2 values


@dataclass(frozen=True, slots=True)
class VariantFigures:
    name: str
    version: int
    weight: int  # basis points of all traffic
    control: bool
    calls: int  # sticky calls in the window
    expected_share: float  # of the experiment's calls, from the weights
    observed_share: float | None
    error_rate: Rate
    schema_failure_rate: Rate  # among calls whose prompt has a response schema
    feedback: Mean
    latency_ms: Mean
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost: Mean  # per call, in the price table's currency
    input_tokens: Mean
    output_tokens: Mean

    def rate(self, metric: Metric) -> Rate:
        return self.error_rate if metric is Metric.ERROR_RATE else self.schema_failure_rate

    def mean(self, metric: Metric) -> Mean:
        return {Metric.FEEDBACK: self.feedback, Metric.LATENCY: self.latency_ms}.get(
            metric, self.cost
        )


@dataclass(frozen=True, slots=True)
class Look:
    """Where this look stands in the plan, and the p-value it takes to call a difference."""

    sticky_calls: int
    planned_calls: int | None
    information_fraction: float | None
    final: bool
    threshold: float | None  # None: nothing may be declared significant at this look
    explanation: str


@dataclass(frozen=True, slots=True)
class Comparison:
    variant: str
    metric: Metric
    label: str
    test: str  # "two proportions" or "Welch's t"; "" when it could not be run
    control_value: float | None
    variant_value: float | None
    difference: float | None  # variant − control
    ci: Interval | None
    p_value: float | None
    threshold: float | None
    significant: bool
    lower_is_better: bool
    reading: str  # the result in plain words


def rate_figure(count: int, total: int, confidence: float = CONFIDENCE) -> Rate:
    if total == 0:
        return Rate(count=0, total=0, rate=None, ci=None)
    ci = proportion_interval(successes=count, total=total, confidence=confidence)
    return Rate(count=count, total=total, rate=count / total, ci=ci)


def mean_figure(
    n: int, mean: float | None, variance: float | None, confidence: float = CONFIDENCE
) -> Mean:
    if n == 0 or mean is None:
        return Mean(n=0, mean=None, variance=None, ci=None)
    if n < 2 or variance is None:
        return Mean(n=n, mean=mean, variance=None, ci=None)
    # A database's variance of identical values can come back as a tiny negative rounding residue.
    variance = max(0.0, variance)
    half = student_t_ppf(0.5 + confidence / 2, n - 1) * math.sqrt(variance / n)
    return Mean(
        n=n, mean=mean, variance=variance, ci=Interval(mean - half, mean + half, confidence)
    )


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def experiment_look(
    *, sticky_calls: int, planned_calls: int | None, running: bool, alpha: float
) -> Look:
    """The information fraction and threshold of this look (see the module docstring, step 2)."""
    if sticky_calls == 0:
        return Look(
            sticky_calls=0,
            planned_calls=planned_calls,
            information_fraction=None,
            final=False,
            threshold=None,
            explanation="No sticky calls yet.",
        )
    if planned_calls is None:
        if running:
            return Look(
                sticky_calls=sticky_calls,
                planned_calls=None,
                information_fraction=None,
                final=False,
                threshold=None,
                explanation=(
                    "No planned sample: figures are shown, but nothing is declared significant "
                    "until the experiment stops; its results then are the one final look, at "
                    f"the full alpha ({sig_figs(alpha)})."
                ),
            )
        return Look(
            sticky_calls=sticky_calls,
            planned_calls=None,
            information_fraction=1.0,
            final=True,
            threshold=alpha,
            explanation=(
                "No planned sample: the experiment has stopped, so this is the one final look, "
                f"judged at the full alpha ({sig_figs(alpha)})."
            ),
        )
    fraction = min(sticky_calls / planned_calls, 1.0)
    threshold = sequential_threshold(information_fraction=fraction, alpha=alpha)
    if fraction >= 1.0:
        text = (
            f"The planned sample ({planned_calls:,} sticky calls) is reached: this is the final "
            f"look, judged at the full alpha ({sig_figs(alpha)})."
        )
        if sticky_calls > planned_calls:
            text += " Looking further past the plan adds error."
        return Look(
            sticky_calls=sticky_calls,
            planned_calls=planned_calls,
            information_fraction=1.0,
            final=True,
            threshold=threshold,
            explanation=text,
        )
    text = (
        f"{percent(fraction)} of the planned sample ({sticky_calls:,} of {planned_calls:,} sticky "
        f"calls): a difference counts only with p < {sig_figs(threshold)}, the alpha spent so far "
        "(O'Brien–Fleming type), so that looking early and often does not make a false win likely."
    )
    if not running:
        text += (
            " The experiment stopped before its planned sample, so it stays judged at the "
            "fraction it reached."
        )
    return Look(
        sticky_calls=sticky_calls,
        planned_calls=planned_calls,
        information_fraction=fraction,
        final=False,
        threshold=threshold,
        explanation=text,
    )


def variant_compare(
    *, control: VariantFigures, variant: VariantFigures, look: Look, held: bool
) -> list[Comparison]:
    """Every metric of ``variant`` against ``control``; a metric without enough data says why."""
    comparisons = []
    for metric, (label, lower_is_better, _) in METRICS.items():
        if metric in (Metric.ERROR_RATE, Metric.SCHEMA_FAILURE_RATE):
            a, b = control.rate(metric), variant.rate(metric)
            if a.total == 0 or b.total == 0:
                comparisons.append(_missing(variant, metric, a.rate, b.rate, _why_no_rate(metric)))
                continue
            result = two_proportions(
                successes_a=a.count, total_a=a.total, successes_b=b.count, total_b=b.total
            )
            test, values = "two proportions", (a.rate, b.rate)
        else:
            m_a, m_b = control.mean(metric), variant.mean(metric)
            if m_a.n < 2 or m_b.n < 2 or m_a.variance is None or m_b.variance is None:
                comparisons.append(
                    _missing(variant, metric, m_a.mean, m_b.mean, "needs 2 values per variant")
                )
                continue
            if m_a.variance == 0 and m_b.variance == 0:
                comparisons.append(
                    _missing(variant, metric, m_a.mean, m_b.mean, "every value is the same")
                )
                continue
            result = welch_t(
                mean_a=m_a.mean,
                variance_a=m_a.variance,
                n_a=m_a.n,
                mean_b=m_b.mean,
                variance_b=m_b.variance,
                n_b=m_b.n,
            )
            test, values = "Welch's t", (m_a.mean, m_b.mean)
        significant = not held and look.threshold is not None and result.p_value < look.threshold
        comparisons.append(
            Comparison(
                variant=variant.name,
                metric=metric,
                label=label,
                test=test,
                control_value=values[0],
                variant_value=values[1],
                difference=result.difference,
                ci=result.ci,
                p_value=result.p_value,
                threshold=look.threshold,
                significant=significant,
                lower_is_better=lower_is_better,
                reading=_reading(
                    name=variant.name,
                    control=control.name,
                    metric=metric,
                    result=result,
                    look=look,
                    held=held,
                    significant=significant,
                ),
            )
        )
    return comparisons


def _why_no_rate(metric: Metric) -> str:
    if metric is Metric.SCHEMA_FAILURE_RATE:
        return "needs calls with a response schema in both variants"
    return "needs calls in both variants"


def _missing(
    variant: VariantFigures, metric: Metric, a: float | None, b: float | None, why: str
) -> Comparison:
    label, lower_is_better, _ = METRICS[metric]
    return Comparison(
        variant=variant.name,
        metric=metric,
        label=label,
        test="",
        control_value=a,
        variant_value=b,
        difference=None,
        ci=None,
        p_value=None,
        threshold=None,
        significant=False,
        lower_is_better=lower_is_better,
        reading=f"No test of the {label}: it {why}.",
    )


def format_difference(metric: Metric, value: float) -> str:
    """A difference as a reader writes it: rates in percentage points, the others in their unit."""
    unit = METRICS[metric][2]
    if unit == "points":
        return percent_points(value)
    if unit == "ms":
        return ms(value, signed=True)
    if unit == "cost":
        return money(value, signed=True)
    text = decimal(value, 2)
    return text if text.startswith(MINUS) or text == "0" else f"+{text}"


def _reading(
    *,
    name: str,
    control: str,
    metric: Metric,
    result: ProportionsResult | WelchResult,
    look: Look,
    held: bool,
    significant: bool,
) -> str:
    label, lower_is_better, _ = METRICS[metric]
    difference, ci, p_value = result.difference, result.ci, result.p_value
    direction = "higher" if difference > 0 else "lower" if difference < 0 else "the same"
    size = format_difference(metric, abs(difference)).lstrip("+")
    said = (
        f"{name}'s {label} is {size} {direction} than {control}'s"
        if difference
        else f"{name}'s {label} is the same as {control}'s"
    )
    figures = (
        f"(95 % CI {format_difference(metric, ci.low)} to {format_difference(metric, ci.high)}, "
        f"{p_phrase(p_value)})"
    )
    if held:
        return f"{said} {figures}; no claim: the sample ratio does not match the split."
    if look.threshold is None:
        return f"{said} {figures}; no claim yet: {_no_claim(look)}."
    if not significant:
        return (
            f"{said} {figures}: not significant at this look (it needs p < {sig_figs(look.threshold)}); "
            "the difference may be noise."
        )
    better = (difference < 0) == lower_is_better
    return (
        f"{said} {figures}: significant at this look (p < {sig_figs(look.threshold)}), "
        f"so {name} is {'better' if better else 'worse'} on this metric."
    )


def _no_claim(look: Look) -> str:
    if look.sticky_calls == 0:
        return "no sticky calls"
    return "no planned sample, and the experiment is still running"


def srm_held(srm: SrmResult | None) -> bool:
    """A sample-ratio mismatch holds every decision, automatic or not."""
    return srm is not None and srm.mismatch
