"""Properties of the traffic split (DESIGN.md, "Traffic split contract"), checked with hypothesis
on the pure bucketing and resolution: no database, ``ServedRelease`` values built directly.

The exact formula is pinned by the shared vectors (tests/contracts); these check what the
contract promises to people: a canary ramp only adds subjects, shares match weights, variants
never overlap, and an answer without a subject is not sticky."""

from __future__ import annotations

from collections import Counter
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from releases.bucketing import BUCKETS, Reason, assign, bucket
from releases.resolution import ServedRelease, resolve
from releases.state import Canary, Experiment, ReleaseState, Shadow, Variant
from tests.releases.served import served

SUBJECTS = 100_000
SALTS = (
    "support.refund-reply/production/canary/7/3f9a0c1d",
    "support.refund-reply/production/experiment/tone/77aa01be",
)

subjects = st.text(min_size=1, max_size=40)
salts = st.text(min_size=1, max_size=60)
weights = st.integers(min_value=0, max_value=BUCKETS)


def with_canary(weight: int, salt: str = SALTS[0]) -> ServedRelease:
    return served(ReleaseState(stable=1, canary=Canary(version=2, weight=weight, salt=salt)))


@st.composite
def splits(draw, max_variants: int = 5) -> list[tuple[str, int]]:
    """1 to ``max_variants`` named weights whose sum is at most 100 %."""
    count = draw(st.integers(min_value=1, max_value=max_variants))
    left, result = BUCKETS, []
    for i in range(count):
        weight = draw(st.integers(min_value=0, max_value=left))
        left -= weight
        result.append((f"variant-{i}", weight))
    return result


@cache
def buckets_of_many_subjects(salt: str) -> tuple[int, ...]:
    return tuple(bucket(salt, f"user-{i}") for i in range(SUBJECTS))


# --- the canary ----------------------------------------------------------------------------------


@given(subject=subjects, salt=salts, low=weights, high=weights)
def test_a_subject_in_a_canary_stays_there_when_the_percentage_rises(subject, salt, low, high):
    low, high = min(low, high), max(low, high)

    before = resolve(with_canary(low, salt), subject=subject, locale=None)
    after = resolve(with_canary(high, salt), subject=subject, locale=None)

    if before.assignment.reason is Reason.CANARY:
        assert after.assignment.reason is Reason.CANARY
        assert after.version.number == 2


@given(subject=subjects, salt=salts, low=weights, high=weights)
def test_lowering_a_canary_removes_only_the_highest_buckets(subject, salt, low, high):
    low, high = min(low, high), max(low, high)

    at_high = resolve(with_canary(high, salt), subject=subject, locale=None)
    at_low = resolve(with_canary(low, salt), subject=subject, locale=None)

    left = at_high.assignment.reason is Reason.CANARY and at_low.assignment.reason is Reason.STABLE
    assert left == (low <= bucket(salt, subject) < high)


@given(subject=subjects, salt=salts, weight=st.integers(min_value=1, max_value=BUCKETS))
def test_the_same_subject_always_gets_the_same_answer(subject, salt, weight):
    release = with_canary(weight, salt)

    first = resolve(release, subject=subject, locale=None)
    again = resolve(release, subject=subject, locale=None)

    assert (first.version.number, first.assignment) == (again.version.number, again.assignment)
    assert first.assignment.bucket == bucket(salt, subject)
    assert first.salt == salt


# --- shares --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(split=splits(), salt=st.sampled_from(SALTS))
def test_over_100000_subjects_each_split_gets_its_weight_within_1_point(split, salt):
    counts = Counter(assign(split, b) for b in buckets_of_many_subjects(salt))

    for label, weight in split:
        assert abs(100 * counts[label] / SUBJECTS - weight / 100) <= 1, (label, weight, counts)
    rest = BUCKETS - sum(w for _, w in split)
    assert abs(100 * counts[None] / SUBJECTS - rest / 100) <= 1


