"""The in-process release cache (releases.cache): every web process holds the releases in memory,
learns of a change at once through Redis pub/sub with the revision as a check, reads the database
when Redis is down, and serves its copy (saying so) when the database is down.

Two ``ReleaseCache`` instances with their own listeners play two web nodes. Waits are bounded
polls, never a sleep that hopes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from registry.actors import Actor
from releases import services
from releases.cache import DATABASE_UNAVAILABLE, Lookup, ReleaseCache, channel, publish

KEY = "support.refund-reply"
MANAGER = Actor(label="release-manager")


def wait_until(predicate: Callable[[], object], *, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"Waited {timeout} s for {what}")
        time.sleep(0.02)


@pytest.fixture
def web_nodes(needs_redis) -> Iterator[list[ReleaseCache]]:
    """Two web processes' caches, each with its own Redis listener; stopped afterwards."""
    nodes = [ReleaseCache(), ReleaseCache()]
    try:
        for node in nodes:
            wait_until(lambda node=node: node.trusted, what="a listener to subscribe")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def revision(node: ReleaseCache, environment: str = "staging") -> int | None:
    found = node.lookup(environment, KEY).release
    return found.revision if found is not None else None


def change(released, service, environment: str = "staging", **kwargs):
    return service(
        prompt=released.prompt,
        environment=released.environments[environment],
        actor=MANAGER,
        **kwargs,
    )


def send_raw(data: bytes) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.publish(channel(), data)
    finally:
        client.close()


# --- pub/sub -------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_change_reaches_every_web_node_at_once(released, web_nodes):
    current = released.release("staging").revision
    assert [revision(node) for node in web_nodes] == [current, current]

    change(released, services.release_canary_start, version=3, percent=Decimal(10))

    for node in web_nodes:
        wait_until(lambda node=node: revision(node) == current + 1, what="the canary to arrive")
        canary = node.lookup("staging", KEY).release.state.canary
        assert (canary.version, canary.weight) == (3, 1000)

    change(released, services.release_rollback, reason="Error rate up.")

    for node in web_nodes:
        wait_until(lambda node=node: revision(node) == current + 2, what="the rollback to arrive")
        assert node.lookup("staging", KEY).release.state.canary is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_first_release_reaches_nodes_holding_its_environment(released, web_nodes):
    for node in web_nodes:
        assert node.lookup("development", KEY) == Lookup(None)

    change(released, services.release_deploy, "development", version=1)

    for node in web_nodes:
        wait_until(lambda node=node: revision(node, "development") == 1, what="the new release")
        assert node.environment("development")[0][KEY].state.stable == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_older_revision_never_replaces_a_newer_one(released, web_nodes):
    node = web_nodes[0]
    change(released, services.release_deploy, version=3)
    current = released.release("staging").revision
    wait_until(lambda: revision(node) == current, what="the deploy to arrive")
    held = node.lookup("staging", KEY).release

    # Late and duplicated messages, as a slow publisher or a reconnect may deliver them.
    for old in (current - 1, current - 2, current):
        publish({"kind": "release", "environment": "staging", "prompt": KEY, "revision": old})
    node.announce("staging", KEY, current - 1)
    # Messages arrive in order: once this later change is in, the old ones were handled.
    change(released, services.release_deploy, "production", version=2)
    production = released.release("production").revision
    wait_until(lambda: revision(node, "production") == production, what="production's change")

    assert node.lookup("staging", KEY).release is held  # never reloaded, never replaced


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_malformed_messages_are_ignored_and_the_listener_carries_on(released, web_nodes):
    current = released.release("staging").revision
    for node in web_nodes:
        assert revision(node) == current
        node.on("boom", lambda message: 1 / 0)  # a handler's bug must not stop the listener

    for raw in (
        b"not json",
        b"[1, 2]",
        b'"release"',
        b'{"kind": 5}',
        b'{"kind": "release"}',
        b'{"kind": "release", "environment": "staging", "prompt": "x", "revision": "high"}',
        b'{"kind": "release", "environment": ["staging"], "prompt": "x", "revision": 1}',
        json.dumps({"kind": "boom"}).encode(),
    ):
        send_raw(raw)
    change(released, services.release_deploy, version=1)

    for node in web_nodes:
        wait_until(lambda node=node: revision(node) == current + 1, what="the real change")
        assert node.trusted


def test_handlers_hear_of_every_reconnect_to_drop_what_they_hold(needs_redis, db):
    heard: list[dict] = []
    node = ReleaseCache()
    node.on("apikeys", heard.append)
    try:
        wait_until(lambda: node.trusted, what="the listener to subscribe")
    finally:
        node.stop()

    assert heard == [{"kind": "apikeys", "resync": True}]


