"""Personas and clients shared by the suite (STYLE R14).

Each API key persona says in its comment what it may do; endpoint tests use them to check scopes
and environment limits the same way everywhere.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
def prompt(request, db):
    shared = SharedReleased.copy_for(request.node)
    if shared is not None:  # the test's ``released`` is the shared one: this is its prompt
        return shared.prompt
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
    with _suite_directory():
        yield


@contextmanager
def _suite_directory() -> Iterator[None]:
    """``_suite_providers``' work, for what runs outside a test's fixtures."""
    from registry.providers import provider_directory, provider_directory_register

    real = provider_directory()
    if real is None:  # the registry alone: any well-formed name passes anyway
        yield
        return
    provider_directory_register(lambda: frozenset(real()) | SUITE_PROVIDERS)
    try:
        yield
    finally:
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
    buckets, provider table and guardrail floors: they are process singletons, and a snapshot or
    key left by one test must not answer another."""
    from api.keyring import keyring
    from api.ratelimit import limiter
    from releases.cache import release_cache
    from runs.budgets import budget_cache, counters
    from runs.guardrails import floors
    from runs.provider_cache import provider_cache

    release_cache().clear()
    keyring.reset()
    limiter.reset()
    provider_cache.clear()
    budget_cache.clear()
    counters.reset()
    floors.clear()
    yield
    release_cache().clear()
    keyring.reset()
    limiter.reset()
    provider_cache.clear()
    budget_cache.clear()
    counters.reset()
    # An environment's guardrail floor saved by a test is rolled back with it, unannounced.
    floors.clear()


@pytest.fixture(autouse=True)
def _own_rate_buckets(monkeypatch) -> None:
    """Rate-limit buckets in Redis are named by API key id, which every test database hands out
    again, and the suite's processes share one Redis database: each test gets buckets of its own
    (a bucket another process's test had filled let a limit of 1 through)."""
    from api import ratelimit

    prefix = f"promptregistry:ratelimit:test-{uuid.uuid4().hex}:"
    monkeypatch.setattr(ratelimit, "_KEY_PREFIX", prefix)


@pytest.fixture
def empty_rate_buckets() -> None:
    """Rate-limit buckets in Redis outlive a test: start from none of this test's."""
    from django.conf import settings

    from api import ratelimit

    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for name in client.scan_iter(f"{ratelimit._KEY_PREFIX}*"):
            client.delete(name)
        client.close()


@pytest.fixture
def environments(request, db) -> dict:
    """development -> staging -> production, as migration 0003 makes them: production takes only
    versions that have been stable in staging. Written again if a transactional test's flush
    removed them."""
    shared = SharedReleased.copy_for(request.node)
    if shared is not None:  # the test's ``released`` is the shared one: these are its own
        return shared.environments
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
def released(request, prompt, environments, manager, _released_shared) -> Released:
    """``Released`` (above). A test that can (``released_shareable``) gets a copy of the one built
    for the tests before it in a row (``SharedReleased``); any other builds its own."""
    shared = SharedReleased.copy_for(request.node)
    if shared is not None:
        return shared
    return released_build(prompt, environments, manager)


def released_build(prompt, environments, manager) -> Released:
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


