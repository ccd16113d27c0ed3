"""The statistics behind canary analysis and A/B results: pure, standard library only.

Every function is keyword-only where arguments could be swapped, refuses invalid input with a
``ValueError`` that says what is wrong, and returns a frozen dataclass holding the figures a
release manager reads: the estimate, its confidence interval, the statistic, the two-sided
p-value and the sizes of the inputs. Every estimate is **b relative to a** (b − a, or "b tends to
be larger" for ranks): pass the stable version or control as ``a`` and the canary or variant as
``b``. No figure is ever NaN or infinite, so results serialise to JSON as they are.

Functions (each checked against SciPy in tests/evaluations/test_statistics.py):

- ``proportion_interval``: one rate's Wilson score interval.
- ``two_proportions``: rates (error rate, pass rate, conversion); Newcombe's hybrid score
  interval for the difference, pooled two-sided z-test.
- ``welch_t`` / ``welch_t_samples``: means with unequal variances; Welch–Satterthwaite df.
- ``mann_whitney_u``: latency and cost (skewed, heavy-tailed); normal approximation with tie and
  continuity corrections, rank-biserial effect size.
- ``sample_ratio_mismatch``: chi-square goodness of fit of the observed split to the weights.
- ``sequential_threshold`` / ``significant``: the p-value threshold for a look at a running test.
- ``student_t_cdf``, ``student_t_ppf``, ``chi2_sf``: the distributions the above need (the normal
  one is ``statistics.NormalDist``; tail probabilities use ``math.erfc``, which keeps p-values
  like 1e-30 instead of rounding them to 0 as ``1 - cdf`` would).

How a results page uses the sequential correction
--------------------------------------------------

An A/B test that is looked at every day and stopped the first time p < 0.05 is wrong far more
often than 5 % of the time. So before the test starts, fix the planned sample ``N`` (sticky calls
over all variants, from a power calculation or a policy), and on every look:

1. ``srm = sample_ratio_mismatch(observed=calls_per_variant, weights=split)``: when
   ``srm.mismatch``, show the warning and declare nothing (and hold any automatic decision):
   the assignment is broken, so every other figure is suspect.
2. ``information_fraction = n / N`` with ``n`` the sticky calls so far (all variants). It must be
   in (0, 1]: at ``n >= N`` the test is over; the page shows the final analysis, and a caller
   that keeps looking past the plan passes ``min(n / N, 1)`` deliberately (each extra look at the
   full alpha adds error).
3. For each metric: ``result = two_proportions(...)`` or ``welch_t(...)``, then
   ``significant(result.p_value, information_fraction=..., alpha=0.05)``; show
   ``sequential_threshold(...)`` next to the p-value so the reader sees why a small p early on
   is not yet enough. Confidence intervals are the ordinary (fixed-sample) ones: read them as
   descriptive until the final look.

What the threshold guarantees, and what it does not
---------------------------------------------------

``sequential_threshold`` is the Lan–DeMets O'Brien–Fleming-type spending function,
alpha(t) = 2 − 2Φ(z_{1−α/2} / √t): the alpha spent *in total* by information fraction t. Using
that cumulative figure as the threshold of the current look is a simplification of the exact
group-sequential boundary (which solves a recursive integral over the previous looks). It
guarantees that:

- any single look, on its own, has a false-positive rate of exactly alpha(t) ≤ α;
- early looks need overwhelming evidence (t = 0.1: p < 6e-10; t = 0.25: p < 9e-5; t = 0.5:
  p < 0.0056), so the peeking that does the most damage is the one it blocks;
- the final look (t = 1) is the ordinary fixed-sample test at α, so a test looked at only once
  is unchanged.

It does **not** hold the overall false-positive rate of a test looked at K times to exactly α:
that is at most the sum of the thresholds (a union bound), and by simulation (Brownian motion,
K equally spaced looks, α = 0.05) about 0.052 for 2 looks, 0.055 for 3, 0.062 for 5, 0.068 for
10 and 0.076 for 20, against roughly 0.14, 0.19 and 0.25 for 5, 10 and 20 unadjusted looks. It is
not valid either when the planned sample is changed after seeing the data, nor for one-sided
tests, nor across several metrics (each metric is its own family).

Pure module: no Django, no third-party imports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, variance

_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)

# The continued fractions and series below converge to double precision in well under this many
# terms for every argument the tests sweep (df up to 1e9); hitting it means a bug, not bad luck.
_MAX_ITERATIONS = 100_000
_EPSILON = 1e-16
_TINY = 1e-300  # Lentz's guard against a zero denominator
_LARGE_DF = 1e7  # above this, Student's t comes from its expansion around the normal


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float
    confidence: float  # e.g. 0.95


@dataclass(frozen=True, slots=True)
class ProportionsResult:
    successes_a: int
    total_a: int
    successes_b: int
    total_b: int
    rate_a: float
    rate_b: float
    difference: float  # rate_b − rate_a
    ci: Interval  # Newcombe's hybrid score interval for the difference
    z: float  # pooled z statistic; 0 when every outcome is the same
    p_value: float  # two-sided
    ci_method: str = "newcombe-wilson"


@dataclass(frozen=True, slots=True)
class WelchResult:
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    difference: float  # mean_b − mean_a
    ci: Interval
    t: float
    df: float  # Welch–Satterthwaite degrees of freedom
    p_value: float  # two-sided


@dataclass(frozen=True, slots=True)
class MannWhitneyResult:
    n_a: int
    n_b: int
    u_a: float  # U of sample a (what scipy.stats.mannwhitneyu(a, b) calls the statistic)
    u_b: float  # n_a * n_b − u_a
    z: float  # with tie and continuity corrections; 0 when every value is tied
    p_value: float  # two-sided, normal approximation
    # (u_b − u_a) / (n_a n_b) in [−1, 1] = P(b > a) − P(b < a): positive when b tends to be larger
    # (a canary passed as b is slower or more expensive than stable).
    rank_biserial: float


@dataclass(frozen=True, slots=True)
class SrmArm:
    name: str
    observed: int
    expected: float


@dataclass(frozen=True, slots=True)
class SrmResult:
    arms: tuple[SrmArm, ...]  # in the order of ``weights``
    total: int
    statistic: float  # chi-square
    df: int
    p_value: float
    threshold: float
    mismatch: bool  # p_value < threshold: the split is broken, hold every decision


# --- Distributions ------------------------------------------------------------------------------


def _log_complement(x: float, y: float) -> tuple[float, float]:
    """(log x, log y) for x + y = 1, each from whichever of the pair is accurate."""
    log_x = math.log(x) if x < 0.5 else math.log1p(-y)
    log_y = math.log(y) if y < 0.5 else math.log1p(-x)
    return log_x, log_y


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes' betacf), by modified Lentz."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < _EPSILON:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _stirling_remainder(x: float) -> float:
    """lgamma(x) − ((x − ½) ln x − x + ½ ln 2π), by its asymptotic series (x ≥ 10: the first
    omitted term is below 1e-12 of a remainder that is itself below 0.01)."""
    x2 = x * x
    return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * x2)) / x2) / x2) / x


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b). With one argument large (Welch df runs into the millions), lgamma(a + b) −
    lgamma(a) subtracts two numbers near a·ln a and loses about log10(a) digits; the difference
    is taken analytically instead: ln Γ(L + s) − ln Γ(L) = (L − ½) log1p(s/L) + s ln(L + s) − s
    + remainder(L + s) − remainder(L)."""
    small, large = min(a, b), max(a, b)
    if large < 10.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_ratio = (
        (large - 0.5) * math.log1p(small / large)
        + small * math.log(large + small)
        - small
        + _stirling_remainder(large + small)
        - _stirling_remainder(large)
    )
    return math.lgamma(small) - log_ratio


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), given x and y = 1 − x separately so that neither
    loses digits to a subtraction (for the t distribution both come from t² / (df + t²))."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_x, log_y = _log_complement(x, y)
    log_front = a * log_x + b * log_y - _log_beta(a, b)
    # The fraction converges fast only left of the mean; right of it, use the symmetry
    # I_x(a, b) = 1 − I_y(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def _t_two_sided(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    if df > _LARGE_DF and t**8 < 3e-9 * df * df:
        # The incomplete beta's fraction needs ~√df terms here and its rounding adds up (1e-8 at
        # df = 1e9); Fisher's expansion in 1/df (Abramowitz & Stegun 26.7.5) errs by about
        # 0.03 t⁸ / df², kept below 1e-10 by the condition.
        x = abs(t)
        density = math.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)
        g1 = (x**3 + x) / 4.0
        g2 = (5.0 * x**5 + 16.0 * x**3 + 3.0 * x) / 96.0
        return math.erfc(x / _SQRT2) + 2.0 * density * (g1 / df + g2 / (df * df))
    t2 = t * t
    return _betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def _t_log_pdf(t: float, df: float) -> float:
    # 1 / (√df · B(df/2, ½)) is Γ((df+1)/2) / (√(df π) Γ(df/2)), without the cancellation.
    return (
        -_log_beta(df / 2.0, 0.5) - 0.5 * math.log(df) - (df + 1.0) / 2.0 * math.log1p(t * t / df)
    )


