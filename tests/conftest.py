"""Personas and clients shared by the suite (STYLE R14).

Each API key persona says in its comment what it may do; endpoint tests use them to check scopes
and environment limits the same way everywhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from api.services import apikey_create
from registry.actors import Actor
from registry.models import Prompt, PromptVersion
from tests.factories import PromptFactory, UserFactory, make_version


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """Passwords hashed with a fast hasher, as Django's testing docs advise: the production
    hasher spends about half a second of CPU a hash by design, and the suite makes hundreds of
    users. What is tested is who may log in, not the hasher's cost."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True, scope="session")
def _flush_by_delete() -> Iterator[None]:
    """After a transactional test, the database is emptied with ``DELETE FROM`` each table in one
    transaction instead of PostgreSQL's ``TRUNCATE`` of them all: what the test finds is the same
    (every table empty, then the ``post_migrate`` rows), but a ``TRUNCATE`` gives each of some 40
    tables and their indexes new files, which the commit then syncs to disk: about a second per
    transactional test, against a few hundredths for ``DELETE``. The suite has hundreds of them.

    The append-only and committed-version triggers refuse ``DELETE`` (they do not see a
    ``TRUNCATE``): the flush's transaction sets ``session_replication_role`` to ``replica`` for
    itself alone (``SET LOCAL``), which fires no trigger, foreign keys' included; every table is
    emptied, so none is left pointing at a missing row. Setting it takes a superuser, as the
    suite's PostgreSQL is; for another user, or when sequences are to be reset too (a plain
    ``manage.py flush``), the flush is Django's own."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush
    superuser: dict[tuple[str, str], bool] = {}

    def may_skip_triggers(connection) -> bool:
        database = (connection.alias, connection.settings_dict["NAME"])
        if database not in superuser:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('is_superuser')")
                superuser[database] = cursor.fetchone()[0] == "on"
        return superuser[database]

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if not tables or reset_sequences or not may_skip_triggers(self.connection):
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        # execute_sql_flush runs these in one transaction: SET LOCAL ends with it.
        return [
            "SET LOCAL session_replication_role = replica",
            *(f"DELETE FROM {self.quote_name(table)}" for table in tables),
        ]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", sql_flush)
        yield


@pytest.fixture
def make_client(db) -> Callable[..., APIClient]:
    """``make_client("prompts:read", environments=["staging"])``: a client with a fresh key."""

    def make(*scopes: str, environments: tuple[str, ...] = (), name: str = "tests") -> APIClient:
        key, raw = apikey_create(name=name, scopes=scopes, environments=environments)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        client.key = key
        return client

    return make


@pytest.fixture
def author_client(make_client) -> APIClient:
    """A prompt repository's CI: reads and writes prompts and drafts, commits them."""
    return make_client("prompts:read", "prompts:write", name="author-ci")


@pytest.fixture
def reader_client(make_client) -> APIClient:
    """A service that only reads prompts: every write answers 403 insufficient-scope."""
    return make_client("prompts:read", name="reader")


@pytest.fixture
def releaser_client(make_client) -> APIClient:
    """Release automation: changes releases, may read prompts, may not write them."""
    return make_client("prompts:read", "releases:write", name="release-bot")


@pytest.fixture
def anonymous_client() -> APIClient:
    """No key at all: every API call answers 401 with a Bearer challenge."""
    return APIClient()


@pytest.fixture
def author(db):
    """A person in the "Prompt authors" group: edits prompts and drafts, commits, no releases."""
    from django.contrib.auth.models import Group

    user = UserFactory(username="alice", is_staff=True)
    user.groups.add(Group.objects.get(name="Prompt authors"))
    return user


@pytest.fixture
def actor() -> Actor:
    return Actor(label="tests")


@pytest.fixture
def prompt(db):
    return PromptFactory(key="support.refund-reply")


# The providers the suite's bindings name (``content_data``, ``released``, inline bodies). They are
# configured for every test on top of the real ones; see ``_suite_providers``.
SUITE_PROVIDERS = frozenset({"local", "openai"})


@pytest.fixture(autouse=True)
def _suite_providers() -> Iterator[None]:
    """Bindings must name a configured provider (decision 0008), and the suite's name ``local``
    everywhere. The provider directory answers the real ``Provider`` names plus SUITE_PROVIDERS.

    Why not a ``Provider`` row per test: tests that configure ``local`` themselves (with the fake's
    address) would collide with it, tests that count providers would count it, and a transactional
    test's flush would remove it mid-suite. The directory needs no database and nothing to undo.
    Tests of the rule itself register the real directory alone (tests/registry/
    test_provider_directory.py).
    """
    from registry.providers import provider_directory, provider_directory_register

    real = provider_directory()
    if real is None:  # the registry alone: any well-formed name passes anyway
        yield
        return
    provider_directory_register(lambda: frozenset(real()) | SUITE_PROVIDERS)
    yield
    provider_directory_register(real)