# Fixtures that may run before ``released`` in a test that shares it: they change nothing its
# build reads or writes (settings and patches it does not use, users, API keys, clients, the
# served schema). A test with any other fixture before ``released`` builds its own, as that
# fixture may have meant the build to see what it did (a provider row, a span recorder...).
# pytest's and pytest-django's own fixtures are harmless too (``_SHAREABLE_PLUGINS``); the database
# fixtures decide by the test's marker, checked apart (``released_shareable``).
_SHAREABLE_PLUGINS = ("_pytest.", "pytest_django.", "faker.contrib.pytest.")
_SHAREABLE_AFTER = frozenset(
    {
        # The suite's own (tests/conftest.py and the packages' conftest.py).
        "tests.conftest._fast_password_hashing",
        "tests.conftest._flush_by_delete",
        "tests.conftest._fresh_release_cache",
        "tests.conftest._loopback_providers",
        "tests.conftest._model_server_process",
        "tests.conftest._own_rate_buckets",
        "tests.conftest._postgres_only",
        "tests.conftest._released_shared",
        "tests.conftest._suite_providers",
        "tests.conftest.anonymous_client",
        "tests.conftest.author",
        "tests.conftest.author_client",
        "tests.conftest.empty_rate_buckets",
        "tests.conftest.make_client",
        "tests.conftest.needs_redis",
        "tests.conftest.no_proxy",
        "tests.conftest.reader_client",
        "tests.conftest.releaser_client",
        "tests.evaluations.conftest.eager",
        "tests.runs.conftest._loopback_only",
        "tests.sdk.conftest._loopback_only",
        "tests.webhooks.conftest._webhook_settings",
        # A test module's users, keys and clients; its served schema; Redis keys of its own.
        "tests.api.test_budgets._own_counters",
        "tests.api.test_events.events_client",
        "tests.api.test_gates_api.staging_bot",
        "tests.api.test_https.service",
        "tests.api.test_openai_compat_schema.openapi",
        "tests.api.test_openai_compat_schema.runner",
        "tests.api.test_problem_types.openapi",
        "tests.api.test_ratelimit._empty_buckets",
        "tests.api.test_releases_api.staging_bot",
        "tests.api.test_response_shapes.openapi",
        "tests.api.test_runtime.service",
        "tests.api.test_runtime_bad_input.service",
        "tests.api.test_runtime_schema.openapi",
        "tests.api.test_runtime_schema.service",
        "tests.api.test_schema_states_refusals.events_client",
        "tests.api.test_schema_states_refusals.runtime_client",
        "tests.evaluations.test_admin.author_client",
        "tests.evaluations.test_admin.outsider",
        "tests.evaluations.test_admin.viewer",
        "tests.evaluations.test_admin_words.rita",
        "tests.evaluations.test_canary_admin.rita",
        "tests.evaluations.test_canary_admin.viewer",
        "tests.evaluations.test_canary_api.staging_bot",
        "tests.evaluations.test_case_editing.author_client",
        "tests.evaluations.test_case_editing.both_client",
        "tests.evaluations.test_eval_runs_api_admin.author_admin",
        "tests.evaluations.test_gate_confirmation.dave",
        "tests.evaluations.test_gate_confirmation.rita",
        "tests.evaluations.test_gates.dave",
        "tests.evaluations.test_gates.rita",
        "tests.evaluations.test_playground.author_client",
        "tests.mcp.test_transport.raw_key",
        "tests.registry.test_hub.alice",
        "tests.registry.test_hub.rita",
        "tests.registry.test_hub.root",
        "tests.releases.test_admin.release_manager",
        "tests.releases.test_admin.rita",
        "tests.releases.test_admin.root",
        "tests.releases.test_schedules_admin.rita",
        "tests.runs.test_admin.release_manager",
        "tests.runs.test_admin.rita",
        "tests.runs.test_admin.root",
        "tests.sdk.test_prompt.service",
        "tests.sdk.test_stream_endpoint.service",
        "tests.test_status_page.root",
    }
)


# What ``released`` is built from: the shared build's copy stands in for them too.
_RELEASED_FROM = ("prompt", "environments", "manager")


def _fixture_name(definition) -> str:
    return f"{definition.func.__module__}.{definition.func.__name__}"


def released_shareable(item) -> bool:
    """Whether ``item`` may get the shared ``released``: it asks for ``released`` in its
    signature or its fixtures' (not through ``request.getfixturevalue``); its database is
    pytest-django's plain one, a transaction rolled back after it (not a transactional test's,
    which commits; not several databases); and every fixture set up before ``released`` is in
    ``_SHAREABLE_AFTER``, so the build it would have made itself is the one it gets."""
    from pytest_django.plugin import validate_django_db

    names = list(getattr(item, "fixturenames", ()))
    info = getattr(item, "_fixtureinfo", None)
    if "released" not in names or info is None:
        return False
    # ``released`` and what it is built from are this module's, which the build stands in for.
    own = ("released", *_RELEASED_FROM)
    if any(_fixture_name(info.name2fixturedefs[name][-1]) != f"{__name__}.{name}" for name in own):
        return False
    transactional = {
        "transactional_db",
        "live_server",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
    }
    if transactional & set(names):
        return False
    marker = item.get_closest_marker("django_db")
    if marker is not None:
        transaction, reset_sequences, databases, serialized_rollback, available_apps = (
            validate_django_db(marker)
        )
        if transaction or reset_sequences or serialized_rollback:
            return False
        if databases is not None or available_apps is not None:
            return False

    def closure(name: str, found: set[str]) -> set[str]:
        definitions = info.name2fixturedefs.get(name)
        if definitions and name not in found:
            found.add(name)
            for argument in definitions[-1].argnames:
                closure(argument, found)
        return found

    before: set[str] = set()
    for name in names[: names.index("released")]:
        needed = closure(name, set())
        if "released" not in needed:  # a fixture built on ``released`` runs after it
            before |= needed
    for name in before - set(_RELEASED_FROM):
        definition = info.name2fixturedefs[name][-1]
        if not (
            definition.func.__module__.startswith(_SHAREABLE_PLUGINS)
            or _fixture_name(definition) in _SHAREABLE_AFTER
        ):
            return False
    return True