def _check_df(df: float) -> None:
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"degrees of freedom must be a positive finite number, not {df!r}")


def student_t_cdf(x: float, df: float) -> float:
    """P(T ≤ x) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    _check_df(df)
    if math.isnan(x):
        raise ValueError("x must be a number, not NaN")
    half_tail = _t_two_sided(x, df) / 2.0
    return half_tail if x < 0 else 1.0 - half_tail


def _t_critical(tail: float, df: float) -> float:
    """The t > 0 with P(|T| > t) = ``tail`` (0 < tail < 1).

    1. Bracket: [0, hi] with hi doubled from the normal quantile until its tail is below target.
    2. Newton on log P(|T| > t), whose slope −2 pdf / P is known in closed form; working in logs
       keeps the steps sensible in the far tail.
    3. Any step leaving the bracket, or not shrinking, is replaced by bisection, so the search
       always converges; it stops when the bracket or the step is at double precision.
    """
    target = math.log(tail)
    lo, hi = 0.0, max(1.0, _NORMAL.inv_cdf(1.0 - tail / 2.0))
    while _t_two_sided(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    t = (lo + hi) / 2.0
    for _ in range(_MAX_ITERATIONS):
        p = _t_two_sided(t, df)
        if p == 0.0:  # underflow: far beyond the root
            hi = t
            t = (lo + hi) / 2.0
            continue
        f = math.log(p) - target
        if f > 0:
            lo = t
        else:
            hi = t
        slope = -2.0 * math.exp(_t_log_pdf(t, df)) / p
        step = f / slope
        candidate = t - step
        if not (lo < candidate < hi):
            candidate = (lo + hi) / 2.0
        if abs(candidate - t) <= 4 * _EPSILON * abs(candidate) or hi - lo <= 4 * _EPSILON * hi:
            return candidate
        t = candidate
    raise ArithmeticError(f"t quantile did not converge for tail={tail}, df={df}")


def student_t_ppf(q: float, df: float) -> float:
    """The quantile of Student's t: the x with P(T ≤ x) = q, for 0 < q < 1."""
    _check_df(df)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be strictly between 0 and 1, not {q!r}")
    if q == 0.5:
        return 0.0
    # Solve on the smaller tail: 2 * (1 − q) for q near 1 is exact, 1 − q would be the same.
    return _t_critical(2.0 * q, df) * -1.0 if q < 0.5 else _t_critical(2.0 * (1.0 - q), df)


