"""Release changes racing each other for real (STYLE R15): threads on their own PostgreSQL
connections, released together by a barrier. The row lock serializes them; the revision check
inside it gives one winner and one 409; the event log stays a clean chain."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from registry.actors import Actor
from releases import services
from releases.errors import ReleaseConflict
from releases.gates import GateVerdict, promotion_check_register, promotion_check_unregister
from releases.models import Release, ReleaseEvent
from releases.state import ReleaseState, release_state

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ALICE = Actor(label="alice")
BOB = Actor(label="bob")


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Runs ``calls`` at the same moment, each in its own thread and connection; returns what
    each returned or raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[i] = call()
        except Exception as exc:  # the outcome is what the test asserts on
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a change never finished: a deadlock?"
    return outcomes


@pytest.fixture
def slow_gate():
    """A promotion check that takes a while, as a real evaluation would: it runs inside the
    locked transaction, so without the lock both deploys would read the same revision."""

    def check(*, prompt_id: int, environment: str, version: int) -> GateVerdict:
        time.sleep(0.3)
        return GateVerdict(passed=True, gate="slow-eval")

    promotion_check_register(check)
    yield
    promotion_check_unregister(check)


def on(released, service, environment: str = "staging", **kwargs) -> Callable[[], Release]:
    return lambda: service(
        prompt=released.prompt, environment=released.environments[environment], **kwargs
    )


def chain(release: Release) -> list[ReleaseEvent]:
    return list(ReleaseEvent.objects.filter(release=release).order_by("revision"))


def assert_consistent(release: Release) -> list[ReleaseEvent]:
    """Revisions 1..n without a gap, each event starting where the previous one ended, and the
    release in the state of its last event."""
    release.refresh_from_db()
    events = chain(release)
    assert [e.revision for e in events] == list(range(1, len(events) + 1))
    previous = ReleaseState().as_dict()
    for event in events:
        assert event.before == previous, event
        previous = event.after
    assert release.revision == events[-1].revision
    assert release_state(release).as_dict() == events[-1].after
    for event in events:
        if event.action == ReleaseEvent.Action.ROLLBACK:
            assert event.after == event.restores.before
    return events


def test_two_managers_with_the_same_revision_get_one_winner_and_one_conflict(released, slow_gate):
    release = released.release("staging")
    revision = release.revision

    outcomes = together(
        on(released, services.release_deploy, version=1, actor=ALICE, expected_revision=revision),
        on(released, services.release_deploy, version=3, actor=BOB, expected_revision=revision),
    )

    winners = [o for o in outcomes if isinstance(o, Release)]
    conflicts = [o for o in outcomes if isinstance(o, ReleaseConflict)]
    assert (len(winners), len(conflicts)) == (1, 1), outcomes
    assert conflicts[0].current_revision == revision + 1
    events = assert_consistent(release)
    assert release.revision == revision + 1
    assert len(events) == revision + 1
    winner = events[-1]
    assert release_state(release).stable == {"alice": 1, "bob": 3}[winner.actor_label]


def test_a_ramp_and_a_rollback_with_the_same_revision_get_one_winner(released):
    on(released, services.release_canary_start, version=3, percent=Decimal(5), actor=ALICE)()
    revision = released.release("staging").revision

    outcomes = together(
        on(
            released,
            services.release_canary_set_percent,
            percent=Decimal(50),
            actor=ALICE,
            expected_revision=revision,
        ),
        on(released, services.release_rollback, actor=BOB, expected_revision=revision),
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["Release", "ReleaseConflict"]
    assert len(assert_consistent(released.release("staging"))) == revision + 1


def test_a_ramp_racing_a_rollback_serializes_and_keeps_the_log_a_chain(released):
    on(released, services.release_canary_start, version=3, percent=Decimal(5), actor=ALICE)()
    for percent in range(6, 16):
        on(released, services.release_canary_set_percent, percent=Decimal(percent), actor=ALICE)()

    for round_ in range(4):
        outcomes = together(
            on(
                released,
                services.release_canary_set_percent,
                percent=Decimal(50 + round_),
                actor=ALICE,
            ),
            on(released, services.release_rollback, actor=BOB),
        )
        assert all(isinstance(o, Release) for o in outcomes), outcomes

    events = assert_consistent(released.release("staging"))
    # Both kinds landed each round: 4 ramps and 4 rollbacks after the setup's 13 changes.
    assert [e.action for e in events[13:]].count(ReleaseEvent.Action.ROLLBACK) == 4
    assert [e.action for e in events[13:]].count(ReleaseEvent.Action.CANARY_PERCENT) == 4


def test_two_first_changes_of_a_new_release_make_one_release(released):
    outcomes = together(
        on(released, services.release_deploy, "development", version=1, actor=ALICE),
        on(released, services.release_deploy, "development", version=2, actor=BOB),
    )

    assert all(isinstance(o, Release) for o in outcomes), outcomes
    [release] = Release.objects.filter(environment__name="development")
    assert len(assert_consistent(release)) == 2
