"""The read replica (issue 16, item 6; decision 0040): the release cache's loads and the read-only
API's GETs read from it, everything else from the primary, and neither its lag nor its outage
makes the registry serve what it knows to be out of date, or fail.

The replica here is the ``replica`` alias that ``DATABASE_REPLICA_URL`` makes
(``config.settings.database_config``), on the test database itself (Django's TEST MIRROR, as the
settings give it) and read-only, as a hot standby is: a write that reached it would fail. It is
added for this module only. Its lag is real in kind: ``lagging_replica()`` holds the replica's
connection in a repeatable-read snapshot, so what the primary commits meanwhile is not seen
there, exactly as on a standby whose replay is behind. Its outage is real too: its address is
pointed at a port nothing listens on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.test.utils import CaptureQueriesContext

from api.services import apikey_revoke
from config.health import database_probe
from config.routers import REPLICA, ReplicaRouter, replica_reads, replica_recovered
from registry.models import Prompt
from releases import services
from releases.cache import ReleaseCache
from tests.api.helpers import assert_problem
from tests.factories import PromptFactory
from tests.releases.test_cache import KEY, MANAGER, revision, wait_until
from tests.test_deployment import free_port

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, REPLICA]),
]


@pytest.fixture(scope="module", autouse=True)
def replica_alias(django_db_setup) -> Iterator[None]:
    """The ``replica`` alias, as config/settings.py makes it from ``DATABASE_REPLICA_URL``."""
    if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
        pytest.skip("a replica needs PostgreSQL")
    from config.settings import database_config

    config = database_config(os.environ["DATABASE_URL"])
    config["OPTIONS"]["options"] = "-c default_transaction_read_only=on"
    config["TEST"] = {"MIRROR": DEFAULT_DB_ALIAS}
    configured = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], REPLICA: config}
    )
    connections.settings[REPLICA] = configured[REPLICA]
    connections[REPLICA].creation.set_as_test_mirror(connections[DEFAULT_DB_ALIAS].settings_dict)
    yield
    connections[REPLICA].close()
    del connections.settings[REPLICA]


@pytest.fixture(autouse=True)
def _replica_up() -> Iterator[None]:
    """Every test starts with the replica taking reads (none resting after another's outage)."""
    replica_recovered()
    database_probe.reset()
    yield
    replica_recovered()


@contextmanager
def queries() -> Iterator[dict[str, CaptureQueriesContext]]:
    """The queries each database ran (this thread's connections)."""
    primary = CaptureQueriesContext(connections[DEFAULT_DB_ALIAS])
    replica = CaptureQueriesContext(connections[REPLICA])
    with primary, replica:
        yield {"primary": primary, "replica": replica}


def tables(captured: CaptureQueriesContext) -> set[str]:
    """The tables the captured queries read or wrote."""
    found: set[str] = set()
    for query in captured.captured_queries:
        found |= set(re.findall(r'(?:FROM|JOIN|INTO|UPDATE) "(\w+)"', query["sql"]))
    return found


@contextmanager
def lagging_replica() -> Iterator[None]:
    """From here on, the replica shows the database as it is now: what the primary commits
    meanwhile is not there yet."""
    with transaction.atomic(using=REPLICA), connections[REPLICA].cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SELECT 1")  # the snapshot is taken at the first query
        yield


@contextmanager
def replica_down() -> Iterator[None]:
    """The replica's address leads nowhere (refused at once, on loopback)."""
    replica = connections[REPLICA]
    port = replica.settings_dict["PORT"]
    replica.close()
    replica.settings_dict["PORT"] = str(free_port())  # every thread's connections share it
    try:
        yield
    finally:
        replica.close()
        replica.settings_dict["PORT"] = port


def prompt_keys(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [p["key"] for p in response.json()["results"]]


# --- the read-only API -----------------------------------------------------------------------------


def test_an_api_get_reads_the_replica_and_the_key_from_the_primary(reader_client, prompt):
    with queries() as ran:
        response = reader_client.get("/api/v1/prompts")

    assert prompt_keys(response) == [prompt.key]
    assert "registry_prompt" in tables(ran["replica"])
    # Only the key (and the note of its last use) came from the primary: nothing the view read.
    assert tables(ran["primary"]) == {"api_apikey"}


def test_a_write_goes_to_the_primary_and_the_replica_sees_nothing(author_client):
    with queries() as ran:
        response = author_client.post(
            "/api/v1/prompts", {"key": "support.greeting", "default_locale": "en"}, format="json"
        )

    assert response.status_code == 201, response.content
    assert ran["replica"].captured_queries == []
    assert "registry_prompt" in tables(ran["primary"])
    assert Prompt.objects.filter(key="support.greeting").exists()


def test_a_lagging_replica_answers_gets_but_a_revoked_key_is_refused_at_once(reader_client, prompt):
    with lagging_replica():
        PromptFactory(key="support.new-on-the-primary")

        # The GET is answered from the replica, which has not seen the new prompt yet...
        assert prompt_keys(reader_client.get("/api/v1/prompts")) == [prompt.key]

        # ...but the key is read from the primary: revoked there, refused now.
        apikey_revoke(key=reader_client.key)
        assert_problem(reader_client.get("/api/v1/prompts"), 401, "/problems/unauthenticated")

    assert {p.key for p in Prompt.objects.all()} == {prompt.key, "support.new-on-the-primary"}


def test_reads_stay_on_the_primary_inside_a_transaction_and_after_a_write(prompt):
    with replica_reads(), queries() as ran:
        Prompt.objects.count()
        assert len(ran["replica"].captured_queries) == 1

        with transaction.atomic():  # what a transaction reads must be what it sees
            Prompt.objects.count()
        assert len(ran["replica"].captured_queries) == 1

        PromptFactory(key="support.written-here")
        assert Prompt.objects.filter(key="support.written-here").exists()  # reads its own write
        assert len(ran["replica"].captured_queries) == 1

    assert 'INSERT INTO "registry_prompt"' in " ".join(
        q["sql"] for q in ran["primary"].captured_queries
    )


def test_the_replica_is_never_migrated_and_rows_from_both_relate():
    router = ReplicaRouter()

    assert router.allow_migrate(REPLICA, "registry") is False
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "registry") is None  # Django's default: yes
    on_primary, on_replica = Prompt(), Prompt()
    on_primary._state.db, on_replica._state.db = DEFAULT_DB_ALIAS, REPLICA
    assert router.allow_relation(on_primary, on_replica) is True


# --- the release cache ----------------------------------------------------------------------------


def change(released, service, **kwargs):
    return service(
        prompt=released.prompt,
        environment=released.environments["staging"],
        actor=MANAGER,
        **kwargs,
    )


def test_a_lagging_replica_never_makes_the_cache_serve_older_than_it_was_told(released):
    node = ReleaseCache(listen=False)  # reads the database at each lookup
    current = released.release("staging").revision

    with lagging_replica():
        change(released, services.release_canary_start, version=3, percent=Decimal(10))

        # Nothing told this node of the change: the replica's answer is all it knows.
        with queries() as ran:
            assert revision(node) == current
        assert "releases_release" in tables(ran["replica"])
        assert ran["primary"].captured_queries == []

        # Told of the newer revision (the change's message), it does not take the replica's
        # older answer: it reads the primary.
        node.announce("staging", KEY, current + 1)
        with queries() as ran:
            assert revision(node) == current + 1
        assert "releases_release" in tables(ran["replica"])
        assert "releases_release" in tables(ran["primary"])
        assert node.lookup("staging", KEY).release.state.canary.version == 3

    assert revision(node) == current + 1  # the replica caught up


def test_a_change_made_before_a_node_subscribed_is_not_hidden_by_the_replicas_lag(
    released, needs_redis
):
    current = released.release("staging").revision
    with lagging_replica():
        # Committed, and its message published, before this node listens: no message will tell
        # it, and the replica does not show it yet.
        change(released, services.release_canary_start, version=3, percent=Decimal(10))
        node = ReleaseCache()
        try:
            wait_until(lambda: node.trusted, what="the listener to subscribe")
            with queries() as ran:
                assert revision(node) == current + 1
            # The environment was loaded from the replica; the primary said the revisions (one
            # narrow query) and gave the one release the replica showed older.
            assert "registry_promptversion" in tables(ran["replica"])
            assert "registry_promptversion" in tables(ran["primary"])

            # Served from memory from then on, while the replica still lags.
            with queries() as ran:
                assert revision(node) == current + 1
            assert ran["primary"].captured_queries == ran["replica"].captured_queries == []
        finally:
            node.stop()


def test_without_releases_on_the_primary_the_replica_is_not_asked(environments):
    node = ReleaseCache(listen=False)

    with queries() as ran:
        assert node.environment("development") == ({}, "")

    assert ran["replica"].captured_queries == []


# --- the replica down -----------------------------------------------------------------------------


def test_a_replica_down_sends_reads_to_the_primary_and_readyz_says_degraded(
    client, reader_client, released
):
    node = ReleaseCache(listen=False)
    current = released.release("staging").revision

    with replica_down():
        assert prompt_keys(reader_client.get("/api/v1/prompts")) == [KEY]
        assert node.lookup("staging", KEY).degraded == ""
        assert revision(node) == current

        response = client.get("/readyz")
        assert response.status_code == 200
        checks = response.json()["checks"]
        assert checks["replica"] == {"status": "degraded"}
        assert checks["database"] == {"status": "ok"}

    # Back: /readyz says so, and the next GET reads the replica again at once.
    assert client.get("/readyz").json()["checks"]["replica"] == {"status": "ok"}
    with queries() as ran:
        assert prompt_keys(reader_client.get("/api/v1/prompts")) == [KEY]
    assert "registry_prompt" in tables(ran["replica"])