def _gamma_upper_regularized(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a): the series for P below a + 1, Lentz's continued fraction for Q
    above it (each converges fast only on its own side)."""
    if x <= 0.0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(_MAX_ITERATIONS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _EPSILON:
                return max(0.0, 1.0 - total * math.exp(log_front))
        raise ArithmeticError(f"incomplete gamma series did not converge for a={a}, x={x}")
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPSILON:
            return math.exp(log_front) * h
    raise ArithmeticError(f"incomplete gamma fraction did not converge for a={a}, x={x}")


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square with ``df`` degrees of freedom: Q(df/2, x/2)."""
    _check_df(df)
    if math.isnan(x):
        raise ValueError("x must be a number, not NaN")
    return _gamma_upper_regularized(df / 2.0, x / 2.0)


def _normal_two_sided(z: float) -> float:
    return math.erfc(abs(z) / _SQRT2)


# --- Validation ---------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, not {confidence!r}")


def _check_count(name: str, value: object) -> int:
    # bool is an int; a True where a count belongs is a caller's bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer count, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def _check_finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _check_sample(name: str, sample: Sequence[float]) -> list[float]:
    values = [_check_finite(f"every value of {name}", value) for value in sample]
    if not values:
        raise ValueError(f"sample {name} is empty: there is nothing to compare")
    return values


# --- Two proportions ----------------------------------------------------------------------------