# --- Redis down ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_fresh_cache_is_not_trusted_and_reads_the_database(released):
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        node = ReleaseCache()
        try:
            assert node.trusted is False
            current = revision(node)

            # The change's message cannot be published; the node sees the change anyway.
            change(released, services.release_canary_start, version=3, percent=Decimal(10))

            assert revision(node) == current + 1
            assert node.lookup("staging", KEY).release.state.canary.version == 3
            assert node.trusted is False
        finally:
            node.stop()


# --- database down -------------------------------------------------------------------------------


def test_with_the_database_down_an_untrusted_copy_is_served_and_said_to_be(released, database_down):
    node = ReleaseCache(listen=False)
    warm = node.lookup("staging", KEY)
    bundle, _ = node.environment("staging")

    database_down()

    found = node.lookup("staging", KEY)
    assert found == Lookup(warm.release, DATABASE_UNAVAILABLE)
    assert node.environment("staging") == (bundle, DATABASE_UNAVAILABLE)
    # Nothing was ever read for development: nothing to serve, and it says why.
    assert node.lookup("development", KEY) == Lookup(None, DATABASE_UNAVAILABLE)
    assert node.environment("development") == (None, DATABASE_UNAVAILABLE)


@pytest.mark.postgres
def test_a_trusted_warm_copy_answers_without_the_database(released, web_nodes, database_down):
    node = web_nodes[0]
    held = node.lookup("staging", KEY).release

    database_down()

    assert node.lookup("staging", KEY) == Lookup(held)


@pytest.mark.postgres
def test_a_copy_known_to_be_behind_is_served_as_degraded_while_the_database_is_down(
    released, web_nodes, database_down
):
    node = web_nodes[0]
    held = node.lookup("staging", KEY).release
    bundle, _ = node.environment("staging")
    database_down()

    # A change was announced, but the database cannot be read to load it.
    node.announce("staging", KEY, held.revision + 1)

    assert node.lookup("staging", KEY) == Lookup(held, DATABASE_UNAVAILABLE)
    assert node.environment("staging") == (bundle, DATABASE_UNAVAILABLE)


# --- unknown environments ------------------------------------------------------------------------


def test_an_unknown_environment_is_answered_but_never_stored(released):
    node = ReleaseCache(listen=False)

    assert node.lookup("nowhere", KEY) == Lookup(None)
    assert node.environment("nowhere") == (None, "")
    assert node.environment("development") == ({}, "")  # known, nothing released there


@pytest.mark.postgres
def test_a_trusted_cache_never_stores_an_unknown_environment(
    released, web_nodes, django_assert_num_queries
):
    node = web_nodes[0]
    node.lookup("staging", KEY)

    for name in ("nowhere", "elsewhere"):
        assert node.lookup(name, KEY) == Lookup(None)
        assert node.environment(name) == (None, "")

    with django_assert_num_queries(0):
        assert node.environment("staging")[0].keys() == {KEY}
    # Asked again, it reads the database again: it kept nothing for that name.
    with CaptureQueriesContext(connection) as queries:
        assert node.lookup("nowhere", KEY) == Lookup(None)
    assert len(queries) > 0


# --- warming a new worker (gunicorn.conf.py's post_worker_init) ----------------------------------


def environment_names() -> list[str]:
    from releases.models import Environment

    return sorted(Environment.objects.values_list("name", flat=True))


@pytest.mark.postgres
def test_a_warmed_cache_answers_its_first_lookups_from_memory(
    released, web_nodes, django_assert_num_queries
):
    node = web_nodes[0]

    assert sorted(node.warm(seconds=30)) == environment_names()

    names = environment_names()
    with django_assert_num_queries(0):
        for environment in names:
            node.lookup(environment, KEY)
    with django_assert_num_queries(1):  # the environments' names; each is held whole already
        assert node.warm(seconds=30) == []


@pytest.mark.postgres
def test_warming_stops_at_its_deadline_and_the_rest_load_on_first_use(released, web_nodes):
    node = web_nodes[0]

    assert node.warm(seconds=0) == []
    assert revision(node) is not None


def test_without_a_listener_nothing_is_warmed(released, django_assert_num_queries):
    """Every lookup reads the database then: a warm copy would never be used."""
    node = ReleaseCache(listen=False)

    with django_assert_num_queries(0):
        assert node.warm(seconds=30) == []


@pytest.mark.postgres
def test_warming_with_the_database_down_gives_up_and_says_so(
    released, web_nodes, database_down, caplog
):
    database_down()

    assert web_nodes[0].warm(seconds=30) == []
    assert "Database unavailable warming the release cache" in caplog.text


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_listener_that_cannot_subscribe_leaves_the_cache_unwarmed_and_says_so(
    released, monkeypatch, caplog
):
    """Redis out of reach: every lookup reads the database, so the worker is not held back."""
    from releases import cache as cache_module

    monkeypatch.setattr(cache_module, "WARM_LISTENER_SECONDS", 0.3)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        node = ReleaseCache()
        try:
            assert node.warm(seconds=30) == []
        finally:
            node.stop()

    assert "its listener did not subscribe" in caplog.text
