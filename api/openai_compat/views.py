"""The two endpoints: a registry prompt run through OpenAI's chat completions and responses.

Each reads its request (``requests``), then runs the prompt exactly as ``POST
/api/v1/prompts/{key}/run`` does (``api.run``): the key with the ``runs:execute`` scope and its
environments, the cached release, the subject's draw (canary, experiment, shadows) or the pinned
version, ``run_prepare`` (variables, rendering, the conversation, the database's health), the model
call with the binding's retries, timeouts and fallbacks, and the call record, written once the
answer is sent (decision 0041) or, for a stream, before its last event. Nothing is called or
recorded for a refused request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse

from config.logs import REQUEST_ID_HEADER
from config.logs import request_id as current_request_id
from registry.errors import VersionNotFound
from releases.cache import DATABASE_OUTAGE
from releases.resolution import resolve, resolve_pinned
from releases.selectors import release_with_version
from runs.execution import PreparedRun, run_call, run_prepare, run_record
from runs.providers import Completion
from runs.response_cache import CacheRequest

from ..fastpath import (
    allow_environment,
    authenticate,
    cached_release,
    event_stream,
    json_response,
    read_json_object,
    runtime_view,
    unavailable,
)
from ..keyring import KeyEntry
from ..models import Scope
from ..run import run_problem
from .answers import (
    chat_completion,
    registry_headers,
    response_object,
    response_output,
    response_usage,
)
from .errors import openai_error_response, openai_refusal
from .requests import CompatRun, chat_request, responses_request
from .streams import chat_events, response_events


@runtime_view("POST", refusal=openai_refusal())
def chat_completions_view(request: HttpRequest) -> HttpResponse:
    """``POST /{OPENAI_COMPAT_PREFIX}/chat/completions``"""
    entry = authenticate(request, Scope.RUNS_EXECUTE)  # before the body is read, as /run does
    asked = chat_request(read_json_object(request))
    created = int(time.time())

    def streamed(prepared: PreparedRun, request_id: str) -> Iterator[bytes]:
        return chat_events(
            prepared,
            subject=asked.subject,
            request_id=request_id,
            created=created,
            include_usage=asked.include_usage,
            path=request.path,
        )

    def answered(prepared: PreparedRun, completion: Completion, request_id: str) -> dict[str, Any]:
        return chat_completion(completion, request_id=request_id, created=created)

    return _run(request, entry, asked, streamed=streamed, answered=answered)


# A rule of the run path points at the variables where the request sent them.
@runtime_view("POST", refusal=openai_refusal(rebase={"/variables": "/prompt/variables"}))
def responses_view(request: HttpRequest) -> HttpResponse:
    """``POST /{OPENAI_COMPAT_PREFIX}/responses``"""
    entry = authenticate(request, Scope.RUNS_EXECUTE)
    asked = responses_request(read_json_object(request))
    created_at = time.time()

    def streamed(prepared: PreparedRun, request_id: str) -> Iterator[bytes]:
        return response_events(
            prepared, subject=asked.subject, request_id=request_id, created_at=created_at
        )

    def answered(prepared: PreparedRun, completion: Completion, request_id: str) -> dict[str, Any]:
        return response_object(
            prepared,
            request_id=request_id,
            created_at=created_at,
            status="completed",
            model=completion.model,
            output=response_output(completion, request_id=request_id),
            usage=response_usage(completion),
            completed_at=time.time(),
        )

    return _run(request, entry, asked, streamed=streamed, answered=answered)


def _run(
    request: HttpRequest,
    entry: KeyEntry,
    asked: CompatRun,
    *,
    streamed: Callable[[PreparedRun, str], Iterator[bytes]],
    answered: Callable[[PreparedRun, Completion, str], dict[str, Any]],
) -> HttpResponse:
    """What ``api.run.run_view`` does, answered by ``streamed`` or ``answered``."""
    prepared, degraded = _prepared(entry, asked)
    # The caller's X-Request-Id when it is a sane token, else a new one (config.logs): the id of
    # the call record, the log lines, and the answer's id.
    request_id = current_request_id()
    if asked.stream:
        response: HttpResponse = event_stream(streamed(prepared, request_id))
    else:
        outcome = run_call(prepared)
        if outcome.completion is None or outcome.refused is not None:
            run_record(
                prepared=prepared, outcome=outcome, subject=asked.subject, request_id=request_id
            )
            problem = run_problem(outcome, request_id=request_id)
            response = openai_error_response(problem, request)
        else:
            response = json_response(
                answered(prepared, outcome.completion, request_id),
                degraded=degraded,
                then=lambda: run_record(
                    prepared=prepared,
                    outcome=outcome,
                    subject=asked.subject,
                    request_id=request_id,
                ),
            )
    for name, value in registry_headers(prepared.resolution).items():
        response[name] = value
    response[REQUEST_ID_HEADER] = request_id
    return response


def _prepared(entry: KeyEntry, asked: CompatRun) -> tuple[PreparedRun, str]:
    """The run ready for the model, and how degraded the release it read is (``""``: not);
    raises what ``/run`` refuses, and a pinned version the prompt has not committed."""
    allow_environment(entry, asked.environment)
    release, degraded = cached_release(asked.environment, asked.key)
    try:
        if asked.version is None:
            resolution = resolve(release, subject=asked.subject, locale=asked.locale)
        else:
            pinned = release_with_version(release=release, number=asked.version)
            if pinned is None:
                raise VersionNotFound(f"{asked.key} has no committed version {asked.version}.")
            resolution = resolve_pinned(pinned, number=asked.version, locale=asked.locale)
        prepared = run_prepare(
            resolution=resolution,
            variables=asked.variables,
            conversation=asked.conversation,
            degraded=degraded,
            key_id=entry.pk,
            key_label=entry.name,
            # The version's response cache, unpartitioned: these request shapes have no member
            # for a partition (run's cache_partition; decision 0050).
            cache=CacheRequest(),
        )
    except DATABASE_OUTAGE as exc:  # no model is paid for a call that could not be recorded
        raise unavailable(
            detail="The database is unavailable, and a run is recorded: no model was called.",
        ) from exc
    return prepared, degraded
