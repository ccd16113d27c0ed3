"""Browser tests: Playwright driving Debian's Chromium (by executable path, never a downloaded
browser) headless, against the live server pytest-django runs in a thread of the test process.

- ``browser``: one Chromium for the browser tests a test process runs in a row (package scope),
  started after the test database is set up and closed when the process leaves this package:
  launching it costs seconds, and each test gets a fresh browser context of its own (its own
  cookies, storage and cache), which is what isolates browser tests from each other. While it is
  open, Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
  calls from such a thread unless told they are safe (``DJANGO_ALLOW_ASYNC_UNSAFE``, set for as
  long as the browser is open, and only then).
- ``demo``: the demo registry ``make run`` loads (``manage.py demo``), with the local model server
  as its provider, so pages are looked at on the data a new user sees; for a test that changes
  it (a transactional test: the database is flushed after it).
- ``shared_demo``: the same demo registry for a test that only looks at it. It is loaded once and
  shared by the looking tests a test process runs in a row, without a flush between them (a load
  and a flush cost seconds each). A looking test that changes the data after all fails, and the
  data is flushed and loaded again for the next test, so no test sees another's changes. A test
  that changes the data uses ``demo`` (it reuses a load no test has changed yet, and its flush
  ends it).
- ``admin_page``: a page of a fresh browser context, 1,400 pixels wide, logged in to the admin as
  a superuser. When the test ends, its last screen is kept as a screenshot under
  ``var/test-artifacts/browser/`` (``BROWSER_ARTIFACTS`` moves it), pass or fail.
- ``visit(page, path)``: goes to an admin path and fails on a server error or a console error.

Chromium is installed by ``scripts/ensure-browser`` (``make test`` runs it); ``CHROMIUM`` names
another executable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.test.utils import override_settings

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", "var/test-artifacts/browser"))
# What the machine's closed network needs: no calls home, no sandbox (tests run as root).
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1400, "height": 900}
NARROW = {"width": 800, "height": 900}
# Playwright waits this long at most for a page or an element: no test waits without a bound.
TIMEOUT_MS = 15_000
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


@pytest.fixture(scope="package")
def _chromium(django_db_setup) -> Iterator:
    """One Chromium for the browser tests this process runs in a row (see the module docstring)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"No Chromium at {CHROMIUM}: run scripts/ensure-browser (make test does).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while the browser is open; Django
    # refuses ORM calls from a thread with a running loop. The tests' own ORM calls (and the
    # flush after a transactional test) are synchronous: let them through, for this long only.
    unsafe = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
            )
            try:
                yield browser
            finally:
                browser.close()
                # The ORM calls made while the browser was open ran in the loop's context and got
                # connections of their own (asgiref's Local): close them in that context, or they
                # stay open and keep the test database from being dropped.
                connections.close_all()
    finally:
        if unsafe is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = unsafe


@pytest.fixture
def browser(_chromium, browser_settings):
    return _chromium


@pytest.fixture
def browser_settings(settings, live_server):
    """The live server over plain HTTP on localhost, as the browser reaches it."""
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SECURE_SSL_REDIRECT = False
    settings.CSRF_TRUSTED_ORIGINS = [live_server.url]
    return settings


