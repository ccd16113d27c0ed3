"""What the runtime path's plain Django views share: the key check, the environment check, the
cached release, the body, and the answers (JSON with an ETag, 304, problem documents, server-sent
events).

The views (``api.runtime``: resolve, render, bundle; ``api.run``; ``api.stream``) are declared
with ``runtime_view``, and that is all it takes to be on the fast path: ``api.middleware`` serves
every URL of the URLconf whose view carries it, before the rest of the middleware stack. A view
reads top to bottom and raises what it refuses (a domain error, or ``ProblemException`` for a
refusal with no domain error behind it); ``runtime_view`` answers it through
``api.problems.answer_exception``, the exception handler the DRF views use too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from config.logs import note
from registry.strictjson import strict_json_loads
from releases.cache import DATABASE_OUTAGE, DATABASE_UNAVAILABLE, release_cache
from releases.errors import EnvironmentNotFound
from releases.resolution import NotReleased, ServedRelease
from runs.calls import SUBJECT_MAX_CHARS

from . import problems
from .authentication import bearer_token
from .keyring import KeyEntry, keyring
from .models import Scope
from .problems import ProblemAnswer, ProblemException
from .ratelimit import limiter, retry_after

# An environment name as ``releases.models.Environment`` allows it (at most 50 characters). Names
# from a query or a body are checked against it before any lookup: a name that cannot exist is the
# caller's mistake (400), and must never reach PostgreSQL, which refuses some strings (a NUL)
# with an error that would otherwise read as the database being down.
ENVIRONMENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,49}")
DEGRADED_HEADER = "X-Registry-Degraded"
STREAM_KEEPALIVE_SECONDS = 15.0  # a comment line in an event stream, so proxies keep it open
KEEPALIVE = b": keep-alive\n\n"
logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
# How a refusal is sent: the problem document by default; a door that speaks another protocol
# (api.openai_compat) sends the same refusal in that protocol's error shape.
Refusal = Callable[[ProblemAnswer, HttpRequest], HttpResponse]


def problem_view(*methods: str, refusal: Refusal = problems.problem_json) -> Callable[[View], View]:
    """Declares a plain Django view of the API that answers ``methods``: any other is a 405
    problem with the ``Allow`` header RFC 9110 (15.5.6) requires, as DRF's views send, and an
    exception the view raises is answered as the problem document ``api.problems`` maps it to,
    sent by ``refusal``. The view is CSRF-exempt: a bearer key, never a cookie, authenticates it."""
    allowed = frozenset(methods)
    allow = ", ".join(methods)

    def refuse_method(request: HttpRequest) -> HttpResponse | None:
        if request.method in allowed:
            return None
        detail = f"{request.method} is not allowed here."
        refused = ProblemAnswer(problems.METHOD_NOT_ALLOWED, detail, headers={"Allow": allow})
        return refusal(refused, request)

    def refuse(request: HttpRequest, exc: Exception) -> HttpResponse:
        refused = problems.answer_exception(exc, path=request.path)
        if refused is None:
            raise exc
        return refusal(refused, request)

    def decorate(view: View) -> View:
        if iscoroutinefunction(view):  # the stream's view, on its ASGI path (api.stream)

            @wraps(view)
            async def answer_async(request: HttpRequest, **kwargs: Any) -> HttpResponse:
                if (refused := refuse_method(request)) is not None:
                    return refused
                try:
                    return await view(request, **kwargs)
                except Exception as exc:
                    return refuse(request, exc)

            answer = answer_async
        else:

            @wraps(view)
            def answer(request: HttpRequest, **kwargs: Any) -> HttpResponse:
                if (refused := refuse_method(request)) is not None:
                    return refused
                try:
                    return view(request, **kwargs)
                except Exception as exc:
                    return refuse(request, exc)

        answer.csrf_exempt = True  # what django.views.decorators.csrf.csrf_exempt sets
        return answer

    return decorate


def runtime_view(*methods: str, refusal: Refusal = problems.problem_json) -> Callable[[View], View]:
    """Declares a runtime-path view: a ``problem_view`` that ``api.middleware`` serves first,
    ahead of the middleware stack, under the prefixes its views are mounted at."""
    as_problem_view = problem_view(*methods, refusal=refusal)

    def decorate(view: View) -> View:
        answer = as_problem_view(view)
        answer.runtime_view = True  # what api.middleware looks for in the URLconf
        answer.refusal = refusal  # how api.middleware answers its own refusals (Host, https)
        return answer

    return decorate


def is_runtime_view(view: object) -> bool:
    return getattr(view, "runtime_view", False)


def refusal_of(view: object) -> Refusal:
    """How a runtime view sends its refusals (``runtime_view``'s ``refusal``)."""
    return getattr(view, "refusal", problems.problem_json)


def authenticate(request: HttpRequest, scope: Scope = Scope.PROMPTS_READ) -> KeyEntry:
    """The bearer key, which must carry ``scope`` and have a token left in that scope's bucket
    (``api.ratelimit``): checked before anything else is read."""
    raw = bearer_token(request.META.get("HTTP_AUTHORIZATION", ""))
    if raw is None:
        raise ProblemException(problems.UNAUTHENTICATED, "Send 'Authorization: Bearer <key>'.")
    try:
        entry = keyring.authenticate(raw)
    except DATABASE_OUTAGE as exc:
        raise unavailable("this API key") from exc
    if entry is None:
        raise ProblemException(problems.UNAUTHENTICATED, "The API key is unknown or revoked.")
    note(key_id=entry.pk)
    if str(scope) not in entry.scopes:
        raise ProblemException(
            problems.INSUFFICIENT_SCOPE, f"This needs the {scope} scope.", required_scope=str(scope)
        )
    rate_limit_check(key_id=entry.pk, scope=str(scope))
    return entry


def rate_limit_check(*, key_id: int, scope: str) -> None:
    """Takes a token from the key's bucket for ``scope`` (``api.ratelimit``), or refuses with a
    429 saying when to retry."""
    wait = limiter.take(key_id=key_id, scope=scope)
    if wait > 0:
        raise ProblemException(
            problems.THROTTLED,
            f"This key has made too many {scope} requests; retry in {retry_after(wait)} s.",
            headers={"Retry-After": retry_after(wait)},
        )


def allow_environment(entry: KeyEntry, environment: str) -> None:
    """Refuses a missing or impossible environment name (400) and one the key may not read."""
    if not environment:
        raise invalid("required", "Name the environment.", "/environment")
    if not ENVIRONMENT_NAME.fullmatch(environment):
        raise invalid(
            "invalid",
            "Not an environment name: up to 50 lowercase letters, digits and '-', "
            "starting with a letter.",
            "/environment",
        )
    note(environment=environment)
    if not entry.allows_environment(environment):
        raise ProblemException(
            problems.ENVIRONMENT_FORBIDDEN,
            f"The key may not read {environment}.",
            environment=environment,
        )


def invalid(code: str, detail: str, pointer: str) -> ProblemException:
    """A validation problem about one member of the request."""
    errors = [{"code": code, "detail": detail, "pointer": pointer}]
    return ProblemException(problems.VALIDATION, detail, errors=errors)


def subject_of(value: str | None, pointer: str = "/subject") -> str | None:
    """The subject a request draws its bucket with (None: it names none), at most
    ``SUBJECT_MAX_CHARS``, as the schema publishes and as an event may report it; ``pointer``
    names the member it came from."""
    if value and len(value) > SUBJECT_MAX_CHARS:
        raise invalid(
            "max_length", f"A subject is at most {SUBJECT_MAX_CHARS} characters.", pointer
        )
    return value or None


def unavailable(what: str = "", *, detail: str = "") -> ProblemException:
    """The database is down and this process holds no copy of ``what`` (or ``detail`` says why
    else it is needed): a 503 saying when to retry, marked degraded."""
    return ProblemException(
        problems.DATABASE_UNAVAILABLE,
        detail or f"The database is unavailable and {what} is not cached here.",
        headers={
            "Retry-After": str(problems.DATABASE_RETRY_AFTER_SECONDS),
            DEGRADED_HEADER: DATABASE_UNAVAILABLE,
        },
    )


def cached_release(environment: str, key: str) -> tuple[ServedRelease, str]:
    """The release of ``key`` in ``environment`` from the release cache, and how degraded the
    answer is (``""`` when it is not)."""
    note(prompt=key, environment=environment)
    found = release_cache().lookup(environment, key)
    if found.release is None and found.degraded:
        raise unavailable(f"{key} in {environment}")
    if found.release is None:
        raise NotReleased(
            f"{key} has no release in {environment} (or there is no such prompt or environment)."
        )
    return found.release, found.degraded


def cached_environment(environment: str) -> tuple[dict[str, ServedRelease], str]:
    """Every release in ``environment`` from the release cache, and how degraded the answer is."""
    releases, degraded = release_cache().environment(environment)
    if releases is None and degraded:
        raise unavailable(f"the {environment} bundle")
    if releases is None:
        raise EnvironmentNotFound(f"There is no environment {environment!r}.")
    return releases, degraded


def read_json_object(request: HttpRequest) -> dict[str, Any]:
    """The JSON object a request sends (an empty body: ``{}``). Parsed with the same strict parser
    as the DRF views: a value PostgreSQL cannot store would otherwise reach the model and then
    fail to be recorded. ``request.body`` enforces ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (a 413)."""
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip()
    if content_type != "application/json":
        raise ProblemException(problems.UNSUPPORTED_MEDIA, "Send application/json.")
    data = strict_json_loads(request.body or b"{}")
    if not isinstance(data, dict):
        raise ProblemException(problems.MALFORMED, "The body must be a JSON object.")
    return data


def read_body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object a render or run sends (``read_json_object``), its common members
    type-checked."""
    data = read_json_object(request)
    errors = [
        {"code": "invalid", "detail": f"{name} must be a string.", "pointer": f"/{name}"}
        for name in ("environment", "locale", "subject")
        if data.get(name) is not None and not isinstance(data[name], str)
    ]
    if not isinstance(data.get("variables", {}), dict):
        errors.append(
            {"code": "invalid", "detail": "variables must be an object.", "pointer": "/variables"}
        )
    if errors:
        raise ProblemException(
            problems.VALIDATION, "The request has problems; see errors.", errors=errors
        )
    return data


def json_response(
    data: Any, *, etag: str = "", degraded: str = "", then: Callable[[], None] | None = None
) -> HttpResponse:
    """A 200 with ``data`` as compact JSON, never stored by a shared cache; ``then`` runs once the
    answer is sent (``AnswerThen``)."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return json_bytes_response(body, etag=etag, degraded=degraded, then=then)


class AnswerThen(HttpResponse):
    """An answer with work that waits until it is sent: the WSGI server closes a response after
    writing its last byte (Django's test client does too), and the caller has the answer by then.
    The work runs on the request's thread, in the request's context (its log lines keep the request
    id), before the worker takes another request; it must not raise (it is logged if it does)."""

    def __init__(self, content: bytes, *, then: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._then: Callable[[], None] | None = then
        self._then_context = contextvars.copy_context()

    def close(self) -> None:
        then, self._then = self._then, None
        try:
            if then is not None:
                self._then_context.run(then)
        except Exception:
            logger.exception("The work after an answer failed")
        finally:
            super().close()


def json_bytes_response(
    body: bytes, *, etag: str = "", degraded: str = "", then: Callable[[], None] | None = None
) -> HttpResponse:
    """``json_response`` for a body already encoded (resolve encodes from cached fragments)."""
    response = (
        HttpResponse(body, content_type="application/json")
        if then is None
        else AnswerThen(body, then=then, content_type="application/json")
    )
    response["Cache-Control"] = "private, no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    if etag:
        response["ETag"] = etag
    if degraded:
        response[DEGRADED_HEADER] = degraded
    return response


def not_modified(request: HttpRequest, etag: str) -> HttpResponse | None:
    """A 304 when ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    header = request.META.get("HTTP_IF_NONE_MATCH", "")
    if not header:
        return None
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    if etag not in tags and header.strip() != "*":
        return None
    response = HttpResponse(status=304)
    # A 304 carries the headers the 200 would have (RFC 9110 15.4.5).
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def sse(event: str, data: Any, *, event_id: str = "") -> bytes:
    """One server-sent event: its name, ``data`` as one line of JSON, and an ``id`` if given (what
    a client sends back as ``Last-Event-ID``)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {payload}\n\n".encode()


def event_stream(events: Iterator[bytes] | AsyncIterator[bytes]) -> StreamingHttpResponse:
    """``text/event-stream`` of ``events``, neither cached nor buffered on the way."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the events back
    return response
