"""Fixtures for the SDK's tests against a live registry (pytest-django's ``live_server``).

- ``sdk_key``: an API key as a service holds it (reads prompts, reports outcomes).
- ``split``: ``released`` (tests/conftest.py) plus, in staging, a 20 % canary of v3, an
  experiment (30 % warm on v1, 30 % brief on v3) and a 10 % shadow of v1: every kind of draw.
- ``gate``: the live server behind a TCP proxy that the test can take down, bring back, cut the
  open connections of, or make refuse the release stream: the outside world failing, with the
  client and the server running as they are.
- ``make_sdk``: a ``promptregistry.Client`` through the gate, closed after the test.
- ``wait_until``: a bounded poll; tests never assert how long something took.

The SDK is imported inside the fixtures: the stream endpoint's own tests need none of it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from api.services import apikey_create
from tests.conftest import Released
from tests.tcp_proxy import TcpProxy

KEY = "support.refund-reply"


@pytest.fixture(autouse=True)
def _loopback_only(no_proxy) -> None:
    """No proxy may take a client's request off loopback (``no_proxy``, tests/conftest.py)."""


@pytest.fixture
def sdk_key(db) -> str:
    """A service's key: reads prompts (the bundle, the stream) and reports outcomes."""
    _, raw = apikey_create(name="sdk-service", scopes=("prompts:read", "events:write"))
    return raw


@pytest.fixture
def split(released: Released, manager) -> Released:
    """Staging serves v2 to most, with a 20 % canary of v3, an experiment (30 % warm on v1, 30 %
    brief on v3) and a 10 % shadow of v1. Production still serves v1 alone."""
    from releases import services

    where = {"prompt": released.prompt, "environment": released.environments["staging"]}
    services.release_canary_start(
        **where, version=3, percent=Decimal(20), actor=manager, reason="try v3"
    )
    services.release_experiment_start(
        **where,
        name="tone",
        variants=[("warm", 1, Decimal(30)), ("brief", 3, Decimal(30))],
        actor=manager,
        reason="which tone",
    )
    services.release_shadow_start(
        **where, versions=[1], sample_percent=Decimal(10), actor=manager, reason="compare v1"
    )
    return released


class Gate(TcpProxy):
    """The TCP proxy (tests/tcp_proxy.py) in front of the live server: ``down()``, ``up()`` and
    ``cut()`` as there. With ``refuse_streams`` set, a request for ``…/stream`` is cut as it comes
    in while every other request passes. ``streams`` counts the stream requests let through."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.refuse_streams = False
        self.streams = 0
        super().__init__(target)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _is_stream(data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0]
        return line.startswith(b"GET ") and b"/stream " in line

    def refuses(self, first: bytes) -> bool:
        return self.refuse_streams and self._is_stream(first)

    def cuts(self, data: bytes) -> bool:
        # A request on a connection kept alive (the ASGI server keeps them; the live server
        # closes each after its answer) passes here, not through ``accepted``.
        if not self._is_stream(data):
            return False
        if self.refuse_streams:
            return True
        self.streams += 1
        return False

    def accepted(self, first: bytes) -> None:
        if self._is_stream(first):
            self.streams += 1


@pytest.fixture
def registry_url(live_server) -> str:
    """What the gate stands in front of: the live server (WSGI). The stream tests
    (test_client_stream.py) also run against the ASGI stream process (``asgi_server``)."""
    return live_server.url


@pytest.fixture
def gate(registry_url, settings, monkeypatch) -> Iterator[Gate]:
    from api import stream

    address = urlsplit(registry_url)
    # Requests through the gate name 127.0.0.1 in their Host header.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    # A server-side stream learns that its client left only when it next writes: keep-alives
    # every half second end the live server's streams soon after each test's clients close.
    monkeypatch.setattr(stream, "STREAM_KEEPALIVE_SECONDS", 0.5)
    settings.RELEASE_STREAM_MAX_SECONDS = 30
    proxy = Gate(("127.0.0.1", address.port or 80))
    yield proxy
    proxy.down()
    _wait_for_requests_to_end()


def _wait_for_requests_to_end(timeout: float = 10.0) -> None:
    """Waits (boundedly) until the live server answers no request: a stream left running would
    read the database of the next test, or hold it open when the test database is dropped."""
    deadline = time.monotonic() + timeout
    while any(t.name.endswith("(process_request_thread)") for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


@pytest.fixture
def closed_port() -> str:
    """The address of a registry that is not there: a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def make_sdk(gate, sdk_key, tmp_path) -> Iterator[Callable[..., Any]]:
    """``make_sdk(**options)``: a Client of staging through the gate, with a cache_dir of its own
    and no reporting unless asked; every one is closed after the test."""
    from promptregistry import Client

    clients: list[Client] = []

    def make(**options: Any) -> Client:
        options = {
            "api_key": sdk_key,
            "environment": "staging",
            "cache_dir": str(tmp_path / "cache"),
            "report": False,
            **options,
        }
        client = Client(options.pop("base_url", gate.url), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def wait_until() -> Callable[..., None]:
    def wait(predicate: Callable[[], object], *, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"Waited {timeout} s for {what}")
            time.sleep(0.02)

    return wait
