"""Pure resolution (releases.resolution): which version, in which locale, and why."""

from __future__ import annotations

import pytest

from registry.errors import LocaleInvalid
from releases.bucketing import Reason, bucket
from releases.resolution import NotReleased, resolve
from releases.state import Canary, Experiment, ReleaseState, Shadow, Variant
from tests.releases.served import served


def test_a_plain_stable_release_draws_nothing():
    answer = resolve(served(ReleaseState(stable=1)), subject="user-1", locale=None)

    assert (answer.version.number, answer.assignment.label) == (1, "stable")
    assert answer.assignment.reason is Reason.STABLE
    assert (answer.assignment.bucket, answer.salt) == (None, "")


def test_a_canary_at_zero_percent_draws_no_one():
    state = ReleaseState(stable=1, canary=Canary(2, 0, "salt"))

    answer = resolve(served(state), subject="user-1", locale=None)

    assert answer.version.number == 1
    assert answer.assignment.bucket is None


def test_the_canary_draws_before_the_experiment_with_its_own_salt():
    subject = next(s for s in (f"user-{i}" for i in range(1000)) if bucket("c", s) < 5000)
    state = ReleaseState(
        stable=1,
        canary=Canary(2, 5000, "c"),
        experiment=Experiment("tone", (Variant("a", 3, 10000), Variant("b", 4, 0)), "e"),
    )

    answer = resolve(served(state), subject=subject, locale=None)

    assert (answer.version.number, answer.assignment.label, answer.salt) == (2, "canary", "c")


def test_subjects_outside_the_canary_enter_the_experiment():
    subject = next(s for s in (f"user-{i}" for i in range(1000)) if bucket("c", s) >= 5000)
    state = ReleaseState(
        stable=1,
        canary=Canary(2, 5000, "c"),
        experiment=Experiment("tone", (Variant("a", 3, 10000), Variant("b", 4, 0)), "e"),
    )

    answer = resolve(served(state), subject=subject, locale=None)

    assert (answer.version.number, answer.assignment.label, answer.salt) == (3, "a", "e")
    assert answer.assignment.bucket == bucket("e", subject)


def test_a_release_with_nothing_stable_is_not_released():
    with pytest.raises(NotReleased):
        resolve(served(ReleaseState()), subject="user-1", locale=None)


def test_a_sampled_shadow_never_lists_the_version_served():
    state = ReleaseState(stable=1, shadow=Shadow((1, 2), 10000, "s"))

    answer = resolve(served(state), subject="user-1", locale=None)

    assert answer.shadow == (2,)


def multilingual():
    return served(ReleaseState(stable=1), "en", "fr", "pt-BR")


@pytest.mark.parametrize(
    ("requested", "used", "normalized"),
    [
        (None, "en", "en"),
        ("fr", "fr", "fr"),
        ("fr-CA", "fr", "fr-CA"),
        ("fr_ca", "fr", "fr-CA"),
        ("pt-br", "pt-BR", "pt-BR"),
        ("pt", "en", "pt"),
        ("de-AT", "en", "de-AT"),
    ],
)
def test_the_locale_falls_back_to_the_language_then_the_default(requested, used, normalized):
    answer = resolve(multilingual(), subject="user-1", locale=requested)

    assert (answer.locale, answer.requested_locale) == (used, normalized)


def test_a_malformed_locale_is_refused():
    with pytest.raises(LocaleInvalid):
        resolve(multilingual(), subject="user-1", locale="not a locale!")
