"""One model client per provider per process (runs.providers.ProviderClients, issue 14 item 7).

Reused across calls and threads, rebuilt when the provider, its key or the outbound policy
changes, closed only once no call uses it, bounded, and fresh in a forked child; the outbound
policy (runs.egress) still checks every call, and a pooled connection is never reused under a
policy other than the one that approved it. Only loopback is contacted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from registry.content import ModelBinding
from runs import egress, providers
from runs.fake_provider import FakeProvider
from runs.models import Provider
from runs.providers import Outcome, ProviderClients, ProviderUnavailable, complete

MESSAGES = [{"role": "user", "content": "Hello"}]
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "echo-1",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderClients]:
    """A table of this test's own, the one complete() uses; its clients closed afterwards."""
    table = ProviderClients()
    monkeypatch.setattr(providers, "clients", table)
    yield table
    table.clear()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_seconds=5) as server:
        yield server


def answer_with(handler: BaseHTTPRequestHandler) -> None:
    """Read the request's body and answer ``ANSWER``, its length announced."""
    handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    body = json.dumps(ANSWER).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class KeepAlive:
    """A chat server on loopback that keeps connections open (HTTP/1.1, as real providers do;
    the fake speaks HTTP/1.0), counting the connections it accepted and the requests."""

    def __init__(self) -> None:
        self.connections = self.requests = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with lock:
                    outer.connections += 1

            def do_POST(self) -> None:
                with lock:
                    outer.requests += 1
                answer_with(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KeepAlive:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def keep_alive() -> Iterator[KeepAlive]:
    with KeepAlive() as server:
        yield server


def call(provider: str = "local") -> providers.Completion:
    return complete(binding=ModelBinding(provider=provider, model="echo-1"), messages=MESSAGES)


def add(name: str, base_url: str, **fields: Any) -> Provider:
    return Provider.objects.create(
        name=name, base_url=base_url, **{"timeout_seconds": 5.0, "max_retries": 0, **fields}
    )


# --- the plain call's pool ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_plain_call_goes_on_httpcores_pool_not_through_httpx(
    clients, keep_alive, no_proxy, monkeypatch: pytest.MonkeyPatch
):
    add("local", f"http://127.0.0.1:{keep_alive.port}/v1")
    sent = []
    real = providers.httpx2.Client.stream

    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(providers.httpx2.Client, "stream", stream)
    for _ in range(3):
        assert call().text == "hi"

    (entry,) = clients._entries.values()
    assert entry.client.plain is not None
    assert sent == []  # httpx's layer was not used
    assert (keep_alive.requests, keep_alive.connections) == (3, 1)


