"""A client following the release stream (issue 5, item 3).

The clients here poll once an hour: a change that reaches them within the test's deadline can
only have come through the stream. Deadlines are bounded polls (``wait_until``), never timings.

- a rollback reaches the client through the stream, with the stream fed by Redis pub/sub and by
  the database check (no Redis);
- a stream broken mid-run: the client goes on polling, and reconnects when it can;
- the server ends streams after ``RELEASE_STREAM_MAX_SECONDS``: the client reconnects at once;
- ``close`` ends a stream being read at once (a registry that never writes again: no keep-alive).

Each live test runs against both ways of serving the stream: the WSGI server and the ASGI stream
process (issue 21).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from registry.actors import Actor
from releases import services

# A live server needs a transactional test, whose flush SQLite refuses (release events are
# append-only, enforced by a trigger): those run on PostgreSQL only.
live = pytest.mark.postgres
# The live server is picked by ``registry_url`` at run time, which pytest-django does not see: its
# tests ask for a transactional database themselves.
pytestmark = pytest.mark.django_db(transaction=True)

KEY = "support.refund-reply"
MANAGER = Actor(label="release-manager")
HOUR = 3600.0


def change(released, service, **kwargs) -> None:
    service(
        prompt=released.prompt,
        environment=released.environments["staging"],
        actor=MANAGER,
        reason="test",
        **kwargs,
    )


def version_of(client, subject: str = "user-1") -> int:
    return client.get(KEY, subject=subject).version


@pytest.fixture(params=["wsgi", "asgi"])
def registry_url(request) -> str:
    """Each live test follows the stream served both ways (decision 0029): by the WSGI server,
    a thread per stream, and by the ASGI stream process (``config.asgi``, issue 21)."""
    if request.param == "asgi":
        return request.getfixturevalue("asgi_server").url
    return request.getfixturevalue("live_server").url


@pytest.fixture(params=["redis", "database"])
def feed(request, settings) -> str:
    """How the server's stream learns of changes: Redis pub/sub, or the database every second."""
    if request.param == "redis":
        request.getfixturevalue("needs_redis")
    else:
        settings.REDIS_URL = ""
    return request.param


@live
def test_a_rollback_reaches_a_streaming_client_at_once(released, make_sdk, wait_until, feed):
    client = make_sdk(refresh_interval=HOUR)
    wait_until(lambda: client.status.stream_connected, what="the stream")
    assert version_of(client) == 2

    change(released, services.release_canary_start, version=3, percent=Decimal(100))
    wait_until(lambda: version_of(client) == 3, what="the canary", timeout=5)

    change(released, services.release_rollback)
    wait_until(lambda: version_of(client) == 2, what="the rollback", timeout=5)
    assert client.get(KEY, subject="user-1").variant == "stable"
    assert client.status.stale is False


@live
def test_a_broken_stream_falls_back_to_polling_and_reconnects(released, make_sdk, gate, wait_until):
    client = make_sdk(refresh_interval=0.2)
    wait_until(lambda: client.status.stream_connected, what="the stream")

    gate.refuse_streams = True
    gate.cut()
    wait_until(lambda: not client.status.stream_connected, what="the stream to break")

    change(released, services.release_canary_start, version=3, percent=Decimal(100))
    wait_until(lambda: version_of(client) == 3, what="polling to bring the canary")
    assert client.status.stream_connected is False
    assert client.status.stale is False  # polling vouches for the bundle meanwhile

    gate.refuse_streams = False
    wait_until(lambda: client.status.stream_connected, what="the stream to come back")
    assert gate.streams >= 2
    change(released, services.release_rollback)
    wait_until(lambda: version_of(client) == 2, what="the rollback")


@live
def test_the_client_reconnects_when_the_server_ends_the_stream(
    released, make_sdk, gate, wait_until, settings
):
    settings.RELEASE_STREAM_MAX_SECONDS = 1
    client = make_sdk(refresh_interval=HOUR)

    wait_until(lambda: gate.streams >= 3, what="two reconnections")

    change(released, services.release_canary_start, version=3, percent=Decimal(100))
    wait_until(lambda: version_of(client) == 3, what="the canary through a later stream")


@live
def test_a_client_that_started_without_a_bundle_fetches_one_on_the_hello(
    released, make_sdk, gate, wait_until
):
    """The hello names the bundle's ETag now: a client holding another (or none) fetches at
    once, instead of at its next poll an hour later."""
    gate.down()
    client = make_sdk(refresh_interval=HOUR)  # no last-known-good yet: nothing to serve
    assert client.status.source == "none"

    gate.up()  # the stream reconnects (after its backoff) and says hello
    wait_until(lambda: client.status.source == "live", what="the bundle after the hello")
    assert version_of(client) == 2


class SilentStream(BaseHTTPRequestHandler):
    """A registry whose bundle is unavailable and whose stream says hello, then nothing: no
    keep-alive, no end. Only ``Client.close`` can end the client's read."""

    release = threading.Event()

    def do_GET(self):
        if not self.path.endswith("/stream"):
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'event: hello\ndata: {"environment":"staging","etag":"\\"x\\""}\n\n')
        self.wfile.flush()
        self.release.wait(30)

    def log_message(self, *args):
        pass


def test_close_ends_a_stream_being_read_at_once(wait_until):
    from promptregistry import Client

    server = ThreadingHTTPServer(("127.0.0.1", 0), SilentStream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = Client(
        f"http://127.0.0.1:{server.server_address[1]}",
        api_key="k",
        environment="staging",
        refresh_interval=HOUR,
        report=False,
    )
    try:
        wait_until(lambda: client.status.stream_connected, what="the stream")

        client.close(timeout=5)

        assert [t.name for t in client._threads if t.is_alive()] == []
        assert client.status.stream_connected is False
    finally:
        SilentStream.release.set()
        server.shutdown()
        server.server_close()
