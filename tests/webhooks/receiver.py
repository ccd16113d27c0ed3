"""A webhook receiver for the tests: a real HTTP server on loopback that records every delivery
and checks its signature the way the Standard Webhooks reference library does
(``standard-webhooks/standard-webhooks``, ``libraries/python/standardwebhooks/webhooks.py``),
written here again so that the server's signing is checked by a second implementation.

How it answers is set per request, in order (``answers``, then ``default``): an ``Answer`` with a
status, a body, headers, or ``hang`` (no answer until the test ends). ``stop()`` closes the port
(a receiver that is down: connections are refused) and ``start()`` opens the same port again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_SECONDS = 5 * 60  # the reference library's


@dataclass(frozen=True)
class Answer:
    status: int = 204
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


OK = Answer()
HANG = Answer(hang=True)


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The reference's ``Webhook.verify``: the three headers present, the timestamp within five
    minutes, and one ``v1`` signature of ``{id}.{timestamp}.{body}`` matching (constant time)."""
    headers = {k.lower(): v for k, v in headers.items()}
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (message_id and timestamp and signatures):
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    encoded = secret.removeprefix("whsec_")
    key = base64.b64decode(encoded + "==")
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for versioned in signatures.split(" "):
        version, _, value = versioned.partition(",")
        if version == "v1" and hmac.compare_digest(expected, base64.b64decode(value)):
            return True
    return False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return self.json["type"]

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")

    def verified_by(self, secret: str) -> bool:
        return verify(secret, self.headers, self.body)


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: deque[Answer] = deque()
        self.default = OK
        self.released = threading.Event()  # ends every hanging answer
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body))
                answer = receiver.answers.popleft() if receiver.answers else receiver.default
                if answer.hang:
                    receiver.released.wait(timeout=30)
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll: stopping (a receiver going down, each test's end) waits for one.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Down: the port is closed, a connection is refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
            self.server = None