@pytest.fixture(autouse=True)
def _postgres_only(request) -> None:
    """Tests marked ``postgres`` need PostgreSQL (row locks across connections, triggers refusing
    DELETE): on the embedded SQLite default they are skipped, not failed."""
    from django.db import connection

    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")


# --- Releases (issue #3) -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_release_cache():
    """Every test starts and ends with an empty in-process release cache, keyring, rate-limit
    buckets and provider table: they are process singletons, and a snapshot or key left by one
    test must not answer another."""
    from api.keyring import keyring
    from api.ratelimit import limiter
    from releases.cache import release_cache
    from runs.budgets import budget_cache, counters
    from runs.provider_cache import provider_cache

    release_cache().clear()
    keyring.reset()
    limiter.reset()
    provider_cache.clear()
    budget_cache.clear()
    counters.reset()
    yield
    release_cache().clear()
    keyring.reset()
    limiter.reset()
    provider_cache.clear()
    budget_cache.clear()
    counters.reset()


@pytest.fixture
def empty_rate_buckets() -> None:
    """Rate-limit buckets in Redis outlive a test (their keys are API key ids, which a new test
    database reuses): start from none."""
    from django.conf import settings

    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for name in client.scan_iter("promptregistry:ratelimit:*"):
            client.delete(name)
        client.close()


@pytest.fixture
def environments(db) -> dict:
    """development -> staging -> production, as migration 0003 makes them: production takes only
    versions that have been stable in staging. Written again if a transactional test's flush
    removed them."""
    return environments_ensure()


def environments_ensure() -> dict:
    """The ``environments`` fixture's work, for fixtures of a wider scope."""
    from importlib import import_module

    from releases.models import Environment

    migration = import_module("releases.migrations.0003_default_environments_and_release_managers")
    for name, position, requires_previous, description in migration.ENVIRONMENTS:
        Environment.objects.get_or_create(
            name=name,
            defaults={
                "position": position,
                "requires_previous_stable": requires_previous,
                "description": description,
            },
        )
    return {e.name: e for e in Environment.objects.all()}


@pytest.fixture
def manager() -> Actor:
    """A release manager, as services record them: changes releases, never prompt content."""
    return Actor(label="release-manager")


@dataclass
class Released:
    """``support.refund-reply`` with three committed versions, released as a team would:

    - v1 (English) and v2 (English and French) have been stable in staging; v2 is stable there;
    - v1 is stable in production; v3 has never been in staging, so production refuses it;
    - development has never been released.
    """

    prompt: Prompt
    versions: dict[int, PromptVersion]
    environments: dict[str, Any]

    def release(self, environment: str):
        from releases.models import Release

        return Release.objects.get(prompt=self.prompt, environment__name=environment)


RELEASED_VARIABLES = [
    {"name": "customer_name", "type": "string", "required": True},
    {"name": "order_total", "type": "number", "required": False},
]
RELEASED_INSTRUCTION = (
    "Greet {{ customer_name }}{% if order_total %} about the {{ order_total }} refund{% endif %}."
)


@pytest.fixture
def released(prompt, environments, manager) -> Released:
    from releases.services import release_deploy

    def version(message: str, **templates: dict[str, str]) -> PromptVersion:
        english = {
            "system": f"You are a support agent ({message})",
            "instruction": RELEASED_INSTRUCTION,
        }
        return make_version(
            prompt,
            message=message,
            variables=RELEASED_VARIABLES,
            templates={"en": english, **templates},
        )

    versions = {
        1: version("v1"),
        2: version(
            "v2",
            fr={"system": "Vous êtes un agent (v2)", "instruction": "Saluez {{ customer_name }}."},
        ),
        3: version("v3"),
    }
    for number, environment in ((1, "staging"), (2, "staging"), (1, "production")):
        release_deploy(
            prompt=prompt,
            environment=environments[environment],
            version=number,
            actor=manager,
            reason="setup",
        )
    return Released(prompt=prompt, versions=versions, environments=environments)


@dataclass
class Reviewed:
    """``released``, with production requiring review by the "Release reviewers" group
    (decision 0048): alice proposes (not a reviewer), bob and carol review, dave is neither."""

    released: Released
    production: Any
    group: Any
    alice: Any
    bob: Any
    carol: Any
    dave: Any

    def actor(self, user) -> Actor:
        return Actor.for_user(user)


@pytest.fixture
def reviewed(released) -> Reviewed:
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name="Release reviewers")
    production = released.environments["production"]
    production.requires_review, production.review_group = True, group
    production.save()
    alice, bob, carol, dave = (UserFactory(username=n) for n in ("alice", "bob", "carol", "dave"))
    group.user_set.add(bob, carol)
    # Each may change releases (releases.rights): proposing and applying take it, reviewing not.
    Group.objects.get(name="Release managers").user_set.add(alice, bob, carol, dave)
    return Reviewed(released, production, group, alice, bob, carol, dave)


