"""How many release streams this process holds, in all and per API key (issue 21, item 2).

A stream takes a slot when it is accepted and gives it back when it ends, however it ends (its
client leaving, its maximum life, the server stopping). Beyond ``RELEASE_STREAM_MAX_PER_PROCESS``
a new stream is a 503 ``streams-full`` (another process may have room: a load balancer retries
there); beyond ``RELEASE_STREAM_MAX_PER_KEY`` for its key, a 429 ``too-many-streams`` (one
runaway deployment must not take every slot). Both say ``Retry-After``, drawn at random up to
``RELEASE_STREAM_RETRY_SECONDS``, so refused clients do not come back all at once.

The counts are per process: a deployment of P stream processes holds up to P times each. A lock
guards them because the WSGI path's streams run in threads; the ASGI path takes it for a few
instructions per stream, never across an ``await``.
"""

from __future__ import annotations

import random
import threading

from django.conf import settings

from . import problems
from .problems import ProblemException


def retry_hint_seconds() -> int:
    """A reconnect delay drawn between 1 s and ``RELEASE_STREAM_RETRY_SECONDS``."""
    return random.randint(1, max(1, settings.RELEASE_STREAM_RETRY_SECONDS))


class StreamSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self._per_key: dict[int, int] = {}

    def held_by(self, key_id: int) -> int:
        return self._per_key.get(key_id, 0)

    def take(self, key_id: int) -> Slot:
        """Counts one more stream for ``key_id``, or refuses it with the problem to answer."""
        with self._lock:
            if self.total >= settings.RELEASE_STREAM_MAX_PER_PROCESS:
                refused = (
                    problems.STREAMS_FULL,
                    "This server holds as many release streams as it may",
                )
            elif self._per_key.get(key_id, 0) >= settings.RELEASE_STREAM_MAX_PER_KEY:
                refused = (
                    problems.TOO_MANY_STREAMS,
                    f"This API key holds {settings.RELEASE_STREAM_MAX_PER_KEY} release streams "
                    "on this server already",
                )
            else:
                self.total += 1
                self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
                return Slot(self, key_id)
        problem, detail = refused
        wait = retry_hint_seconds()
        raise ProblemException(
            problem, f"{detail}; retry in {wait} s.", headers={"Retry-After": str(wait)}
        )

    def _give(self, key_id: int) -> None:
        with self._lock:
            self.total -= 1
            left = self._per_key.get(key_id, 0) - 1
            if left > 0:
                self._per_key[key_id] = left
            else:
                self._per_key.pop(key_id, None)

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self._per_key = {}


class Slot:
    """One stream's place, given back once however many ways its end is noticed (the stream's
    own end, the response being closed)."""

    __slots__ = ("_key_id", "_slots")

    def __init__(self, slots: StreamSlots, key_id: int) -> None:
        self._slots: StreamSlots | None = slots
        self._key_id = key_id

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._give(self._key_id)


slots = StreamSlots()
