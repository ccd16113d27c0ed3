"""A local OpenAI-compatible chat server: the demo's ``local`` provider and the tests' only model.

``make run`` starts it (``python -m runs.fake_provider --port 8765``) so a new user can run a prompt
with no API key, and the suite talks to it on loopback so no test reaches the internet (issue #4).
It imports only the standard library and its pure half, ``runs.fake_answers``, so it starts in
milliseconds and depends on no other app.

It serves ``POST /v1/chat/completions`` (plain, or streamed as ``chat.completion.chunk`` events
with an optional usage chunk and ``data: [DONE]``), ``POST /v1/embeddings`` (a hashed bag of
words, ``runs.fake_answers.embed_text``), ``POST /v1/moderations`` (a text is flagged for the
words it holds: ``runs.fake_answers.FLAGGED_WORDS``) and ``GET /v1/models``; what it answers, the
same bytes for the same request, is decided in ``runs.fake_answers``: for a request with tools, a
call to one of them; for a ``guard-`` model, a Llama Guard verdict (``safe``, or ``unsafe`` and
its hazard codes) on the last user message (the rules are in that module's docstring).

Faults come from the model name (``fault-429``, ``fault-500``, ``fault-malformed``,
``fault-badjson``, ``fault-badtool``, ``fault-hang``, ``slow-<ms>``, and the answers broken on the wire that
``runs.fake_faults`` writes: ``fault-drop``, ``fault-error-event``, ``fault-stall``,
``fault-garbage``, ``fault-reset``, ``fault-trickle-<ms>``) or from a per-model queue
(``fake.faults.push("echo-1", "429", count=2)`` or ``POST /_control/faults``), so a test can make
the first N calls fail and the next one succeed. Embeddings and moderations take the same names
and queues, but only ``500`` (a 500 answer), ``hang`` and ``slow-<ms>`` change their answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import socketserver
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from runs.fake_answers import (
    CREATED,
    ApiError,
    ChatRequest,
    Completion,
    complete,
    completion_body,
    embeddings_body,
    moderations_body,
    parse_chat_request,
)
from runs.fake_faults import BROKEN, Fault, StreamRecord, Wire, broken_body, stream_body, trickled

logger = logging.getLogger(__name__)

# Loopback only: the fake checks no real credentials and must never be reachable from outside.
HOST = "127.0.0.1"
HANG_SECONDS = 30.0  # longer than any client timeout the registry or the tests configure
# What GET /v1/models lists: the answering models and the instant faults (any name answers).
MODELS = (
    "echo-1",
    "echo-small",
    "guard-1",
    "omni-moderation-latest",
    "fault-429",
    "fault-500",
    "fault-malformed",
    "fault-badjson",
)


@dataclass(frozen=True, slots=True)
class Injected:
    fault: Fault
    delay: float = 0.0  # seconds, for Fault.SLOW and Fault.TRICKLE


TIMED = (Fault.SLOW, Fault.TRICKLE)  # named with their milliseconds: ``slow-250``


def parse_fault(spec: str) -> Injected:
    """A Fault's value (``"429"``, ``"reset"``…), or ``"slow-<ms>"`` / ``"trickle-<ms>"``."""
    if match := re.fullmatch(r"(slow|trickle)-([0-9]{1,6})", spec):
        return Injected(Fault(match[1]), int(match[2]) / 1000)
    if spec in {fault.value for fault in Fault if fault not in TIMED}:
        return Injected(Fault(spec))
    expected = ", ".join(f.value for f in Fault if f not in TIMED)
    raise ValueError(f"Unknown fault {spec!r}: expected {expected}, slow-<ms>, trickle-<ms>")


def fault_for_model(model: str) -> Injected | None:
    """The fault a model name asks for; ValueError for a ``fault-`` name with a typo."""
    if model.startswith("fault-"):
        return parse_fault(model.removeprefix("fault-"))
    return parse_fault(model) if model.startswith("slow-") else None