def proportion_interval(*, successes: int, total: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for one rate (an arm's error rate, a variant's conversion)."""
    _check_confidence(confidence)
    successes, total = _check_count("successes", successes), _check_count("total", total)
    if total == 0 or successes > total:
        raise ValueError(f"need 0 <= successes <= total and total > 0, got {successes}/{total}")
    low, high = _wilson(successes, total, _NORMAL.inv_cdf(0.5 + confidence / 2))
    return Interval(low, high, confidence)


def _wilson(successes: int, total: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for one proportion: never outside [0, 1], and not empty at 0 or
    n successes (where the Wald interval collapses to a point)."""
    p = successes / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def two_proportions(
    *,
    successes_a: int,
    total_a: int,
    successes_b: int,
    total_b: int,
    confidence: float = 0.95,
) -> ProportionsResult:
    """Compare two rates, b − a.

    Interval: Newcombe's hybrid score interval (method 10 of Newcombe 1998), built from each
    rate's Wilson interval (l, u):
    ``[d − √((p_b − l_b)² + (u_a − p_a)²), d + √((u_b − p_b)² + (p_a − l_a)²)]``. Unlike the Wald
    interval it stays inside [−1, 1] and keeps a useful width at 0 % and 100 %: with 0/n against
    0/m it is an interval around 0 whose width shrinks as n and m grow, not the point [0, 0].

    Test: the pooled two-sided z-test, z = d / √(p̂ (1 − p̂)(1/n_a + 1/n_b)) with p̂ the pooled
    rate. When p̂ is 0 or 1 (no successes, or nothing but successes, on both sides) the samples
    cannot differ: z = 0 and p = 1 rather than 0 / 0.

    Raises ValueError for a total below 1, negative counts, or more successes than the total.
    """
    _check_confidence(confidence)
    for side, successes, total in (("a", successes_a, total_a), ("b", successes_b, total_b)):
        _check_count(f"successes_{side}", successes)
        _check_count(f"total_{side}", total)
        if total == 0:
            raise ValueError(f"total_{side} is 0: a rate needs at least one observation")
        if successes > total:
            raise ValueError(f"successes_{side} ({successes}) cannot exceed total_{side} ({total})")
    rate_a, rate_b = successes_a / total_a, successes_b / total_b
    difference = rate_b - rate_a

    z_crit = _NORMAL.inv_cdf(0.5 + confidence / 2.0)
    low_a, high_a = _wilson(successes_a, total_a, z_crit)
    low_b, high_b = _wilson(successes_b, total_b, z_crit)
    ci = Interval(
        low=max(-1.0, difference - math.hypot(rate_b - low_b, high_a - rate_a)),
        high=min(1.0, difference + math.hypot(high_b - rate_b, rate_a - low_a)),
        confidence=confidence,
    )

    pooled = (successes_a + successes_b) / (total_a + total_b)
    variance_ = pooled * (1.0 - pooled) * (1.0 / total_a + 1.0 / total_b)
    z = difference / math.sqrt(variance_) if variance_ > 0 else 0.0
    return ProportionsResult(
        successes_a=successes_a,
        total_a=total_a,
        successes_b=successes_b,
        total_b=total_b,
        rate_a=rate_a,
        rate_b=rate_b,
        difference=difference,
        ci=ci,
        z=z,
        p_value=_normal_two_sided(z),
    )


# --- Welch's t ----------------------------------------------------------------------------------


def welch_t(
    *,
    mean_a: float,
    variance_a: float,
    n_a: int,
    mean_b: float,
    variance_b: float,
    n_b: int,
    confidence: float = 0.95,
) -> WelchResult:
    """Welch's unequal-variances t-test on summary statistics (``variance_*`` are the sample
    variances, divided by n − 1), for mean_b − mean_a.

    df = (v_a/n_a + v_b/n_b)² / ((v_a/n_a)²/(n_a − 1) + (v_b/n_b)²/(n_b − 1)); the interval is
    d ± t_{(1+confidence)/2, df} · √(v_a/n_a + v_b/n_b).

    Raises ValueError when a sample has fewer than 2 observations (its variance, and so df, is
    undefined) and when both variances are 0: two constant samples have no sampling error to
    test against (SciPy answers NaN there), so the caller compares the values directly.
    """
    _check_confidence(confidence)
    for side, n in (("a", n_a), ("b", n_b)):
        _check_count(f"n_{side}", n)
        if n < 2:
            raise ValueError(f"n_{side} is {n}: Welch's t needs at least 2 observations per sample")
    mean_a, mean_b = _check_finite("mean_a", mean_a), _check_finite("mean_b", mean_b)
    for side, v in (("a", variance_a), ("b", variance_b)):
        if _check_finite(f"variance_{side}", v) < 0:
            raise ValueError(f"variance_{side} must not be negative, got {v}")
    if variance_a == 0 and variance_b == 0:
        raise ValueError(
            "both samples have zero variance: Welch's t is undefined; compare the values directly"
        )
    share_a, share_b = variance_a / n_a, variance_b / n_b
    standard_error = math.sqrt(share_a + share_b)
    df = (share_a + share_b) ** 2 / (share_a**2 / (n_a - 1) + share_b**2 / (n_b - 1))
    difference = mean_b - mean_a
    t = difference / standard_error
    half_width = _t_critical(1.0 - confidence, df) * standard_error
    return WelchResult(
        mean_a=mean_a,
        mean_b=mean_b,
        n_a=n_a,
        n_b=n_b,
        difference=difference,
        ci=Interval(
            low=difference - half_width, high=difference + half_width, confidence=confidence
        ),
        t=t,
        df=df,
        p_value=_t_two_sided(t, df),
    )


def welch_t_samples(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> WelchResult:
    """``welch_t`` on raw samples (as scipy.stats.ttest_ind(a, b, equal_var=False), with the
    difference b − a). Variances are exact (``statistics.variance``), so a constant sample has
    variance exactly 0 rather than a rounding residue."""
    values_a, values_b = _check_sample("a", a), _check_sample("b", b)
    for name, values in (("a", values_a), ("b", values_b)):
        if len(values) < 2:
            raise ValueError(
                f"sample {name} has {len(values)} value: Welch's t needs at least 2 per sample"
            )
    return welch_t(
        mean_a=fmean(values_a),
        variance_a=variance(values_a),
        n_a=len(values_a),
        mean_b=fmean(values_b),
        variance_b=variance(values_b),
        n_b=len(values_b),
        confidence=confidence,
    )


# --- Mann–Whitney U -----------------------------------------------------------------------------


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> MannWhitneyResult:
    """Mann–Whitney U (Wilcoxon rank-sum) for "do values in b tend to differ from a?", as
    ``scipy.stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True)``.

    1. Rank the pooled values, ties getting their average rank; U_a = R_a − n_a(n_a + 1)/2.
    2. σ² = n_a n_b / 12 · ((n + 1) − Σ(t³ − t) / (n(n − 1))), over tie groups of size t.
    3. z = (|U_a − n_a n_b / 2| − ½) / σ, the ½ clipped at 0 (continuity correction);
       p = 2 · P(Z > z), at most 1.

    When every value is tied σ = 0: the samples cannot be told apart, so z = 0 and p = 1.
    Raises ValueError for an empty sample or a non-finite value.
    """
    values_a, values_b = _check_sample("a", a), _check_sample("b", b)
    n_a, n_b = len(values_a), len(values_b)
    n = n_a + n_b
    pooled = sorted([(value, 0) for value in values_a] + [(value, 1) for value in values_b])
    rank_sum_a = 0.0
    tie_term = 0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        size = j - i + 1
        average_rank = (i + j) / 2.0 + 1.0  # ranks are 1-based
        rank_sum_a += average_rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        tie_term += size**3 - size
        i = j + 1
    u_a = rank_sum_a - n_a * (n_a + 1) / 2.0
    u_b = n_a * n_b - u_a
    sigma_squared = n_a * n_b / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    distance = max(abs(u_a - n_a * n_b / 2.0) - 0.5, 0.0)
    z = (
        math.copysign(distance, u_a - n_a * n_b / 2.0) / math.sqrt(sigma_squared)
        if (sigma_squared > 0)
        else 0.0
    )
    return MannWhitneyResult(
        n_a=n_a,
        n_b=n_b,
        u_a=u_a,
        u_b=u_b,
        z=z,
        p_value=min(1.0, _normal_two_sided(z)),
        rank_biserial=(u_b - u_a) / (n_a * n_b),
    )


# --- Sample ratio mismatch ----------------------------------------------------------------------


def sample_ratio_mismatch(
    *,
    observed: Mapping[str, int],
    weights: Mapping[str, float],
    threshold: float = 0.001,
) -> SrmResult:
    """Does the observed split of sticky calls match the configured weights?

    Chi-square goodness of fit: expected_i = total · w_i / Σw (weights in any unit: basis
    points, percent, fractions), statistic Σ (o − e)² / e, df = arms − 1, p from the upper
    regularized incomplete gamma. ``mismatch`` is p < ``threshold``; 0.001 is the usual SRM
    alarm, strict because the check runs on every look and a false alarm stops a good test.

    Raises ValueError when the variants of ``observed`` and ``weights`` differ, there are fewer
    than 2, a weight is not positive (a variant with weight 0 has no place in the split), a count
    is negative, or nothing was observed yet.
    """
    if set(observed) != set(weights):
        missing = sorted(set(weights) - set(observed))
        extra = sorted(set(observed) - set(weights))
        raise ValueError(
            f"observed and weights must name the same variants (missing from observed: "
            f"{missing}, not in weights: {extra})"
        )
    if len(weights) < 2:
        raise ValueError("a sample ratio check needs at least 2 variants")
    if not (isinstance(threshold, int | float) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be strictly between 0 and 1, not {threshold!r}")
    for name, weight in weights.items():
        if _check_finite(f"weight of {name!r}", weight) <= 0:
            raise ValueError(f"weight of {name!r} must be positive, got {weight}")
    counts = {name: _check_count(f"observed count of {name!r}", observed[name]) for name in weights}
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no calls observed yet: there is no split to check")
    weight_sum = math.fsum(weights.values())
    arms = tuple(
        SrmArm(name=name, observed=counts[name], expected=total * weight / weight_sum)
        for name, weight in weights.items()
    )
    statistic = math.fsum((arm.observed - arm.expected) ** 2 / arm.expected for arm in arms)
    df = len(arms) - 1
    p_value = chi2_sf(statistic, df)
    return SrmResult(
        arms=arms,
        total=total,
        statistic=statistic,
        df=df,
        p_value=p_value,
        threshold=threshold,
        mismatch=p_value < threshold,
    )


# --- Looking repeatedly -------------------------------------------------------------------------


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be strictly between 0 and 1, not {alpha!r}")


def sequential_threshold(
    *, information_fraction: float, previous_fraction: float = 0.0, alpha: float = 0.05
) -> float:
    """The two-sided p-value below which a look at ``information_fraction`` (current sample /
    planned sample, in (0, 1]) counts as significant, from the Lan–DeMets O'Brien–Fleming-type
    spending function alpha(t) = 2 − 2Φ(z_{1−α/2} / √t), computed as erfc(z / √(2t)) so that tiny
    early thresholds keep their digits.

    With ``previous_fraction`` (the fraction at the previous look; 0 for the first) the threshold
    is the alpha spent since then, alpha(t) − alpha(t_prev): the thresholds of all looks add up to
    at most ``alpha``, so however many times a release manager looks, the chance of a false
    "significant" stays at most ``alpha`` (a union bound; conservative). Without it, the alpha
    spent so far (see the module docstring for what that weaker form guarantees)."""
    _check_alpha(alpha)
    t = _fraction(information_fraction, "information_fraction")
    if previous_fraction == 0.0:
        return _alpha_spent(t, alpha)
    previous = _fraction(previous_fraction, "previous_fraction")
    if previous >= t:
        raise ValueError(
            f"previous_fraction ({previous!r}) must be below information_fraction ({t!r})"
        )
    return max(0.0, _alpha_spent(t, alpha) - _alpha_spent(previous, alpha))


def _fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"{name} must be in (0, 1] (current sample / planned sample), not {value!r}"
        )
    return float(value)


def _alpha_spent(t: float, alpha: float) -> float:
    # min(): just below t = 1, erfc's rounding would land a hair above alpha (the quantile and
    # erfc each round), and the promise is never more than alpha. At t = 1 exactly, alpha itself.
    spent = math.erfc(_NORMAL.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(2.0 * t))
    return min(float(alpha), spent) if t < 1.0 else float(alpha)


def significant(
    p_value: float,
    *,
    information_fraction: float,
    previous_fraction: float = 0.0,
    alpha: float = 0.05,
) -> bool:
    """Whether ``p_value`` beats the sequential threshold at this look."""
    if not (isinstance(p_value, int | float) and 0.0 <= p_value <= 1.0):
        raise ValueError(f"p_value must be between 0 and 1, not {p_value!r}")
    threshold = sequential_threshold(
        information_fraction=information_fraction, previous_fraction=previous_fraction, alpha=alpha
    )
    return p_value < threshold
