"""evaluations.statistics against SciPy, the test oracle (a test dependency only; the module
itself is standard library). Known data sets first, then hypothesis-generated inputs with bounded
sizes, then the edge cases a results page meets: nothing observed, all ties, constant samples.

No database: these are pure functions."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from evaluations.statistics import (
    chi2_sf,
    mann_whitney_u,
    proportion_interval,
    sample_ratio_mismatch,
    sequential_threshold,
    significant,
    student_t_cdf,
    student_t_ppf,
    two_proportions,
    welch_t,
    welch_t_samples,
)

# Hypothesis' default deadline is a wall-clock threshold; the suite never uses those.
fast = settings(max_examples=80, deadline=None)

# Values on a 0.001 grid: SciPy warns (an error in this suite) about catastrophic cancellation
# on nearly identical floats, which says nothing about our arithmetic.
values = st.integers(min_value=-1_000_000, max_value=1_000_000).map(lambda i: i / 1000)
samples = st.lists(values, min_size=2, max_size=40)
# Few distinct values: ties are the case the tie correction exists for.
tied_samples = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=40)


def close(ours: float, reference: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return math.isclose(ours, float(reference), rel_tol=rel, abs_tol=abs_)


# --- Distributions ------------------------------------------------------------------------------


@pytest.mark.parametrize("df", [0.5, 1, 2, 3, 4.5, 10, 29, 100, 1e3, 1e5, 1e6, 1e8, 1e10])
@pytest.mark.parametrize("x", [-40.0, -7.0, -3.0, -1.96, -0.5, -1e-4, 0.0, 0.3, 1.0, 2.5, 12.0])
def test_student_t_cdf_matches_scipy(df, x):
    reference = stats.t.cdf(x, df)
    assert math.isclose(student_t_cdf(x, df), reference, rel_tol=1e-9, abs_tol=1e-300)


@fast
@given(
    x=st.floats(min_value=-60, max_value=60),
    df=st.floats(min_value=0.2, max_value=1e7),
)
def test_student_t_cdf_matches_scipy_anywhere(x, df):
    assert math.isclose(student_t_cdf(x, df), stats.t.cdf(x, df), rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize("df", [0.5, 1, 2, 5, 13.7, 60, 1e4, 1e6, 1e9])
@pytest.mark.parametrize("q", [1e-10, 0.001, 0.025, 0.05, 0.3, 0.5, 0.8, 0.975, 0.9995])
def test_student_t_ppf_matches_scipy(df, q):
    assert math.isclose(student_t_ppf(q, df), stats.t.ppf(q, df), rel_tol=1e-9, abs_tol=1e-12)


@fast
@given(q=st.floats(min_value=1e-8, max_value=1 - 1e-8), df=st.floats(min_value=0.5, max_value=1e6))
def test_student_t_ppf_inverts_the_cdf(q, df):
    assert math.isclose(student_t_cdf(student_t_ppf(q, df), df), q, rel_tol=1e-9)


def test_student_t_with_one_degree_of_freedom_is_cauchy():
    # A closed form, more exact than SciPy's t.cdf this close to 0 (which is off by ~1e-11).
    for x in (-1e-6, 1e-3, 0.7, 40.0):
        assert math.isclose(student_t_cdf(x, 1), 0.5 + math.atan(x) / math.pi, rel_tol=1e-13)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30, 250, 5000])
@pytest.mark.parametrize("x", [0.0, 1e-5, 0.5, 2.0, 7.5, 30.0, 300.0, 4000.0, 7000.0])
def test_chi2_sf_matches_scipy(df, x):
    reference = stats.chi2.sf(x, df)
    assert math.isclose(chi2_sf(x, df), reference, rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: student_t_cdf(1.0, 0), "degrees of freedom"),
        (lambda: student_t_cdf(math.nan, 3), "NaN"),
        (lambda: student_t_ppf(1.0, 3), "strictly between 0 and 1"),
        (lambda: student_t_ppf(0.5, -2), "degrees of freedom"),
        (lambda: chi2_sf(1.0, math.inf), "degrees of freedom"),
    ],
)
def test_distributions_refuse_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- Two proportions ----------------------------------------------------------------------------


def reference_proportions(sa: int, na: int, sb: int, nb: int, confidence: float = 0.95):
    """Newcombe's hybrid score interval from SciPy's Wilson intervals, and the pooled z by hand."""
    pa, pb = sa / na, sb / nb
    la, ua = stats.binomtest(sa, na).proportion_ci(confidence, method="wilson")
    lb, ub = stats.binomtest(sb, nb).proportion_ci(confidence, method="wilson")
    d = pb - pa
    low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    pooled = (sa + sb) / (na + nb)
    se = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    z = d / se if se else 0.0
    return d, low, high, z, 2 * stats.norm.sf(abs(z))


@given(
    total=st.integers(min_value=1, max_value=100_000),
    share=st.floats(min_value=0, max_value=1),
    confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_proportion_interval_matches_scipys_wilson_interval(total, share, confidence):
    successes = round(total * share)
    expected = stats.binomtest(successes, total).proportion_ci(confidence, method="wilson")

    interval = proportion_interval(successes=successes, total=total, confidence=confidence)

    assert interval.low == pytest.approx(expected.low, abs=1e-12)
    assert interval.high == pytest.approx(expected.high, abs=1e-12)
    assert 0.0 <= interval.low <= successes / total <= interval.high <= 1.0


@pytest.mark.parametrize(("successes", "total"), [(0, 0), (5, 4), (-1, 3)])
def test_proportion_interval_refuses_impossible_counts(successes, total):
    with pytest.raises(ValueError, match=r"total|successes"):
        proportion_interval(successes=successes, total=total)


def test_two_proportions_on_newcombes_worked_example():
    # Newcombe (1998), example (a): 56/70 against 48/80, method 10 gives 0.0524 to 0.2884 for
    # a − b. Here the difference is b − a, so the interval is mirrored.
    result = two_proportions(successes_a=48, total_a=80, successes_b=56, total_b=70)
    assert result.difference == pytest.approx(0.2)
    assert result.ci.low == pytest.approx(0.0524, abs=5e-5)
    assert result.ci.high == pytest.approx(0.3339, abs=5e-5)
    _d, low, high, z, p = reference_proportions(48, 80, 56, 70)
    assert (result.ci.low, result.ci.high) == (
        pytest.approx(low, rel=1e-12),
        pytest.approx(high, rel=1e-12),
    )
    assert close(result.z, z)
    assert close(result.p_value, p)
    assert result.p_value < 0.01
    assert result.ci.confidence == 0.95
    assert result.ci_method == "newcombe-wilson"
    assert (result.successes_a, result.total_a, result.successes_b, result.total_b) == (
        48,
        80,
        56,
        70,
    )


@fast
@given(
    st.integers(min_value=1, max_value=5000).flatmap(
        lambda na: st.tuples(st.integers(0, na), st.just(na))
    ),
    st.integers(min_value=1, max_value=5000).flatmap(
        lambda nb: st.tuples(st.integers(0, nb), st.just(nb))
    ),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_two_proportions_matches_the_reference(a, b, confidence):
    (sa, na), (sb, nb) = a, b
    result = two_proportions(
        successes_a=sa, total_a=na, successes_b=sb, total_b=nb, confidence=confidence
    )
    d, low, high, z, p = reference_proportions(sa, na, sb, nb, confidence)
    assert close(result.difference, d)
    assert close(result.ci.low, low, abs_=1e-12)
    assert close(result.ci.high, high, abs_=1e-12)
    assert close(result.z, z)
    assert math.isclose(result.p_value, p, rel_tol=1e-9, abs_tol=1e-300)
    assert -1.0 <= result.ci.low <= result.difference <= result.ci.high <= 1.0


@pytest.mark.parametrize(("successes", "total"), [(0, 0), (1, 0)])
def test_two_proportions_refuses_an_empty_side(successes, total):
    with pytest.raises(ValueError, match="total_b is 0"):
        two_proportions(successes_a=1, total_a=10, successes_b=successes, total_b=total)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"successes_a": 11}, r"successes_a \(11\) cannot exceed total_a \(10\)"),
        ({"successes_b": -1}, "successes_b must not be negative"),
        ({"total_a": 10.0}, "total_a must be an integer count"),
        ({"successes_a": True}, "successes_a must be an integer count"),
        ({"confidence": 1.0}, "confidence must be strictly between 0 and 1"),
        ({"confidence": 0}, "confidence must be strictly between 0 and 1"),
    ],
)
def test_two_proportions_refuses_invalid_counts(kwargs, message):
    arguments = {"successes_a": 3, "total_a": 10, "successes_b": 4, "total_b": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        two_proportions(**arguments)


@pytest.mark.parametrize(("successes_a", "successes_b"), [(0, 0), (200, 300)])
def test_no_difference_at_zero_or_all_successes_is_p_one_with_a_real_interval(
    successes_a, successes_b
):
    result = two_proportions(
        successes_a=successes_a, total_a=200, successes_b=successes_b, total_b=300
    )
    assert (result.difference, result.z, result.p_value) == (0.0, 0.0, 1.0)
    # Newcombe, not Wald: not the point [0, 0], and narrower with more data.
    assert result.ci.low < 0.0 < result.ci.high
    bigger = two_proportions(
        successes_a=successes_a * 10, total_a=2000, successes_b=successes_b * 10, total_b=3000
    )
    assert bigger.ci.high - bigger.ci.low < result.ci.high - result.ci.low


def test_none_against_all_is_decisive_and_stays_in_range():
    result = two_proportions(successes_a=0, total_a=50, successes_b=50, total_b=50)
    assert result.difference == 1.0
    assert result.p_value < 1e-20
    assert 0.8 < result.ci.low < result.ci.high == 1.0


# --- Welch's t ----------------------------------------------------------------------------------

# Latencies in ms of a stable version (a) and a canary (b), with unequal spread.
STABLE_MS = [212.0, 198.5, 240.1, 225.3, 205.0, 219.9, 231.4, 201.2, 215.5, 228.8, 209.3, 222.0]
CANARY_MS = [251.2, 190.4, 265.0, 238.7, 299.1, 212.6, 244.3, 270.9]


def assert_matches_ttest(result, a, b, confidence=0.95):
    with warnings.catch_warnings():
        # SciPy warns of precision loss on a constant sample; its answer is still exact there.
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = stats.ttest_ind(a, b, equal_var=False)
    # SciPy reports a − b; ours is b − a.
    assert close(result.t, -reference.statistic)
    assert close(result.df, reference.df)
    assert math.isclose(result.p_value, reference.pvalue, rel_tol=1e-9, abs_tol=1e-300)
    interval = reference.confidence_interval(confidence)
    assert close(result.ci.low, -interval.high, abs_=1e-9)
    assert close(result.ci.high, -interval.low, abs_=1e-9)


def test_welch_on_a_known_data_set():
    result = welch_t_samples(STABLE_MS, CANARY_MS)
    assert_matches_ttest(result, STABLE_MS, CANARY_MS)
    assert (result.n_a, result.n_b) == (12, 8)
    assert result.difference == pytest.approx(sum(CANARY_MS) / 8 - sum(STABLE_MS) / 12, rel=1e-12)
    assert result.ci.low < result.difference < result.ci.high
    assert 0.0 < result.p_value < 0.05


@fast
@given(a=samples, b=samples, confidence=st.sampled_from([0.9, 0.95, 0.99]))
def test_welch_matches_scipy(a, b, confidence):
    assume(len(set(a)) > 1 or len(set(b)) > 1)
    assert_matches_ttest(welch_t_samples(a, b, confidence), a, b, confidence)


def test_welch_from_summary_statistics_equals_welch_from_samples():
    summary = welch_t(
        mean_a=stats.tmean(STABLE_MS),
        variance_a=stats.tvar(STABLE_MS),
        n_a=12,
        mean_b=stats.tmean(CANARY_MS),
        variance_b=stats.tvar(CANARY_MS),
        n_b=8,
    )
    from_samples = welch_t_samples(STABLE_MS, CANARY_MS)
    assert summary.t == pytest.approx(from_samples.t, rel=1e-12)
    assert summary.ci.low == pytest.approx(from_samples.ci.low, rel=1e-12)


def test_welch_with_one_constant_sample_is_finite_and_matches_scipy():
    constant = [100.0] * 6
    result = welch_t_samples(constant, CANARY_MS)
    assert_matches_ttest(result, constant, CANARY_MS)
    assert result.df == pytest.approx(len(CANARY_MS) - 1)  # all the variance is b's


def test_welch_with_huge_samples_uses_millions_of_degrees_of_freedom():
    result = welch_t(
        mean_a=1.0, variance_a=4.0, n_a=3_000_000, mean_b=1.004, variance_b=5.0, n_b=2_500_000
    )
    share_a, share_b = 4.0 / 3_000_000, 5.0 / 2_500_000
    t = 0.004 / math.sqrt(share_a + share_b)
    df = (share_a + share_b) ** 2 / (share_a**2 / 2_999_999 + share_b**2 / 2_499_999)
    assert close(result.t, t)
    assert close(result.df, df)
    assert close(result.p_value, 2 * stats.t.sf(t, df))
    assert close(
        result.ci.high - result.difference, stats.t.ppf(0.975, df) * math.sqrt(share_a + share_b)
    )


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0], [1.0, 2.0], "sample a has 1 value"),
        ([1.0, 2.0], [], "sample b is empty"),
        ([1.0, math.nan], [1.0, 2.0], "finite number"),
        ([1.0, 2.0], [1.0, math.inf], "finite number"),
        ([5.0, 5.0, 5.0], [7.0, 7.0], "both samples have zero variance"),
        ([5.0, 5.0], [5.0, 5.0], "both samples have zero variance"),
    ],
)
def test_welch_samples_refuses_what_it_cannot_test(a, b, message):
    with pytest.raises(ValueError, match=message):
        welch_t_samples(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_a": 1}, "n_a is 1: Welch's t needs at least 2"),
        ({"n_b": 0}, "n_b is 0"),
        ({"variance_b": -0.1}, "variance_b must not be negative"),
        ({"mean_a": math.nan}, "mean_a must be a finite number"),
        ({"confidence": 95}, "confidence must be strictly between 0 and 1"),
    ],
)
def test_welch_refuses_invalid_summaries(kwargs, message):
    arguments = {
        "mean_a": 1.0,
        "variance_a": 1.0,
        "n_a": 10,
        "mean_b": 2.0,
        "variance_b": 1.0,
        "n_b": 10,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        welch_t(**arguments)


# --- Mann–Whitney U -----------------------------------------------------------------------------


def assert_matches_mannwhitneyu(result, a, b):
    reference = stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True)
    assert result.u_a == reference.statistic
    assert result.u_a + result.u_b == len(a) * len(b)
    assert math.isclose(result.p_value, reference.pvalue, rel_tol=1e-9, abs_tol=1e-300)


def test_mann_whitney_on_known_latencies():
    result = mann_whitney_u(STABLE_MS, CANARY_MS)
    assert_matches_mannwhitneyu(result, STABLE_MS, CANARY_MS)
    assert (result.n_a, result.n_b) == (12, 8)
    # The canary is mostly slower: the effect size says so, with b − a's sign.
    assert 0.3 < result.rank_biserial < 1.0
    assert result.z < 0  # U of a is below its mean: a's values are the smaller ones


@fast
@given(a=st.lists(values, min_size=1, max_size=40), b=st.lists(values, min_size=1, max_size=40))
def test_mann_whitney_matches_scipy(a, b):
    assume(len(set(a + b)) > 1)  # all tied: SciPy divides by zero (see the edge case below)
    assert_matches_mannwhitneyu(mann_whitney_u(a, b), a, b)


@fast
@given(a=tied_samples, b=tied_samples)
def test_mann_whitney_with_many_ties_matches_scipy(a, b):
    assume(len(set(a + b)) > 1)
    result = mann_whitney_u(a, b)
    assert_matches_mannwhitneyu(result, a, b)
    # Rank-biserial is P(b > a) − P(b < a) over every pair.
    pairs = [(x, y) for x in a for y in b]
    expected = (sum(y > x for x, y in pairs) - sum(y < x for x, y in pairs)) / len(pairs)
    assert result.rank_biserial == pytest.approx(expected, abs=1e-12)


def test_mann_whitney_with_every_value_tied_is_no_evidence():
    result = mann_whitney_u([3.0] * 5, [3.0] * 7)
    assert (result.u_a, result.z, result.p_value, result.rank_biserial) == (17.5, 0.0, 1.0, 0.0)


def test_mann_whitney_on_completely_separated_samples():
    result = mann_whitney_u(list(range(30)), list(range(100, 140)))
    assert_matches_mannwhitneyu(result, list(range(30)), list(range(100, 140)))
    assert result.rank_biserial == 1.0
    assert result.p_value < 1e-9


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([], [1.0], "sample a is empty"),
        ([1.0], [], "sample b is empty"),
        ([math.nan], [1.0], "finite"),
    ],
)
def test_mann_whitney_refuses_empty_or_invalid_samples(a, b, message):
    with pytest.raises(ValueError, match=message):
        mann_whitney_u(a, b)


# --- Sample ratio mismatch ----------------------------------------------------------------------


def test_srm_on_a_balanced_split_is_no_mismatch():
    result = sample_ratio_mismatch(observed={"A": 5030, "B": 4970}, weights={"A": 5000, "B": 5000})
    reference = stats.chisquare([5030, 4970], [5000, 5000])
    assert close(result.statistic, reference.statistic)
    assert close(result.p_value, reference.pvalue)
    assert (result.df, result.total, result.mismatch, result.threshold) == (1, 10_000, False, 0.001)
    assert [(arm.name, arm.observed, arm.expected) for arm in result.arms] == [
        ("A", 5030, 5000.0),
        ("B", 4970, 5000.0),
    ]


def test_srm_flags_a_broken_split():
    # 5 % too few in B: with 10,400 calls that is far beyond chance.
    result = sample_ratio_mismatch(observed={"A": 5400, "B": 5000}, weights={"A": 0.5, "B": 0.5})
    assert result.p_value < 0.001
    assert result.mismatch is True
    assert close(result.p_value, stats.chisquare([5400, 5000]).pvalue)


@fast
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=20_000), st.integers(min_value=1, max_value=10_000)
        ),
        min_size=2,
        max_size=6,
    ),
    st.sampled_from([0.001, 0.01, 0.05]),
)
def test_srm_matches_scipy(arms, threshold):
    assume(sum(count for count, _ in arms) > 0)
    observed = {f"v{i}": count for i, (count, _) in enumerate(arms)}
    weights = {f"v{i}": weight for i, (_, weight) in enumerate(arms)}
    result = sample_ratio_mismatch(observed=observed, weights=weights, threshold=threshold)
    total, weight_sum = sum(observed.values()), sum(weights.values())
    reference = stats.chisquare(
        list(observed.values()), [total * w / weight_sum for w in weights.values()]
    )
    assert close(result.statistic, reference.statistic, abs_=1e-9)
    assert math.isclose(result.p_value, reference.pvalue, rel_tol=1e-9, abs_tol=1e-300)
    assert result.df == len(arms) - 1
    assert result.mismatch == (result.p_value < threshold)


@pytest.mark.parametrize(
    ("observed", "weights", "message"),
    [
        (
            {"A": 10, "B": 12},
            {"A": 1, "C": 1},
            r"missing from observed: \['C'\], not in weights: \['B'\]",
        ),
        ({"A": 10}, {"A": 1}, "at least 2 variants"),
        ({"A": 10, "B": 12}, {"A": 1, "B": 0}, "weight of 'B' must be positive"),
        ({"A": 10, "B": -1}, {"A": 1, "B": 1}, "observed count of 'B' must not be negative"),
        ({"A": 0, "B": 0}, {"A": 1, "B": 1}, "no calls observed yet"),
        ({"A": 1.5, "B": 2}, {"A": 1, "B": 1}, "must be an integer count"),
    ],
)
def test_srm_refuses_inconsistent_input(observed, weights, message):
    with pytest.raises(ValueError, match=message):
        sample_ratio_mismatch(observed=observed, weights=weights)


# --- Looking repeatedly -------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_the_full_alpha_is_spent_at_the_planned_sample(alpha):
    assert sequential_threshold(information_fraction=1.0, alpha=alpha) == alpha


@pytest.mark.parametrize("t", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999])
def test_the_threshold_is_the_obrien_fleming_spending_function(t):
    z = stats.norm.ppf(1 - 0.05 / 2)
    reference = 2 * stats.norm.sf(z / math.sqrt(t))  # = 2 − 2Φ(z/√t), without the rounding
    assert math.isclose(
        sequential_threshold(information_fraction=t), reference, rel_tol=1e-9, abs_tol=1e-300
    )


def test_early_looks_need_overwhelming_evidence():
    assert sequential_threshold(information_fraction=0.1) < 1e-8
    assert sequential_threshold(information_fraction=0.25) < 1e-4
    assert sequential_threshold(information_fraction=0.5) < 0.006
    assert not significant(1e-6, information_fraction=0.1, alpha=0.05)
    assert significant(1e-6, information_fraction=0.5, alpha=0.05)


@fast
@given(
    st.floats(min_value=1e-3, max_value=1.0),
    st.floats(min_value=1e-3, max_value=1.0),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_the_threshold_grows_with_information_and_never_exceeds_alpha(t1, t2, alpha):
    low, high = sorted((t1, t2))
    threshold_low = sequential_threshold(information_fraction=low, alpha=alpha)
    threshold_high = sequential_threshold(information_fraction=high, alpha=alpha)
    assert 0.0 <= threshold_low <= threshold_high <= alpha


def test_significant_compares_strictly_with_the_threshold():
    threshold = sequential_threshold(information_fraction=0.6, alpha=0.05)
    assert significant(threshold * 0.999, information_fraction=0.6, alpha=0.05)
    assert not significant(threshold, information_fraction=0.6, alpha=0.05)
    assert significant(0.049, information_fraction=1.0, alpha=0.05)
    assert not significant(0.051, information_fraction=1.0, alpha=0.05)


@pytest.mark.parametrize("t", [0.0, -0.2, 1.01, math.nan, math.inf, True])
def test_the_information_fraction_must_be_within_the_plan(t):
    with pytest.raises(ValueError, match=r"information_fraction must be in \(0, 1\]"):
        sequential_threshold(information_fraction=t)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sequential_threshold(information_fraction=0.5, alpha=0.0), "alpha must be"),
        (lambda: significant(1.2, information_fraction=0.5), "p_value must be between 0 and 1"),
        (
            lambda: significant(math.nan, information_fraction=0.5),
            "p_value must be between 0 and 1",
        ),
    ],
)
def test_sequential_refuses_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- Results ------------------------------------------------------------------------------------


def test_results_are_frozen_and_serialise_without_nan_or_infinity():
    results = [
        two_proportions(successes_a=0, total_a=10, successes_b=0, total_b=10),
        welch_t_samples(STABLE_MS, CANARY_MS),
        mann_whitney_u([1.0, 1.0], [1.0]),
        sample_ratio_mismatch(observed={"A": 3, "B": 0}, weights={"A": 1, "B": 1}),
    ]
    for result in results:
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.p_value = 0.5  # type: ignore[misc]
        numbers = [
            value for value in _flatten(dataclasses.asdict(result)) if isinstance(value, float)
        ]
        assert numbers
        assert all(math.isfinite(value) for value in numbers)


def _flatten(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


@given(
    st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=20, unique=True),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_per_look_thresholds_add_up_to_at_most_alpha(fractions, alpha):
    looks = sorted(fractions)
    previous = 0.0
    total = 0.0
    for fraction in looks:
        threshold = sequential_threshold(
            information_fraction=fraction, previous_fraction=previous, alpha=alpha
        )
        assert threshold >= 0.0
        total += threshold
        previous = fraction
    assert total <= alpha + 1e-12


def test_a_previous_fraction_past_the_current_one_is_refused():
    with pytest.raises(ValueError, match="previous_fraction"):
        sequential_threshold(information_fraction=0.5, previous_fraction=0.6)