class FaultQueue:
    """Faults to inject per model, in order: the next N calls to that model fail, then it recovers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Injected]] = {}

    def push(self, model: str, fault: str, count: int = 1) -> None:
        injected = parse_fault(fault)  # a typo fails in the test that made it, not later
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queues.setdefault(model, deque()).extend([injected] * count)

    def pop(self, model: str) -> Injected | None:
        with self._lock:
            queue = self._queues.get(model)
            return queue.popleft() if queue else None

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()


class RecordedRequest(NamedTuple):
    path: str
    body: Any  # the parsed JSON body; None when it was not JSON
    headers: dict[str, str]  # names lower-cased


class RequestLog(list[RecordedRequest]):
    """Every ``/v1`` request received, in order, so tests can count attempts.

    Thread-safe as it is used: handler threads only ``append``, which is atomic on a list, and
    readers copy or iterate (``list(fake.requests)``, ``len(...)``) while they append.
    """

    def for_path(self, path: str) -> list[RecordedRequest]:
        return [item for item in list(self) if item.path == path]

    def models(self) -> list[str]:
        """The model of each chat completion request, in order: what a fallback chain tried."""
        chats = self.for_path("/v1/chat/completions")
        return [item.body.get("model") for item in chats if isinstance(item.body, dict)]


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError: recorded as "not JSON"
        return None


class FakeServer(ThreadingHTTPServer):
    """The HTTP server, holding the provider whose state its handler threads share."""

    daemon_threads = True  # a handler never keeps the process alive

    def __init__(self, port: int, provider: FakeProvider) -> None:
        self.provider = provider
        # Set by stop(): hung and slow answers wait on it instead of sleeping, so they end at once.
        self.stopping = threading.Event()
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN, a reverse DNS lookup that can take
        # seconds; the fake needs only the bound socket.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) while we answered: expected, not a bug.
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("Fake provider: client %s went away", client_address)
        else:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer
    # HTTP/1.0: one connection per request, so no idle keep-alive connection outlives stop() and
    # a streamed body simply ends when the connection closes.
    protocol_version = "HTTP/1.0"
    server_version = "FakeOpenAI/1.0"
    timeout = 60  # a client that connects and never sends its request is dropped

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        try:
            length = self.headers.get("Content-Length") or "0"
            if not length.isdigit():
                raise ApiError(400, "Invalid Content-Length header.")
            raw = self.rfile.read(int(length))
            if path.startswith("/_control/"):
                self._control(path, raw)
            else:
                self._v1(path, raw)
        except ApiError as error:
            self._send(error.status, error.body, error.headers)

    def _v1(self, path: str, raw: bytes) -> None:
        provider, body = self.server.provider, _loads(raw)
        headers = {name.lower(): value for name, value in self.headers.items()}
        provider.requests.append(RecordedRequest(path, body, headers))
        key = provider.api_key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        if (self.command, path) == ("GET", "/v1/models"):
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in MODELS
            ]
            self._send(200, {"object": "list", "data": data})
        elif (self.command, path) == ("POST", "/v1/chat/completions"):
            self._chat(body)
        elif (self.command, path) == ("POST", "/v1/embeddings"):
            self._embeddings(body)
        elif (self.command, path) == ("POST", "/v1/moderations"):
            self._moderations(body)
        else:
            raise ApiError(404, f"Unknown request URL: {self.command} {path}.", code="unknown_url")

    def _chat(self, body: Any) -> None:
        provider = self.server.provider
        if body is None:
            raise ApiError(400, "We could not parse the JSON body of your request.")
        request = parse_chat_request(body)
        queued = provider.faults.pop(request.model)
        try:
            named = fault_for_model(request.model)
        except ValueError:
            message = f"The model `{request.model}` does not exist or you do not have access to it."
            raise ApiError(404, message, code="model_not_found") from None
        # A queued fault wins over the model's own: "the next two calls to echo-1 fail".
        injected = queued or named
        fault = injected.fault if injected else None
        if fault is Fault.RATE_LIMIT:
            headers = {"Retry-After": "1"}
            # The openai client prefers retry-after-ms: a short one keeps retry tests fast.
            if provider.retry_after_ms is not None:
                headers["retry-after-ms"] = str(provider.retry_after_ms)
            message = "Rate limit reached for requests (injected by the fake provider)."
            raise ApiError(
                429, message, kind="requests", code="rate_limit_exceeded", headers=headers
            )
        if fault is Fault.SERVER_ERROR:
            message = "The server had an error while processing your request. Sorry about that!"
            raise ApiError(500, message, kind="server_error")
        if injected is not None and fault in (Fault.HANG, Fault.SLOW):
            delay = provider.hang_seconds if fault is Fault.HANG else injected.delay
            if self.server.stopping.wait(delay) or fault is Fault.HANG:
                return  # no answer at all: the client's timeout is what is under test
        completion = complete(
            request, break_json=fault is Fault.BAD_JSON, break_tool=fault is Fault.BAD_TOOL
        )
        request_id = {"x-request-id": f"req_{request.digest}"}
        if request.stream:
            self._send_stream(request, completion, injected)
        elif injected is not None and fault in BROKEN:
            self._send_broken(request, completion, injected)
        elif fault is Fault.MALFORMED:
            payload = json.dumps(completion_body(request, completion)).encode()
            self._send(200, payload[: len(payload) // 2], request_id)  # cut short, as by a proxy
        else:
            self._send(200, completion_body(request, completion), request_id)

    def _embeddings(self, body: Any) -> None:
        if body is None:
            raise ApiError(400, "We could not parse the JSON body of your request.")
        answer = embeddings_body(body)  # checks the model is named before a fault is looked up
        if self._answers(body["model"]):
            self._send(200, answer)

    def _moderations(self, body: Any) -> None:
        if body is None:
            raise ApiError(400, "We could not parse the JSON body of your request.")
        answer = moderations_body(body)  # checks the request before a fault is looked up
        if self._answers(answer["model"]):
            self._send(200, answer)

    def _answers(self, model: str) -> bool:
        """For the endpoints other than chat: faults as for chat, from the queue or the model's
        name. ``500`` (and ``fault-500``) fail, ``hang`` and ``slow-<ms>`` delay (False: no
        answer at all, the client's timeout is what is under test); any other fault answers
        normally."""
        provider = self.server.provider
        try:
            named = fault_for_model(model)
        except ValueError:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise ApiError(404, message, code="model_not_found") from None
        injected = provider.faults.pop(model) or named
        fault = injected.fault if injected else None
        if fault is Fault.SERVER_ERROR:
            raise ApiError(500, "The server had an error while processing your request.")
        if injected is not None and fault in (Fault.HANG, Fault.SLOW):
            delay = provider.hang_seconds if fault is Fault.HANG else injected.delay
            if self.server.stopping.wait(delay) or fault is Fault.HANG:
                return False
        return True

    def _control(self, path: str, raw: bytes) -> None:
        """Plumbing for tests in other processes: neither recorded nor authenticated."""
        provider = self.server.provider
        if (self.command, path) == ("POST", "/_control/faults"):
            body = _loads(raw)
            try:
                model, fault, count = body["model"], body["fault"], int(body.get("count", 1))
                provider.faults.push(str(model), str(fault), count=count)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise ApiError(400, f"Expected {{model, fault, count}}: {exc}") from exc
            self._send(200, {"model": model, "fault": fault, "count": count})
        elif (self.command, path) == ("POST", "/_control/reset"):
            provider.reset()
            self._send(200, {"reset": True})
        else:
            raise ApiError(404, f"Unknown control URL: {self.command} {path}.", code="unknown_url")

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _wire(self, *, chunked: bool = False) -> Wire:
        return Wire(self.connection, self.wfile, self.server.stopping, chunked=chunked)

    def _send_stream(
        self, request: ChatRequest, completion: Completion, injected: Injected | None
    ) -> None:
        fault = injected.fault if injected else None
        chunked = fault is Fault.DROP  # a dropped *chunked* body is what the client can tell
        if chunked:
            # HTTP/1.1 for this answer alone (chunked bodies need it), and no keep-alive after it.
            self.protocol_version, self.close_connection = "HTTP/1.1", True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("x-request-id", f"req_{request.digest}")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
        self.end_headers()
        record = stream_body(
            self._wire(chunked=chunked),
            request,
            completion,
            fault=fault if fault in BROKEN else None,
            delay=injected.delay if injected else 0.0,
            hang_seconds=self.server.provider.hang_seconds,
            malformed=fault is Fault.MALFORMED,
        )
        self.server.provider.stream_ended(record)

    def _send_broken(
        self, request: ChatRequest, completion: Completion, injected: Injected
    ) -> None:
        """A non-streamed answer broken on the wire (see runs.fake_faults)."""
        wire, fault = self._wire(), injected.fault
        if fault is Fault.RESET:  # no answer at all: the connection is reset
            wire.reset()
            return
        body, length = broken_body(request, completion, fault)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if fault is Fault.TRICKLE:
            trickled(wire, body, injected.delay)
            return
        wire.write(body)
        if fault is Fault.STALL:  # the rest of the announced body never comes
            wire.pause(self.server.provider.hang_seconds)


class FakeProvider:
    """Start, use and stop the fake: ``with FakeProvider() as fake: OpenAI(base_url=fake.base_url)``.

    It binds 127.0.0.1 only, on an ephemeral port unless told otherwise, and serves from a daemon
    thread. ``faults`` and ``requests`` live on the provider, so they survive a restart.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        api_key: str | None = None,  # when set, requests need "Authorization: Bearer <api_key>"
        retry_after_ms: int | None = None,  # when set, a 429 also sends retry-after-ms
        hang_seconds: float = HANG_SECONDS,
    ) -> None:
        self.api_key, self.retry_after_ms, self.hang_seconds = api_key, retry_after_ms, hang_seconds
        self.faults = FaultQueue()
        self.requests = RequestLog()
        # How each streamed answer went, logged by handler threads once they are done with it.
        self.streams: list[StreamRecord] = []
        self._streamed = threading.Condition()
        self._port = port
        self._server: FakeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the listening socket is bound to."""
        if self._server is None:
            raise RuntimeError("The fake provider is not running: call start() first.")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.address)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FakeProvider:
        if self._server is None:
            self._server = FakeServer(self._port, self)
            # serve_forever checks for shutdown() every poll_interval: 50 ms keeps stop() prompt.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-provider-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """End hung answers, stop accepting, close the socket; idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stopping.set()  # wakes hung and slow answers: they return without answering
        server.shutdown()
        server.server_close()
        thread.join()

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        with self._streamed:
            self.streams.clear()

    def stream_ended(self, record: StreamRecord) -> None:
        with self._streamed:
            self.streams.append(record)
            self._streamed.notify_all()

    def wait_for_streams(self, count: int, timeout: float = 5.0) -> list[StreamRecord]:
        """The streams logged once ``count`` have ended (or ``timeout`` passed): a handler logs
        its stream after the client may already have moved on."""
        with self._streamed:
            self._streamed.wait_for(lambda: len(self.streams) >= count, timeout)
            return list(self.streams)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Stop(Exception):
    """Raised by the signal handler to leave the foreground loop."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT (``make run`` starts it this way)."""
    parser = argparse.ArgumentParser(prog="python -m runs.fake_provider", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer <key>' (default: any)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    provider = FakeProvider(port=args.port, api_key=args.api_key)
    try:
        provider.start()
    except OSError as exc:
        print(f"Fake provider: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # The handlers raise rather than set an Event: Event.set() in a signal handler can deadlock
    # on the lock that Event.wait() holds in the same (main) thread. They are in place before the
    # address is printed: whoever reads it may stop the server at once.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        print(f"Fake OpenAI-compatible provider on {provider.base_url}", flush=True)
        while True:
            time.sleep(3600)
    except _Stop:
        logger.debug("Fake provider: stopping on a signal")
    finally:
        # A second signal during shutdown ends the process the default way.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
