"""Browser tests: Playwright driving Debian's Chromium (by executable path, never a downloaded
browser) headless, against the live server pytest-django runs in a thread of the test process.

- ``browser``: a Chromium of the test's own, started after the test database is set up and
  closed before it is flushed (Playwright's sync API keeps an event loop running in this thread
  while it is open, and Django refuses ORM calls from such a thread unless told they are safe).
- ``demo``: the demo registry ``make run`` loads (``manage.py demo``), with the local model server
  as its provider, so pages are looked at on the data a new user sees.
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


@pytest.fixture
def browser(browser_settings):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"No Chromium at {CHROMIUM}: run scripts/ensure-browser (make test does).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
            # The test's ORM calls made while the browser was open ran in the loop's context and
            # got connections of their own (asgiref's Local): close them in that context, or they
            # stay open and keep the test database from being dropped.
            connections.close_all()


@pytest.fixture
def browser_settings(settings, live_server, monkeypatch):
    """The live server over plain HTTP on localhost, as the browser reaches it."""
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SECURE_SSL_REDIRECT = False
    settings.CSRF_TRUSTED_ORIGINS = [live_server.url]
    # Playwright's sync API keeps an event loop in this thread; Django refuses ORM calls from a
    # thread with a running loop. The test's own ORM calls are synchronous: let them through.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    return settings


@pytest.fixture
def demo(browser_settings, environments, model_server, tmp_path) -> str:
    """The demo registry, as ``make run`` loads it; returns the command's output."""
    browser_settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("demo", stdout=out)
    return out.getvalue()


@pytest.fixture
def superuser(transactional_db):
    user_model = get_user_model()
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
