"""``POST /api/v1/prompts/{key}/run``: resolve, render, call the model, record the call.

A plain view on the runtime path like resolve and render (``api.runtime`` holds their shared
helpers); ``runs.execution`` does the work. With ``stream: true`` the answer is server-sent events.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from registry.errors import RegistryError
from releases.cache import DATABASE_OUTAGE
from runs.execution import (
    CallOutcome,
    PreparedRun,
    attempts_as_dicts,
    run_call,
    run_prepare,
    run_record,
)
from runs.models import Call

from . import problems
from .models import Scope
from .runtime import (
    STREAM_KEEPALIVE_SECONDS,
    _allow_environment,
    _authenticate,
    _body,
    _domain_problem,
    _json,
    _problem,
    _Refused,
    _resolve,
    _sse,
    _unavailable,
    resolution_answer,
)

logger = logging.getLogger(__name__)


REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,100}$")
REQUEST_ID_HEADER = "X-Request-Id"


def _request_id(request: HttpRequest) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token (so logs on both sides join up), else
    a new one."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


@csrf_exempt  # a bearer key, never a cookie, authenticates it (when reached through the URLconf)
def run_view(request: HttpRequest, key: str) -> HttpResponse:
    """``POST /api/v1/prompts/{key}/run`` ``{environment, locale, subject, variables, stream}``"""
    if request.method != "POST":
        return _problem(
            problems.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here.", request
        )
    try:
        entry = _authenticate(request, Scope.RUNS_EXECUTE)
        data = _body(request)
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise _Refused(
                _problem(
                    problems.VALIDATION,
                    "The request has problems; see errors.",
                    request,
                    errors=[
                        {
                            "code": "invalid",
                            "detail": "stream must be true or false.",
                            "pointer": "/stream",
                        }
                    ],
                )
            )
        environment = data.get("environment") or ""
        _allow_environment(request, entry, environment)
        subject = data.get("subject") or None
        resolution, degraded = _resolve(
            request, key, environment, data.get("locale") or None, subject
        )
        prepared = run_prepare(resolution=resolution, variables=data.get("variables") or {})
    except _Refused as refused:
        return refused.response
    except RegistryError as exc:
        return _domain_problem(exc, request)
    except DATABASE_OUTAGE:  # the providers' settings are read from the database for every run
        return _unavailable(request, "the binding's providers")
    request_id = _request_id(request)
    if stream:
        response: HttpResponse = StreamingHttpResponse(
            _run_events(prepared, subject=subject, request_id=request_id, path=request.path),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the tokens back
    else:
        outcome = run_call(prepared)
        call, shadows = run_record(
            prepared=prepared, outcome=outcome, subject=subject, request_id=request_id
        )
        if outcome.failure is not None:
            response = _provider_problem(outcome, request_id=request_id, path=request.path)
        else:
            answer = run_answer(
                prepared, outcome, request_id=request_id, call=call, shadows=shadows
            )
            response = _json(answer, degraded=degraded)
    response[REQUEST_ID_HEADER] = request_id
    return response


def _provider_problem(outcome: CallOutcome, *, request_id: str, path: str) -> JsonResponse:
    assert outcome.failure is not None
    return JsonResponse(
        _provider_problem_body(outcome, request_id=request_id, path=path),
        status=502,
        content_type=problems.CONTENT_TYPE,
    )


def _provider_problem_body(outcome: CallOutcome, *, request_id: str, path: str) -> dict[str, Any]:
    return problems.problem_body(
        problems.PROVIDER_UNAVAILABLE,
        str(outcome.failure),
        instance=path,
        request_id=request_id,
        attempts=attempts_as_dicts(outcome.attempts),
    )


def run_answer(
    prepared: PreparedRun,
    outcome: CallOutcome,
    *,
    request_id: str,
    call: Call | None,
    shadows: tuple[int, ...],
) -> dict[str, Any]:
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
        "answered_by": {
            "provider": completion.provider,
            "model": completion.model,
            "fallback": (completion.provider, completion.model) != primary,
        },
        "usage": {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
        },
        "cost": float(call.cost) if call is not None and call.cost is not None else None,
        "latency_ms": round(outcome.latency_ms, 1),
        "time_to_first_token_ms": (
            round(completion.time_to_first_token_ms, 1)
            if completion.time_to_first_token_ms is not None
            else None
        ),
        "attempts": attempts_as_dicts(completion.attempts),
        "shadow": list(shadows),
        "recorded": call is not None,
    }


def _run_events(
    prepared: PreparedRun, *, subject: str | None, request_id: str, path: str
) -> Iterator[bytes]:
    """Server-sent events: ``start`` (what was resolved), ``token`` per content delta, then ``done``
    (the whole answer, as the non-streaming call gives it) or ``error`` (the 502 problem document).

    The model call runs in a thread that only does network I/O; this generator, on the request's
    thread, records the call, even when the client went away before the end."""
    tokens: queue.Queue[tuple[str, Any]] = queue.Queue()
    thread = threading.Thread(
        target=lambda: tokens.put(
            ("end", run_call(prepared, on_token=lambda t: tokens.put(("token", t))))
        ),
        name=f"run-{request_id}",
        daemon=True,
    )
    resolved = resolution_answer(prepared.resolution)
    outcome: CallOutcome | None = None
    thread.start()
    try:
        yield _sse(
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
            try:
                kind, value = tokens.get(timeout=STREAM_KEEPALIVE_SECONDS)
            except queue.Empty:
                yield b": keep-alive\n\n"
                continue
            if kind == "token":
                yield _sse("token", {"text": value})
            else:
                outcome = value
        call, shadows = run_record(
            prepared=prepared, outcome=outcome, subject=subject, request_id=request_id
        )
        if outcome.failure is not None:
            yield _sse("error", _provider_problem_body(outcome, request_id=request_id, path=path))
        else:
            yield _sse(
                "done",
                run_answer(
                    prepared,
                    outcome,
                    request_id=request_id,
                    call=call,
                    shadows=shadows,
                ),
            )
    finally:
        if outcome is None:
            # The client left mid-stream: the model call still costs, so it is still recorded.
            thread.join()
            while outcome is None:
                kind, value = tokens.get()
                outcome = value if kind == "end" else None
            run_record(prepared=prepared, outcome=outcome, subject=subject, request_id=request_id)
            logger.info("Run %s: the client left before the end of the stream", request_id)
