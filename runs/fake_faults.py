"""How the fake provider (runs.fake_provider) puts an answer on the wire, whole or broken.

The broken ones are what flaky networks and providers do to a real answer, each reproduced at the
byte level so the registry's real HTTP client meets them as it would in production:

- ``drop``: a chunked stream whose connection closes half-way, without the terminating chunk;
- ``error-event``: half the stream, then ``data: {"error": {…}}`` as OpenAI sends on an overload;
- ``stall``: half the stream (or body), then nothing, the connection left open;
- ``garbage``: half the stream, then a chunk of the wrong shape and a line that is not JSON;
- ``reset``: half the stream, then a TCP reset (no answer at all when not streamed);
- ``trickle-<ms>``: a long answer, one token every <ms> milliseconds.

Every streamed answer is logged as a ``StreamRecord`` (how many events went out, and how it ended),
so a test can tell a client that closed the connection early from a stream that ran to its end.
Standard library only, like the fake itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

from runs.fake_answers import ChatRequest, Completion, completion_body, stream_chunks

# As OpenAI sends it mid-stream when a server fails after the answer started.
ERROR_EVENT = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
# A chunk whose content is a number (valid JSON, not a chunk a client should trust), then a line
# that is not JSON at all (ASCII: the client decodes a whole read at once, so bytes that are not
# UTF-8 would fail the read before the chunk before them is seen).
GARBAGE = (
    b'{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": 42}}]}',
    b"<html>502 Bad Gateway</html>",
)
TRICKLE_EVENTS = 200  # a trickled answer's content events: long enough to outlast any test
POLL_SECONDS = 0.05  # how often a pause looks at the connection and at the server stopping


class Fault(StrEnum):
    """What the fake can do to an answer (``runs.fake_provider`` injects them)."""

    RATE_LIMIT = "429"  # with Retry-After, as OpenAI answers it
    SERVER_ERROR = "500"
    MALFORMED = "malformed"  # a 200 whose body is not JSON (cut in half, as by a proxy)
    BAD_JSON = "badjson"  # a valid completion whose content is not the JSON asked for
    BAD_TOOL = "badtool"  # a tool call to an undeclared tool, its arguments not JSON
    HANG = "hang"  # no answer until the server stops
    SLOW = "slow"  # the normal answer, late
    # Broken on the wire (this module writes them):
    DROP = "drop"
    ERROR_EVENT = "error-event"
    STALL = "stall"
    GARBAGE = "garbage"
    RESET = "reset"
    TRICKLE = "trickle"


# The faults this module writes; the others are answered by the fake's handler.
BROKEN = frozenset(
    {Fault.DROP, Fault.ERROR_EVENT, Fault.STALL, Fault.GARBAGE, Fault.RESET, Fault.TRICKLE}
)


class StreamEnd(StrEnum):
    COMPLETE = "complete"  # every event went out, ``[DONE]`` included
    CUT = "cut"  # the fault ended it on purpose (dropped, reset, error event, garbage)
    CLIENT_CLOSED = "client_closed"  # the client closed the connection before the end
    STOPPED = "stopped"  # the server stopped, or a stall ran its course


@dataclass(frozen=True, slots=True)
class StreamRecord:
    model: str
    fault: Fault | None  # None for a healthy stream
    sent: int  # ``data:`` events written
    total: int  # the events the whole answer has, ``[DONE]`` included
    end: StreamEnd


class Wire:
    """The connection an answer goes out on: writes that report a client gone, pauses that end
    as soon as the client closes or the server stops, a chunked mode, and a reset."""

    def __init__(
        self,
        connection: socket.socket,
        wfile: BinaryIO,
        stopping: threading.Event,
        *,
        chunked: bool = False,
    ) -> None:
        self.connection, self.wfile, self.stopping, self.chunked = (
            connection,
            wfile,
            stopping,
            chunked,
        )

    def write(self, data: bytes) -> bool:
        """Send ``data`` (as one chunk in chunked mode); False when the client is gone."""
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def pause(self, seconds: float) -> StreamEnd | None:
        """Wait ``seconds``; earlier, how the wait ended: the client closed, or the server stops."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if self.stopping.is_set():
                return StreamEnd.STOPPED
            if self._client_closed(min(left, POLL_SECONDS)):
                return StreamEnd.CLIENT_CLOSED
        return None

    def _client_closed(self, timeout: float) -> bool:
        # The request was read whole, so the connection turns readable only when the client
        # closes it (an end of file) or resets it.
        readable, _, _ = select.select([self.connection], [], [], timeout)
        if not readable:
            return False
        try:
            closed = self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        if not closed:  # the client sent more (it should not): wait the slice out
            self.stopping.wait(timeout)
        return closed

    def reset(self) -> None:
        """Close with a TCP reset (RST) instead of an orderly FIN: linger on, for zero seconds."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def stream_body(
    wire: Wire,
    request: ChatRequest,
    completion: Completion,
    *,
    fault: Fault | None,
    delay: float = 0.0,
    hang_seconds: float = 0.0,
    malformed: bool = False,
) -> StreamRecord:
    """Write a streamed answer's events as ``fault`` breaks them; how it went, for the log."""
    chunks = stream_chunks(request, completion)
    if fault == Fault.TRICKLE:
        # The answer's words over and over: role, TRICKLE_EVENTS words, finish reason (and usage).
        words = itertools.islice(itertools.cycle(chunks[1:-2] or chunks[:1]), TRICKLE_EVENTS)
        tail = 2 if request.include_usage else 1
        chunks = [chunks[0], *words, *chunks[-tail:]]
    events = [json.dumps(chunk, ensure_ascii=False).encode() for chunk in chunks]
    total = len(events) + 1  # and [DONE]
    half = max(2, len(events) // 2)
    end: StreamEnd | None = None
    if malformed:  # the first event cut in half, then the end, without [DONE]
        events, end = [events[0][: len(events[0]) // 2]], StreamEnd.CUT
    elif fault in {Fault.DROP, Fault.STALL, Fault.RESET}:
        events = events[:half]
    elif fault == Fault.ERROR_EVENT:
        events = [*events[:half], json.dumps(ERROR_EVENT).encode()]
    elif fault == Fault.GARBAGE:
        events = [*events[:half], *GARBAGE, b"[DONE]"]
    else:
        events = [*events, b"[DONE]"]
    sent = 0
    for event in events:
        if fault == Fault.TRICKLE and sent and (end := wire.pause(delay)):
            break
        if not wire.write(b"data: " + event + b"\n\n"):
            end = StreamEnd.CLIENT_CLOSED
            break
        sent += 1
    if end is None:
        end = _break_off(wire, fault, hang_seconds)
    return StreamRecord(request.model, fault, sent, total, end)


def _break_off(wire: Wire, fault: Fault | None, hang_seconds: float) -> StreamEnd:
    """How the stream ends once its events are out."""
    if fault == Fault.STALL:
        return wire.pause(hang_seconds) or StreamEnd.STOPPED
    if fault == Fault.RESET:
        wire.reset()
        return StreamEnd.CUT
    # drop: the connection closes after this, without the chunked body's terminating chunk.
    if fault in {Fault.DROP, Fault.ERROR_EVENT, Fault.GARBAGE}:
        return StreamEnd.CUT
    if wire.chunked:
        wire.wfile.write(b"0\r\n\r\n")
    return StreamEnd.COMPLETE


def broken_body(request: ChatRequest, completion: Completion, fault: Fault) -> tuple[bytes, int]:
    """A non-streamed answer's body as ``fault`` breaks it, and the Content-Length to announce:
    the whole body's for a drop or a stall (the client waits for the rest), else its own."""
    body = json.dumps(completion_body(request, completion), ensure_ascii=False).encode()
    if fault in {Fault.DROP, Fault.STALL}:
        return body[: len(body) // 2], len(body)
    if fault == Fault.ERROR_EVENT:  # a 200 carrying an error, as some gateways answer
        body = json.dumps(ERROR_EVENT).encode()
    elif fault == Fault.GARBAGE:
        body = b"".join(GARBAGE)
    return body, len(body)


def trickled(wire: Wire, body: bytes, delay: float, pieces: int = 10) -> StreamEnd:
    """A non-streamed body sent in ``pieces`` with ``delay`` between them."""
    size = -(-len(body) // pieces)
    for start in range(0, len(body), size):
        if start and (end := wire.pause(delay)):
            return end
        if not wire.write(body[start : start + size]):
            return StreamEnd.CLIENT_CLOSED
    return StreamEnd.COMPLETE