@pytest.mark.django_db
def test_an_ipv6_provider_is_sent_its_host_in_brackets(clients, no_proxy):
    """The Host header as httpx would send it: ``[::1]:port``, not ``::1:port``."""
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hosts.append(self.headers["Host"])
            answer_with(self)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

    try:
        server = Server(("::1", 0), Handler)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        add("local", f"http://[::1]:{port}/v1")
        assert call().text == "hi"
        assert hosts == [f"[::1]:{port}"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.django_db
def test_with_a_proxy_in_the_environment_httpx_routes_the_call(
    clients, fake, no_proxy, monkeypatch: pytest.MonkeyPatch
):
    """httpx reads the proxy settings (and NO_PROXY's exceptions): a plain call then goes through
    it, as the streams do. Here the proxy goes nowhere and loopback is excepted from it."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    add("local", fake.base_url)

    assert call().text

    (entry,) = clients._entries.values()
    assert entry.client.plain is None


@pytest.mark.django_db
def test_a_kept_connection_the_server_closed_is_not_used_again(clients, no_proxy):
    """A provider closes an idle kept connection whenever it likes, without saying so before: the
    next call opens a new one instead of failing on the closed one."""
    closed = threading.Semaphore(0)

    class Closing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive announced, then the connection is closed

        def do_POST(self) -> None:
            answer_with(self)
            self.close_connection = True

        def finish(self) -> None:
            super().finish()
            self.connection.close()
            closed.release()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Closing)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        add("local", f"http://127.0.0.1:{server.server_address[1]}/v1")
        for _ in range(3):
            assert call().text == "hi"
            assert closed.acquire(timeout=10)  # the server has closed it before the next call
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- reuse and rebuilding -----------------------------------------------------------------------


@pytest.mark.django_db
def test_every_call_of_a_provider_uses_one_client_and_one_connection(clients, keep_alive):
    add("local", f"http://127.0.0.1:{keep_alive.port}/v1")

    for _ in range(3):
        assert call().text == "hi"

    assert clients.built == 1
    assert (keep_alive.requests, keep_alive.connections) == (3, 1)  # no handshake after the first


@pytest.mark.django_db
def test_a_saved_provider_gets_a_new_client_and_the_old_one_is_closed(
    clients, fake, monkeypatch: pytest.MonkeyPatch
):
    provider = add("local", fake.base_url)
    call()
    (old,) = [entry.client for entry in clients._entries.values()]
    plain_closed = threading.Event()
    close_plain = old.plain.close
    monkeypatch.setattr(old.plain, "close", lambda: (close_plain(), plain_closed.set()))

    provider.timeout_seconds = 7.0
    provider.save()
    call()

    (new,) = [entry.client for entry in clients._entries.values()]
    assert clients.built == 2
    assert new is not old
    assert new.timeout == 7.0
    assert old.is_closed()
    assert plain_closed.is_set()  # the plain calls' pool too
    assert not new.is_closed()


@pytest.mark.django_db
def test_a_new_key_in_the_variable_gets_a_new_client_that_sends_it(
    clients, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LOCAL_API_KEY", "sk-first")
    with FakeProvider(api_key="sk-second") as fake:
        add("local", fake.base_url, api_key_env="LOCAL_API_KEY")
        with pytest.raises(ProviderUnavailable) as refused:
            call()
        assert "HTTP 401" in refused.value.attempts[0].detail

        monkeypatch.setenv("LOCAL_API_KEY", "sk-second")  # the key rotated: no restart needed
        assert call().text

        assert clients.built == 2
        authorizations = [r.headers["authorization"] for r in fake.requests]
        assert authorizations == ["Bearer sk-first", "Bearer sk-second"]


@pytest.mark.django_db
def test_providers_each_have_their_own_client_and_the_table_is_bounded(
    fake, monkeypatch: pytest.MonkeyPatch
):
    table = ProviderClients(capacity=2)
    monkeypatch.setattr(providers, "clients", table)
    for name in ("one", "two", "three"):
        add(name, fake.base_url)
    try:
        call("one")
        (first,) = [entry.client for entry in table._entries.values()]
        call("two")
        call("three")  # "one" was the least recently used: retired, and closed (no call on it)

        assert len(table) == 2
        assert list(table._entries) == ["two", "three"]
        assert first.is_closed()
        call("one")  # built again when needed
        assert table.built == 4
    finally:
        table.clear()


def test_a_client_replaced_during_a_call_is_closed_only_when_the_call_ends(clients):
    provider = Provider(name="local", base_url="http://127.0.0.1:9/v1", timeout_seconds=5.0)
    with clients.lease(provider, None) as old:
        provider.timeout_seconds = 6.0  # another request meanwhile sees the changed row
        with clients.lease(provider, None) as new:
            assert new is not old
        assert not old.is_closed()  # still in use by the first call
    assert old.is_closed()
    assert not new.is_closed()  # the current client stays open for the next call


def test_threads_share_one_client(clients):
    provider = Provider(name="local", base_url="http://127.0.0.1:9/v1", timeout_seconds=5.0)
    start = threading.Barrier(8)
    seen: list[Any] = []

    def lease() -> None:
        start.wait()
        with clients.lease(provider, None) as client:
            seen.append(client)

    threads = [threading.Thread(target=lease) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(seen) == 8
    assert len({id(client) for client in seen}) == 1  # racing first builds: one kept, all use it
    (entry,) = clients._entries.values()
    assert entry.users == 0
    assert not entry.client.is_closed()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_with_no_clients_and_a_free_lock(clients):
    provider = Provider(name="local", base_url="http://127.0.0.1:9/v1", timeout_seconds=5.0)
    with clients.lease(provider, None) as parents:
        pass
    # A lock held by one of the parent's threads at the fork would stay held in the child.
    clients._lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code, never return into pytest
            code = 1
            try:
                if len(clients) == 0 and clients._lock.acquire(timeout=2):
                    clients._lock.release()
                    with clients.lease(provider, None) as childs:
                        code = 0 if childs is not parents else 2
            finally:
                os._exit(code)
    finally:
        clients._lock.release()
    status = _waited(pid)

    assert os.waitstatus_to_exitcode(status) == 0
    assert len(clients) == 1
    assert not parents.is_closed()


def _waited(pid: int, seconds: float = 60.0) -> int:
    """The child's wait status; a child stuck past ``seconds`` is killed (and fails the test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


# --- the outbound policy with a reused client ---------------------------------------------------


@pytest.mark.django_db
def test_a_reused_client_is_still_checked_before_each_call(clients, fake, settings):
    add("local", fake.base_url)
    call()

    settings.PROVIDER_ALLOW_LOOPBACK = False
    with pytest.raises(ProviderUnavailable) as refused:
        call()

    assert [a.outcome for a in refused.value.attempts] == [Outcome.REFUSED]
    assert len(fake.requests) == 1  # the cached client never sent the second request


@pytest.fixture
def resolving(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Name resolution, faked for both the policy's check and the client's connect (one
    ``socket`` module): set ``resolving[host]`` to the address it stands for now."""
    table: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(egress.socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.mark.django_db
def test_a_name_that_now_resolves_to_a_refused_address_is_refused_despite_the_pool(
    clients, keep_alive, settings, resolving
):
    settings.PROVIDER_ALLOW_LOOPBACK = True
    resolving["model.test"] = "127.0.0.1"
    add("local", f"http://model.test:{keep_alive.port}/v1")
    call()
    assert keep_alive.connections == 1  # a connection is pooled, open to 127.0.0.1

    resolving["model.test"] = "169.254.169.254"  # the name moved to the metadata service
    with pytest.raises(ProviderUnavailable) as refused:
        call()

    assert [a.outcome for a in refused.value.attempts] == [Outcome.REFUSED]
    assert keep_alive.requests == 1  # the pooled connection was not used either


@pytest.mark.django_db
def test_a_pooled_connection_is_never_reused_under_a_changed_policy(
    clients, keep_alive, settings, resolving
):
    """A pooled connection goes to the address it was opened to, whatever its name resolves to
    now: it is reused only under the policy that approved that address. Here the host is allowed
    by name, then only as loopback: a new client, hence a new connection, checked anew."""
    settings.PROVIDER_ALLOW_LOOPBACK = False
    settings.PROVIDER_ALLOWED_HOSTS = ["model.test"]
    resolving["model.test"] = "127.0.0.1"
    add("local", f"http://model.test:{keep_alive.port}/v1")
    call()
    call()
    assert (keep_alive.requests, keep_alive.connections) == (2, 1)

    settings.PROVIDER_ALLOWED_HOSTS = []
    settings.PROVIDER_ALLOW_LOOPBACK = True
    call()

    assert (keep_alive.requests, keep_alive.connections) == (3, 2)
    assert clients.built == 2