def shares(release: ServedRelease) -> Counter:
    return Counter(
        resolve(release, subject=f"user-{i}", locale=None).assignment.label for i in range(SUBJECTS)
    )


def test_a_resolved_canary_takes_its_share_of_100000_subjects():
    counts = shares(with_canary(1250))

    assert abs(counts["canary"] / SUBJECTS - 0.125) <= 0.01
    assert abs(counts["stable"] / SUBJECTS - 0.875) <= 0.01


def test_resolved_experiment_variants_take_their_shares_of_100000_subjects():
    experiment = Experiment(
        name="tone",
        variants=(Variant("warm", 2, 3000), Variant("brief", 3, 2000)),
        salt=SALTS[1],
    )
    counts = shares(served(ReleaseState(stable=1, experiment=experiment)))

    assert abs(counts["warm"] / SUBJECTS - 0.30) <= 0.01
    assert abs(counts["brief"] / SUBJECTS - 0.20) <= 0.01
    assert abs(counts["stable"] / SUBJECTS - 0.50) <= 0.01


def test_shadow_sampling_takes_its_share_and_is_independent_of_the_canary():
    state = ReleaseState(
        stable=1,
        canary=Canary(version=2, weight=5000, salt=SALTS[0]),
        shadow=Shadow(versions=(3,), sample=1000, salt="shadow-salt"),
    )
    release = served(state)
    answers = [resolve(release, subject=f"user-{i}", locale=None) for i in range(SUBJECTS)]

    sampled = [a for a in answers if a.shadow]
    assert abs(len(sampled) / SUBJECTS - 0.10) <= 0.01
    # Independent salts: the canary's half of the sample is about half of it.
    in_canary = sum(a.assignment.reason is Reason.CANARY for a in sampled)
    assert abs(in_canary / len(sampled) - 0.5) <= 0.05


# --- experiments ---------------------------------------------------------------------------------


@given(split=splits(max_variants=10))
def test_experiment_variants_are_disjoint_consecutive_ranges_of_buckets(split):
    ranges: dict[str | None, list[int]] = {}
    for b in range(BUCKETS):
        ranges.setdefault(assign(split, b), []).append(b)

    edge = 0
    for label, weight in split:
        owned = ranges.pop(label, [])
        assert owned == list(range(edge, edge + weight)), label
        edge += weight
    assert ranges.pop(None, []) == list(range(edge, BUCKETS))
    assert ranges == {}


@given(split=splits(max_variants=10), subject=subjects)
def test_a_subject_gets_at_most_one_variant_and_its_version(split, subject):
    variants = tuple(Variant(name, i + 2, w) for i, (name, w) in enumerate(split))
    release = served(ReleaseState(stable=1, experiment=Experiment("tone", variants, SALTS[1])))

    answer = resolve(release, subject=subject, locale=None)

    matching = [v for v in variants if v.name == answer.assignment.label]
    if answer.assignment.reason is Reason.EXPERIMENT:
        assert [v.version for v in matching] == [answer.version.number]
    else:
        assert (answer.assignment.label, answer.version.number) == ("stable", 1)


# --- sticky --------------------------------------------------------------------------------------


@given(weight=weights)
def test_an_answer_without_a_subject_says_sticky_false(weight):
    for subject in (None, ""):
        answer = resolve(with_canary(weight), subject=subject, locale=None)

        assert answer.assignment.sticky is False
        assert answer.assignment.bucket is not None or weight == 0


@given(subject=subjects)
def test_an_answer_for_a_subject_says_sticky_true(subject):
    assert resolve(with_canary(5000), subject=subject, locale=None).assignment.sticky is True


def test_subjects_drawn_by_the_server_spread_over_the_split():
    release = with_canary(5000)

    labels = Counter(
        resolve(release, subject=None, locale=None).assignment.label for _ in range(2000)
    )

    assert 800 < labels["canary"] < 1200
