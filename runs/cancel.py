"""Stopping a model call from another thread (a streamed run whose client left, or ran too long).

A streamed ``/run`` calls the model in a thread of its own while the request's thread relays the
tokens. When the request's thread gives up on the call, it cancels it here: the call's thread sees
the flag between chunks and before any retry or fallback, and the answer being read is cut at the
socket at once, so a thread blocked in a read wakes up instead of waiting for the model to finish
(or for the read timeout). The provider sees its connection closed, which is what stops its work
(and its billing) on an OpenAI-compatible server.

Before the answer's headers arrive there is no socket to cut: the provider's own timeout bounds
that wait, and the flag stops the walk right after it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class Cancellation:
    """One model call's stop flag, with the answer (an ``httpx.Response``) being read, if any."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()  # the reason and the watched answer change together
        self._response: Any = None
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> None:
        """Stop the call (idempotent: the first reason stays) and cut the answer being read."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            response = self._response
        if response is not None:
            _cut(response)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (a retry's backoff); True, at once, when cancelled meanwhile."""
        return self._event.wait(seconds)

    @contextlib.contextmanager
    def watching(self, response: Any) -> Iterator[None]:
        """While the block reads ``response``, ``cancel()`` cuts it; cut at once when the call was
        cancelled before the answer arrived."""
        with self._lock:
            self._response = response
            cancelled = self._event.is_set()
        if cancelled:
            _cut(response)
        try:
            yield
        finally:
            with self._lock:
                self._response = None


def _cut(response: Any) -> None:
    """Shut the answer's socket down for both directions.

    ``shutdown`` and not ``close``: closing a socket does not wake a thread blocked in ``recv`` on
    it (the kernel holds the file open until that call returns), shutting it down does, with an
    end of file. The base class's method, so that an ``ssl.SSLSocket`` keeps its TLS object for
    the reading thread (its own ``shutdown`` drops it under that thread's feet). The reading thread
    closes the connection itself when it sees the end of file.
    """
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        # Not an HTTP/1.1 socket we can reach (HTTP/2, a test transport): the flag, checked
        # between chunks, and the read timeout stop the call instead.
        logger.debug("Cancellation: no socket to cut; the call stops at its next chunk")
        return
    with contextlib.suppress(OSError):  # already closed by the peer or the reading thread
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
