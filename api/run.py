"""``POST /api/v1/prompts/{key}/run``: resolve, render, call the model, record the call.

A plain view on the runtime path like resolve and render (``api.fastpath``); ``runs.execution``
does the work. With ``stream: true`` the answer is server-sent events.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from config.logs import REQUEST_ID_HEADER
from config.logs import request_id as current_request_id
from releases.cache import DATABASE_OUTAGE
from releases.resolution import resolve
from runs.calls import attempts_as_dicts
from runs.cancel import Cancellation
from runs.execution import (
    CallOutcome,
    PreparedRun,
    failed_outcome,
    run_call,
    run_cost,
    run_prepare,
    run_record,
)
from runs.providers import Outcome
from runs.response_cache import CacheRequest, partition_problem
from runs.streaming import cancel_grace_seconds

from . import problems
from .fastpath import (
    KEEPALIVE,
    STREAM_KEEPALIVE_SECONDS,
    allow_environment,
    authenticate,
    cached_release,
    event_stream,
    invalid,
    json_response,
    read_body,
    runtime_view,
    sse,
    subject_of,
    unavailable,
)
from .models import Scope
from .problems import ProblemAnswer, problem_json
from .runtime import resolution_answer

logger = logging.getLogger(__name__)


@runtime_view("POST")
def run_view(request: HttpRequest, key: str) -> HttpResponse:
    """``POST /api/v1/prompts/{key}/run`` ``{environment, locale, subject, variables, stream,
    cache_partition, cache}``"""
    entry = authenticate(request, Scope.RUNS_EXECUTE)
    data = read_body(request)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("invalid", "stream must be true or false.", "/stream")
    cache = cache_request(data)
    environment = data.get("environment") or ""
    allow_environment(entry, environment)
    release, degraded = cached_release(environment, key)
    subject = subject_of(data.get("subject"))
    resolution = resolve(release, subject=subject, locale=data.get("locale") or None)
    try:
        prepared = run_prepare(
            resolution=resolution,
            variables=data.get("variables") or {},
            degraded=degraded,
            key_id=entry.pk,
            key_label=entry.name,
            cache=cache,
        )
    except DATABASE_OUTAGE as exc:  # no model is paid for a call that could not be recorded
        raise unavailable(
            detail="The database is unavailable, and a run is recorded: no model was called.",
        ) from exc
    # The caller's X-Request-Id when it is a sane token, else a new one: the id the request's log
    # lines carry (config.logs), so the call record, the answer and the logs join up.
    request_id = current_request_id()
    if stream:
        events = _run_events(prepared, subject=subject, request_id=request_id, path=request.path)
        response: HttpResponse = event_stream(events)
    else:
        outcome = run_call(prepared)
        if outcome.failure is not None or outcome.refused is not None:
            run_record(prepared=prepared, outcome=outcome, subject=subject, request_id=request_id)
            response = problem_json(run_problem(outcome, request_id=request_id), request)
        else:
            # The answer first, its record as soon as it is sent (decision 0041): the caller does
            # not wait for the record's round trip and commit. A record the database cannot take
            # then is kept in Redis (runs.spool), and run_prepare asks the database first while
            # one could not be kept, or the last was not written (decision 0046).
            answer = run_answer(
                prepared,
                outcome,
                request_id=request_id,
                recorded=True,
                shadows=prepared.resolution.shadow,
            )
            response = json_response(
                answer,
                degraded=degraded,
                then=lambda: _record_after_answer(prepared, outcome, subject, request_id),
            )
    response[REQUEST_ID_HEADER] = request_id
    return response


def cache_request(data: dict[str, Any]) -> CacheRequest:
    """The caller's use of the response cache: ``cache_partition`` (text, at most 128 characters,
    so one tenant never reads another's answers) and ``cache`` (false: bypass it). Refused before
    anything is resolved, called or recorded."""
    partition = data.get("cache_partition")
    if (problem := partition_problem(partition)) is not None:
        raise invalid(*problem, "/cache_partition")
    enabled = data.get("cache", True)
    if not isinstance(enabled, bool):
        raise invalid("invalid", "cache must be true or false.", "/cache")
    return CacheRequest(partition=partition or "", enabled=enabled)


def _record_after_answer(
    prepared: PreparedRun, outcome: CallOutcome, subject: str | None, request_id: str
) -> None:
    run_record(prepared=prepared, outcome=outcome, subject=subject, request_id=request_id)


def run_problem(outcome: CallOutcome, *, request_id: str) -> ProblemAnswer:
    """A run that gives no answer: a guardrail refused it (422 naming the check), or every model
    the binding names failed (502 listing the attempts)."""
    if outcome.refused is not None:
        return guardrail_problem(outcome, request_id=request_id)
    return provider_problem(outcome, request_id=request_id)


def guardrail_problem(outcome: CallOutcome, *, request_id: str) -> ProblemAnswer:
    """A guardrail refused the run: the check that did, and every check that fired."""
    refused = outcome.refused
    assert refused is not None
    where = (
        "before the model was called" if refused.stage == "input" else "after the model answered"
    )
    return ProblemAnswer(
        problems.GUARDRAIL_REFUSED,
        f"The {refused.stage} guardrail {refused.check} ({refused.source}'s policy) refused "
        f"this run {where}: {refused.detail}.",
        {
            "request_id": request_id,
            "check": refused.check,
            "stage": refused.stage,
            "guardrails": [t.as_dict() for t in outcome.guardrails],
        },
    )


def provider_problem(outcome: CallOutcome, *, request_id: str) -> ProblemAnswer:
    """Every model the binding names failed: a 502 listing the attempts."""
    assert outcome.failure is not None
    return ProblemAnswer(
        problems.PROVIDER_UNAVAILABLE,
        str(outcome.failure),
        {"request_id": request_id, "attempts": attempts_as_dicts(outcome.attempts)},
    )


def run_answer(
    prepared: PreparedRun,
    outcome: CallOutcome,
    *,
    request_id: str,
    recorded: bool,
    shadows: tuple[int, ...],
) -> dict[str, Any]:
    """The answer of a run that a model answered; ``recorded``: its record is written, or will be
    (kept in Redis if the database cannot take it at once), as the run schema says."""
    completion = outcome.completion
    assert completion is not None
    resolution = prepared.resolution
    resolved = resolution_answer(resolution)
    primary = (prepared.binding.provider, prepared.binding.model)
    return {
        "request_id": request_id,
        **{
            name: resolved[name]
            for name in (
                "prompt",
                "environment",
                "version",
                "variant",
                "reason",
                "sticky",
                "locale",
                "requested_locale",
                "revision",
                "content_hash",
                "trace",
            )
        },
        "output": completion.text,
        "parsed": completion.parsed,
        # Each ``{id, name, arguments}`` (a JSON object): the caller runs the tools, then asks again.
        "tool_calls": [dict(call) for call in completion.tool_calls],
        "answered_by": {
            "provider": completion.provider,
            "model": completion.model,
            "fallback": (completion.provider, completion.model) != primary,
        },
        "usage": {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
        },
        "cost": float(cost) if (cost := run_cost(prepared, outcome)) is not None else None,
        "latency_ms": round(outcome.latency_ms, 1),
        "time_to_first_token_ms": (
            round(completion.time_to_first_token_ms, 1)
            if completion.time_to_first_token_ms is not None
            else None
        ),
        "attempts": attempts_as_dicts(completion.attempts),
        "shadow": list(shadows),
        "recorded": recorded,
        # How the response cache answered (no model was called), or null: the model did.
        "cache": outcome.cache.as_dict() if outcome.cache is not None else None,
        # The guardrail checks that fired (a redaction, a flag, the fallback given instead).
        "guardrails": [t.as_dict() for t in outcome.guardrails],
    }


def _run_events(
    prepared: PreparedRun, *, subject: str | None, request_id: str, path: str
) -> Iterator[bytes]:
    """Server-sent events: ``start`` (what was resolved), ``token`` per content delta,
    ``tool_call`` per tool-call delta (``{index, id, name, arguments}``: the id and name on a
    call's first delta, then pieces of its arguments' JSON text), then ``done`` (the whole answer,
    as the non-streaming call gives it, its ``tool_calls`` checked and parsed) or ``error`` (the
    502 problem document).

    The model call runs in a thread that only does network I/O; this generator, on the request's
    thread, records the call, even when the client went away before the end. Nothing here waits
    without a bound:

    1. the thread always ends with an ``("end", outcome)`` marker, whatever the call raised;
    2. every wait for the thread has a timeout (a keep-alive comment while tokens are slow);
    3. past ``RUN_STREAM_MAX_SECONDS`` the call is cancelled and answered as an ``error`` event;
    4. a client that leaves (the server closes this generator) cancels the call instead of
       waiting for the model to finish; the call is recorded either way.
    """
    tokens: queue.Queue[tuple[str, Any]] = queue.Queue()
    cancel = Cancellation()
    started_at, started = timezone.now(), time.monotonic()
    thread = threading.Thread(
        # In a copy of the request's context: the call's log lines carry its request id.
        target=contextvars.copy_context().run,
        args=(_call_streamed, prepared, tokens, cancel),
        name=f"run-{request_id}",
        daemon=True,
    )
    max_seconds = settings.RUN_STREAM_MAX_SECONDS
    deadline = started + max_seconds
    resolved = resolution_answer(prepared.resolution)
    outcome: CallOutcome | None = None
    thread.start()
    try:
        yield sse(
            "start",
            {
                "request_id": request_id,
                **{
                    k: resolved[k]
                    for k in ("prompt", "environment", "version", "variant", "locale", "revision")
                },
            },
        )
        while outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                cancel.cancel(f"The stream reached its maximum duration ({max_seconds} s).")
                outcome = _call_end(
                    prepared, tokens, started_at=started_at, started=started, client_left=False
                )
                break
            try:
                kind, value = tokens.get(timeout=min(STREAM_KEEPALIVE_SECONDS, remaining))
            except queue.Empty:
                yield KEEPALIVE
                continue
            if kind == "token":
                yield sse("token", {"text": value})
            elif kind == "tool_call":
                yield sse("tool_call", value)
            else:
                outcome = _ended(prepared, value, started_at=started_at, started=started)
        recorded = run_record(
            prepared=prepared, outcome=outcome, subject=subject, request_id=request_id
        )
        if outcome.failure is not None or outcome.refused is not None:
            yield sse("error", run_problem(outcome, request_id=request_id).body(path))
        else:
            yield sse(
                "done",
                run_answer(
                    prepared,
                    outcome,
                    request_id=request_id,
                    recorded=recorded.kept,
                    shadows=recorded.shadows,
                ),
            )
    finally:
        if outcome is None:
            # The client left mid-stream: stop the model (it would go on answering, and billing,
            # for no one), then record what the call cost up to there.
            cancel.cancel("The client left before the end of the stream.")
            outcome = _call_end(
                prepared, tokens, started_at=started_at, started=started, client_left=True
            )
            run_record(prepared=prepared, outcome=outcome, subject=subject, request_id=request_id)
            logger.info("Run %s: the client left before the end of the stream", request_id)


def _call_streamed(
    prepared: PreparedRun, tokens: queue.Queue[tuple[str, Any]], cancel: Cancellation
) -> None:
    """The streamed run's thread: the model call, then the end marker, whatever happened (None
    for an outcome when the call itself was torn down)."""
    outcome: CallOutcome | None = None
    try:
        outcome = run_call(
            prepared,
            on_token=lambda t: tokens.put(("token", t)),
            cancel=cancel,
            on_tool_call=lambda delta: tokens.put(("tool_call", delta)),
        )
    except Exception:  # run_call answers every failure as an outcome: this would be a bug in it
        logger.exception("The model call of a streamed run crashed")
    finally:
        tokens.put(("end", outcome))


def _call_end(
    prepared: PreparedRun,
    tokens: queue.Queue[tuple[str, Any]],
    *,
    started_at: datetime,
    started: float,
    client_left: bool,
) -> CallOutcome:
    """The cancelled call's outcome, from its thread within the grace period
    (``cancel_grace_seconds``), else what is known."""
    grace = cancel_grace_seconds(prepared, client_left=client_left)
    until = time.monotonic() + grace
    while (remaining := until - time.monotonic()) > 0:
        try:
            kind, value = tokens.get(timeout=remaining)
        except queue.Empty:
            break
        if kind == "end":
            return _ended(prepared, value, started_at=started_at, started=started)
    logger.warning("A cancelled model call did not end within %.1f s", grace)
    detail = f"Cancelled; the call did not stop within {grace:.0f} s."
    return _failed(prepared, Outcome.CANCELLED, detail, started_at=started_at, started=started)


def _ended(
    prepared: PreparedRun, outcome: CallOutcome | None, *, started_at: datetime, started: float
) -> CallOutcome:
    if outcome is not None:
        return outcome
    detail = "The model call stopped without an outcome."
    return _failed(prepared, Outcome.UNEXPECTED, detail, started_at=started_at, started=started)


def _failed(
    prepared: PreparedRun, outcome: Outcome, detail: str, *, started_at: datetime, started: float
) -> CallOutcome:
    latency_ms = (time.monotonic() - started) * 1000
    return failed_outcome(
        prepared, outcome=outcome, detail=detail, started_at=started_at, latency_ms=latency_ms
    )