class _DemoState:
    """Whether this process's test database holds the demo registry as ``manage.py demo`` left it."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.output = ""  # what the command printed when it loaded what is in the database
        self.loaded = False  # the demo is in the database, changed by no test

    def load(self) -> str:
        with override_settings(VAR_DIR=self.var_dir, PROVIDER_ALLOW_LOOPBACK=True):
            out = StringIO()
            call_command("demo", stdout=out)
        self.output, self.loaded = out.getvalue(), True
        return self.output


def _flush() -> None:
    """What pytest-django does after a transactional test (TransactionTestCase's teardown)."""
    call_command("flush", verbosity=0, interactive=False, database="default")


def _row_counts() -> dict[str, int]:
    """Rows per table, sessions aside (logging in writes one): what a looking test leaves as is."""
    from django.apps import apps
    from django.contrib.sessions.models import Session

    return {
        model._meta.label: model._base_manager.count()
        for model in apps.get_models()
        if model is not Session and model._meta.managed and not model._meta.proxy
    }


@pytest.fixture(scope="package")
def _demo_state(_chromium, django_db_blocker, tmp_path_factory) -> Iterator[_DemoState]:
    """The demo registry's state in this process's database, for as long as it runs browser tests
    in a row; flushed when it leaves them, as a transactional test would be (the tests after them
    expect an empty database or the migrations' rows, never the demo's)."""
    state = _DemoState(tmp_path_factory.mktemp("demo-var"))
    yield state
    if state.loaded:
        with django_db_blocker.unblock():
            _flush()


def _load_demo(state: _DemoState, server) -> str:
    """Loads the demo (on the migrations' environments, as ``make run`` does) unless the database
    holds it already, unchanged; the local model server is its provider."""
    if state.loaded:
        return state.output
    from tests.conftest import environments_ensure, model_server_configure

    environments_ensure()
    model_server_configure(server)
    return state.load()


@pytest.fixture(autouse=True)
def _no_stale_demo(request, _demo_state, django_db_blocker) -> None:
    """A transactional test that does not ask for the demo finds no demo: it meets the database as
    it would after any transactional test's flush."""
    if request.node.get_closest_marker("django_db") is None or "demo" in request.fixturenames:
        return
    if _demo_state.loaded:
        _demo_state.loaded = False
        with django_db_blocker.unblock():
            _flush()


@pytest.fixture
def demo(browser_settings, environments, model_server, _demo_state) -> str:
    """The demo registry, as ``make run`` loads it, for a test that changes it; returns the
    command's output. The test is transactional: its flush ends this copy of the demo."""
    output = _load_demo(_demo_state, model_server)
    _demo_state.loaded = False  # whatever the test does, the flush after it removes the demo
    return output


@pytest.fixture
def shared_demo(
    request, browser_settings, _demo_state, _model_server_process, django_db_blocker
) -> Iterator[str]:
    """The demo registry for a test that only looks at it (see the module docstring); returns the
    command's output. The test gets the database as the live server does, outside any transaction,
    and must leave every table's rows as they were (sessions aside)."""
    if request.node.get_closest_marker("django_db"):
        pytest.fail("shared_demo is for looking tests: a django_db test changes data, use demo")
    with django_db_blocker.unblock():
        output = _load_demo(_demo_state, _model_server_process)
        before = _row_counts()
        yield output
        changed = {
            table: (count, after)
            for (table, count), after in zip(before.items(), _row_counts().values(), strict=True)
            if count != after
        }
        if changed:
            _demo_state.loaded = False
            _flush()
            pytest.fail(
                f"A test on shared_demo changed the demo data (rows before, after: {changed}); "
                "a test that changes it uses the demo fixture and django_db(transaction=True)."
            )


@pytest.fixture(autouse=True)
def _live_server_helper(request) -> Iterator[None]:
    """pytest-django's own (``pytest_django.fixtures._live_server_helper``, overridden here by
    name), but a test on ``shared_demo`` does not get ``transactional_db``: its flush after every
    test is what the shared demo saves. Every other test using the live server gets it, as before."""
    if "live_server" not in request.fixturenames:
        yield
        return
    if "shared_demo" not in request.fixturenames:
        request.getfixturevalue("transactional_db")
    live_server = request.getfixturevalue("live_server")
    live_server._live_server_modified_settings.enable()
    yield
    live_server._live_server_modified_settings.disable()


@pytest.fixture
def superuser(request, django_db_blocker):
    """The demo's admin (or a new superuser): in the looking tests' database when the test uses
    ``shared_demo``, else in the test's transactional one."""
    if "shared_demo" in request.fixturenames:
        request.getfixturevalue("shared_demo")
    else:
        request.getfixturevalue("transactional_db")
    user_model = get_user_model()
    with django_db_blocker.unblock():
        return user_model.objects.filter(
            username="admin"
        ).first() or user_model.objects.create_superuser(
            "admin", "admin@example.com", "not-a-real-password-1"
        )


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:150]


@pytest.fixture
def admin_page(browser, browser_settings, live_server, superuser, request) -> Iterator:
    """A logged-in admin page, 1,400 pixels wide; its last screen is kept when the test ends."""
    client = Client()
    client.force_login(superuser)
    context = browser.new_context(viewport=WIDE, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page = context.new_page()
    page.console_errors = []
    page.on(
        "console",
        lambda message: message.type == "error" and page.console_errors.append(message.text),
    )
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(
                path=ARTIFACTS / f"{_artifact_name(request.node.nodeid)}.png", full_page=True
            )
        finally:
            context.close()


@pytest.fixture
def visit() -> Callable:
    return visit_page


def visit_page(page, path: str):
    """Go to ``path`` and check it answered and ran cleanly: no 4xx/5xx, no JavaScript error."""
    page.console_errors.clear()
    response = page.goto(path)
    assert response is not None, path
    assert response.status < 400, f"{path}: {response.status}"
    assert not page.console_errors, f"{path}: {page.console_errors}"
    return response


@pytest.fixture(scope="session")
def live_server(django_db_setup, live_server):
    """pytest-django's live server, stopped before the test databases are dropped (its thread's
    connection would otherwise keep them open)."""
    return live_server
