"""A model call streamed to a page or a client: ``run_call`` in a thread, its tokens relayed as
they come.

What the playground's event stream (``evaluations.admin.playground``) and the OpenAI-compatible
endpoints' streams (``api.openai_compat``) are built on. The same rules as the run API's stream
(``api/run.py``), which keeps its own copy for now (the tools branch is changing it; decision 0036
says when they meet):

1. the call's thread only does network I/O (``run_call``) and always ends with an ``end`` marker;
2. every wait has a timeout: a ``keepalive`` item while tokens are slow, and past ``max_seconds``
   the call is cancelled and answered as the outcome it had (``cancelled``);
3. ``on_end`` gets the outcome exactly once, on the request's thread (it records the call): after
   the last token, or when the consumer closes the generator early (the page was left, the
   client went away), after cancelling the call, so a paid call is recorded either way.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.utils import timezone

from .cancel import Cancellation
from .execution import CallOutcome, PreparedRun, failed_outcome, run_call
from .providers import Outcome

logger = logging.getLogger(__name__)

# After cancelling, how much longer than its slowest provider's timeout to wait for the call's
# own outcome before recording what is known without it.
CANCEL_GRACE_SECONDS = 2.0


def cancel_grace_seconds(prepared: PreparedRun, *, client_left: bool) -> float:
    """How long to wait for a cancelled call's own outcome (its attempts, the tokens of what was
    answered) before recording what is known without it: its slowest provider's timeout and
    ``CANCEL_GRACE_SECONDS`` (cancelling cuts the socket being read, so the wait is normally nil;
    only a call still waiting for the answer's headers takes the timeout). When the client left,
    also its moderation's time: an answer held for the checks was answered and paid, only the
    checks still run, and nobody waits; never longer than ``RUN_STREAM_MAX_SECONDS``, the most a
    stream may last (a classifier with many slow fallbacks would otherwise hold the request's
    thread for as long as all of them may take). At the stream's maximum duration the client is
    still there, owed its end without that wait."""
    slowest = max((p.timeout_seconds for p in prepared.providers.values()), default=0.0)
    grace = slowest + CANCEL_GRACE_SECONDS
    if client_left and prepared.moderate is not None:
        grace += min(prepared.moderate.seconds, settings.RUN_STREAM_MAX_SECONDS)
    return grace


def call_streamed[T](
    prepared: PreparedRun,
    *,
    on_end: Callable[[CallOutcome], T],
    max_seconds: float,
    keepalive_seconds: float,
) -> Iterator[tuple[str, Any]]:
    """Yields ``("token", text)`` per content delta, ``("tool_call", delta)`` per tool-call
    delta (``{index, id, name, arguments}``, as the run API streams them), ``("keepalive",
    None)`` after ``keepalive_seconds`` without either, and last ``("end", on_end(outcome))``."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue()
    cancel = Cancellation()
    started_at, started = timezone.now(), time.monotonic()

    def call() -> None:
        outcome: CallOutcome | None = None
        try:
            outcome = run_call(
                prepared,
                on_token=lambda t: items.put(("token", t)),
                cancel=cancel,
                on_tool_call=lambda delta: items.put(("tool_call", delta)),
            )
        except Exception:  # run_call answers every failure as an outcome: a bug in it
            logger.exception("The model call of a streamed run crashed")
        finally:
            items.put(("end", outcome))

    def ended(value: CallOutcome | None, outcome: Outcome, detail: str) -> CallOutcome:
        if value is not None:
            return value
        latency_ms = (time.monotonic() - started) * 1000
        return failed_outcome(
            prepared, outcome=outcome, detail=detail, started_at=started_at, latency_ms=latency_ms
        )

    def stop(reason: str, *, client_left: bool) -> CallOutcome:
        cancel.cancel(reason)
        until = time.monotonic() + cancel_grace_seconds(prepared, client_left=client_left)
        while (remaining := until - time.monotonic()) > 0:
            try:
                kind, value = items.get(timeout=remaining)
            except queue.Empty:
                break
            if kind == "end":
                return ended(value, Outcome.UNEXPECTED, "The call stopped without an outcome.")
        return ended(None, Outcome.CANCELLED, "Cancelled; the call did not stop in time.")

    # In a copy of the request's context: the call's log lines carry the request's id.
    runner = contextvars.copy_context().run
    threading.Thread(target=runner, args=(call,), name="streamed-run", daemon=True).start()
    deadline = started + max_seconds
    outcome: CallOutcome | None = None
    try:
        while outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = stop(
                    f"The stream reached its maximum duration ({max_seconds:g} s).",
                    client_left=False,
                )
                break
            try:
                kind, value = items.get(timeout=min(keepalive_seconds, remaining))
            except queue.Empty:
                yield "keepalive", None
                continue
            if kind in ("token", "tool_call"):
                yield kind, value
            else:
                outcome = ended(value, Outcome.UNEXPECTED, "The call stopped without an outcome.")
        result = on_end(outcome)
    finally:
        if outcome is None:  # closed early: the page went away mid-stream
            on_end(stop("The client left before the end of the stream.", client_left=True))
    yield "end", result
