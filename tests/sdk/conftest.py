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

import contextlib
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


class Gate:
    """A TCP proxy on 127.0.0.1 in front of the live server.

    ``down()`` closes the port (new connections are refused) and cuts every open connection;
    ``up()`` listens on the same port again; ``cut()`` drops the open connections only (a stream
    broken mid-run). With ``refuse_streams`` set, a request for ``…/stream`` is cut as it comes
    in while every other request passes. ``streams`` counts the stream requests let through."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.refuse_streams = False
        self.streams = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # so the accept loop notices down() quickly
        self.port = listener.getsockname()[1]
        self._listener, self._stop = listener, threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True).start()

    def down(self) -> None:
        # Under the lock: a connection accepted just before is either cut here or refused by
        # _serve, never left open.
        with self._lock:
            self._stop.set()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self.cut()

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with contextlib.suppress(OSError), listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)
                threading.Thread(target=self._serve, args=(client, stop), daemon=True).start()

    def _is_stream(self, data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0]
        return line.startswith(b"GET ") and b"/stream " in line

    def _serve(self, client: socket.socket, stop: threading.Event) -> None:
        try:
            first = client.recv(65536)
            if not first or (self.refuse_streams and self._is_stream(first)):
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            if stop.is_set():  # the gate went down meanwhile
                client.close()
                upstream.close()
                return
            self._open |= {client, upstream}
        if self._is_stream(first):
            self.streams += 1
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        with contextlib.suppress(OSError):
            upstream.sendall(first)
            self._pump(client, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.refuse_streams and self._is_stream(data):
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, target}
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def gate(live_server, settings, monkeypatch) -> Iterator[Gate]:
    from api import stream

    address = urlsplit(live_server.url)
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