@pytest.fixture
def database_down(db) -> Iterator[Callable[[], None]]:
    """``database_down()``: from then on this thread's queries fail as if PostgreSQL were gone
    (the outside world, faked at the connection; our code runs as it is). The database is back
    before the test's own transaction is rolled back."""
    from django.db import OperationalError, connections

    connection = connections["default"]

    def fail(*args: Any, **kwargs: Any):
        raise OperationalError("connection refused (the test took the database down)")

    def down() -> None:
        connection.cursor = fail
        connection.chunked_cursor = fail
        # What checking a kept connection, or opening a new one, comes to with PostgreSQL gone
        # (runs.execution asks the health check, which would close the test's own connection).
        connection.close_if_health_check_failed = lambda: None
        connection.ensure_connection = fail

    yield down
    for name in ("cursor", "chunked_cursor", "close_if_health_check_failed", "ensure_connection"):
        connection.__dict__.pop(name, None)


@pytest.fixture
def spool(monkeypatch, needs_redis):
    """The Redis list of call records kept for later (runs.spool), under a key of this test's own:
    ``spool.length()``, ``spool.drain()``."""
    import uuid
    from types import SimpleNamespace

    from runs import spool as module

    monkeypatch.setattr(module, "KEY", f"test:call-records:{uuid.uuid4().hex}")
    yield SimpleNamespace(length=module.spool_length, drain=module.spool_drain)
    module._redis().delete(module.KEY)


@pytest.fixture
def needs_redis() -> None:
    """Skips unless ``REDIS_URL`` is set (the pub/sub tests need a real Redis)."""
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL)")


# --- Runs (issue #4) ------------------------------------------------------------------------------

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture
def no_proxy(monkeypatch) -> None:
    """No proxy from the environment may take a call off loopback."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def _model_server_process():
    from runs.fake_provider import FakeProvider

    with FakeProvider(hang_seconds=5) as server:
        yield server


@pytest.fixture
def model_server(_model_server_process, db, monkeypatch, no_proxy):
    """The local OpenAI-compatible server (runs.fake_provider), configured as the provider named
    ``local``, with its request log and fault queues empty. Retries do not really sleep (their
    waits are recorded in ``model_server.waits``), and no proxy can take a call off loopback."""
    from runs import providers

    server = model_server_configure(_model_server_process)
    server.waits = []
    monkeypatch.setattr(providers, "_sleep", server.waits.append)
    return server


def model_server_configure(server):
    """The ``model_server`` fixture's work on the database, for fixtures of a wider scope: the
    server's request log and fault queues emptied, and the provider ``local`` pointing at it."""
    from runs.models import Provider

    server.reset()
    Provider.objects.update_or_create(
        name="local",
        defaults={
            "base_url": server.base_url,
            "timeout_seconds": 2.0,
            "max_retries": 2,
            "enabled": True,
        },
    )
    return server


# --- Outbound requests (issue 12) -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _loopback_providers(settings) -> None:
    """The suite's model servers listen on 127.0.0.1, as make run's does: loopback is allowed
    (DEBUG allows it there; the suite runs with DEBUG off). Tests of the refusal turn it off."""
    settings.PROVIDER_ALLOW_LOOPBACK = True


@pytest.fixture
def recorder():
    """A loopback HTTP server recording every request (tests/loopback.py): what user content
    names as a URL must never be fetched, so its ``hits`` stay empty."""
    from tests.loopback import recording

    with recording() as rec:
        yield rec


@pytest.fixture
def secret_file(tmp_path):
    """A local file holding ``tests.loopback.MARKER``: its content must never surface."""
    import json

    from tests.loopback import MARKER

    path = tmp_path / "secret.json"
    path.write_text(json.dumps({"const": MARKER}))
    return path


# --- Release streams under ASGI (issue 21) -------------------------------------------------------


class AsgiServer:
    """``config.asgi`` under uvicorn, in a thread of this process with its own event loop: the
    stream process as a deployment runs it, on the test database (a transactional test's, so
    what the test commits is what it reads) and the test's settings."""

    def __init__(self) -> None:
        import socket

        import uvicorn

        from config.asgi import application

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                pytest.fail("The ASGI server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        # The test's clients are gone; any stream left is cut rather than waited for.
        self.server.should_exit = self.server.force_exit = True
        self.thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def asgi_server(transactional_db, settings) -> Iterator[AsgiServer]:
    from api.streamlimits import slots

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    server = AsgiServer()
    server.start()
    yield server
    server.stop()
    slots.reset()