class SharedReleased:
    """``released`` built once for the tests a process runs in a row that can share it
    (``released_shareable``), as Django's ``TestCase.setUpTestData`` does for a class: the build
    is left in an open transaction, each test runs in a savepoint of it (pytest-django's
    transaction, nested), and gets a deep copy of the Python objects, so neither what a test
    writes nor what it changes in them reaches the next. Building it (3 commits, 3 deploys,
    about 150 queries) was a quarter of a second or more in each of some 1,500 tests.

    ``pytest_runtest_setup`` (below) opens it before a test that can share it, before any of the
    test's fixtures: the transaction must enclose the test's. Before any other test it is rolled
    back, so that test meets the database as it was. The first test of a process builds its
    own: the test database does not exist before its fixtures run."""

    current: SharedReleased | None = None

    def __init__(self, django_db_blocker) -> None:
        self.blocker = django_db_blocker
        self.atomic = None  # the open transaction holding the build, or None
        self.built: Released | None = None
        self.item = None  # the test it is open for
        self.copy: Released | None = None  # that test's copy

    @classmethod
    def copy_for(cls, item) -> Released | None:
        shared = cls.current
        if shared is None or shared.atomic is None or shared.item is not item:
            return None
        if shared.copy is None:
            shared.copy = copy.deepcopy(shared.built)
        return shared.copy

    def enter(self, item) -> None:
        from django.db import connection, transaction

        if self.atomic is not None and not self._intact(connection):
            self.leave()
        if self.atomic is None:
            with self.blocker.unblock(), _suite_directory(), _loopback_allowed():
                atomic = transaction.atomic()
                atomic._from_testcase = True  # as a TestCase's: a durable block may be nested
                atomic.__enter__()
                try:
                    self.built = released_build(
                        PromptFactory(key="support.refund-reply"),
                        environments_ensure(),
                        Actor(label="release-manager"),  # ``manager``
                    )
                except BaseException:
                    atomic.__exit__(*sys.exc_info())
                    raise
                self.atomic = atomic
        self.item, self.copy = item, None

    def leave(self) -> None:
        from django.db import connection, transaction

        self.item, self.copy, self.built = None, None, None
        atomic, self.atomic = self.atomic, None
        if atomic is None:
            return
        with self.blocker.unblock():
            if connection.atomic_blocks == [atomic]:
                transaction.set_rollback(True)
                atomic.__exit__(None, None, None)
            else:
                # A test left a block open: the connection, and the transaction with it, go;
                # the next query connects afresh.
                connection.in_atomic_block = connection.closed_in_transaction = False
                connection.close()
                connection.connection = None

    def _intact(self, connection) -> bool:
        """Between tests, the build's transaction is the connection's one open block, usable."""
        return (
            connection.atomic_blocks == [self.atomic]
            and connection.connection is not None
            and not connection.closed_in_transaction
            and not connection.needs_rollback
        )


@pytest.fixture(scope="session")
def _released_shared(django_db_setup, django_db_blocker) -> Iterator[SharedReleased]:
    """The process's ``SharedReleased``; rolled back before the test database is dropped."""
    SharedReleased.current = shared = SharedReleased(django_db_blocker)
    yield shared
    shared.leave()
    SharedReleased.current = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    shared = SharedReleased.current
    if shared is not None:
        if released_shareable(item):
            shared.enter(item)
        else:
            shared.leave()
    return (yield)


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


def _loopback_allowed():
    """``_loopback_providers``' setting, for what runs outside a test's fixtures."""
    from django.test.utils import override_settings

    return override_settings(PROVIDER_ALLOW_LOOPBACK=True)


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
