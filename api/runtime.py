"""The runtime path: resolve, render and bundle, as plain Django views over the release cache.

Services call these thousands of times a second, so they skip DRF and Django's default middleware
(``api.middleware.RuntimeMiddleware`` sits first and answers them itself): a bearer key checked
against the in-memory keyring, a lookup in the in-process release cache, the pure resolution,
``json.dumps``. On a warm cache none of it touches the database. The same views are in the
URLconf, so they also work behind any middleware, and ``api.runtime_schema`` describes them in the
OpenAPI schema. ``api.run`` and ``api.stream`` are the runtime path's other views, on the helpers
here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from registry.errors import ProblemsError, RegistryError
from registry.rendering import to_messages
from registry.strictjson import JSONRefused, strict_json_loads
from releases.bucketing import HASH_VERSION
from releases.cache import DATABASE_OUTAGE, DATABASE_UNAVAILABLE, release_cache
from releases.errors import EnvironmentNotFound
from releases.resolution import NotReleased, Resolution, ServedRelease, resolve, version_render

from . import problems
from .authentication import bearer_token
from .keyring import KeyEntry, keyring
from .models import Scope
from .ratelimit import limiter, retry_after
from .resolve_path import query_values, resolution_body, resolution_etag

logger = logging.getLogger(__name__)

KEY = r"(?P<key>[a-z0-9][a-z0-9._-]*)"
ENVIRONMENT = r"(?P<environment>[a-z][a-z0-9-]*)"
# An environment name as ``releases.models.Environment`` allows it (at most 50 characters). Names
# from a query or a body are checked against it before any lookup: a name that cannot exist is the
# caller's mistake (400), and must never reach PostgreSQL, which refuses some strings (a NUL)
# with an error that would otherwise read as the database being down.
ENVIRONMENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,49}")
DEGRADED_HEADER = "X-Registry-Degraded"
UNAVAILABLE = problems.DATABASE_UNAVAILABLE


def _problem(problem: problems.ProblemType, detail: str, request: HttpRequest, **extra: Any):
    response = JsonResponse(
        problems.problem_body(problem, detail, instance=request.path, **extra),
        status=problem.status,
        content_type=problems.CONTENT_TYPE,
    )
    if problem.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def method_not_allowed(request: HttpRequest, allowed: tuple[str, ...]) -> HttpResponse:
    """A 405 problem with the ``Allow`` header RFC 9110 (15.5.6) requires, as DRF's views send."""
    response = _problem(
        problems.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here.", request
    )
    response["Allow"] = ", ".join(allowed)
    return response


class _Refused(Exception):
    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def _authenticate(request: HttpRequest, scope: Scope = Scope.PROMPTS_READ) -> KeyEntry:
    """The bearer key, which must carry ``scope`` and have a token left in that scope's bucket
    (``api.ratelimit``): checked before anything else is read."""
    raw = bearer_token(request.META.get("HTTP_AUTHORIZATION", ""))
    if raw is None:
        raise _Refused(
            _problem(problems.UNAUTHENTICATED, "Send 'Authorization: Bearer <key>'.", request)
        )
    try:
        entry = keyring.authenticate(raw)
    except DATABASE_OUTAGE:
        raise _Refused(_unavailable(request, "this API key")) from None
    if entry is None:
        raise _Refused(
            _problem(problems.UNAUTHENTICATED, "The API key is unknown or revoked.", request)
        )
    if str(scope) not in entry.scopes:
        raise _Refused(
            _problem(
                problems.INSUFFICIENT_SCOPE,
                f"This needs the {scope} scope.",
                request,
                required_scope=str(scope),
            )
        )
    wait = limiter.take(key_id=entry.pk, scope=str(scope))
    if wait > 0:
        response = _problem(
            problems.THROTTLED,
            f"This key has made too many {scope} requests; retry in {retry_after(wait)} s.",
            request,
        )
        response["Retry-After"] = retry_after(wait)
        raise _Refused(response)
    return entry


def _invalid(request: HttpRequest, code: str, detail: str, pointer: str) -> _Refused:
    return _Refused(
        _problem(
            problems.VALIDATION,
            detail,
            request,
            errors=[{"code": code, "detail": detail, "pointer": pointer}],
        )
    )


def _allow_environment(request: HttpRequest, entry: KeyEntry, environment: str) -> None:
    if not environment:
        raise _invalid(request, "required", "Name the environment.", "/environment")
    if not ENVIRONMENT_NAME.fullmatch(environment):
        raise _invalid(
            request,
            "invalid",
            "Not an environment name: up to 50 lowercase letters, digits and '-', "
            "starting with a letter.",
            "/environment",
        )
    if not entry.allows_environment(environment):
        raise _Refused(
            _problem(
                problems.ENVIRONMENT_FORBIDDEN,
                f"The key may not read {environment}.",
                request,
                environment=environment,
            )
        )


def _authorize(request: HttpRequest, environment: str) -> KeyEntry:
    entry = _authenticate(request)
    _allow_environment(request, entry, environment)
    return entry


def _domain_problem(exc: RegistryError, request: HttpRequest) -> HttpResponse:
    problem = problems.problem_for(exc)
    extra = problems.problem_extra(exc)
    if isinstance(exc, ProblemsError):
        extra["errors"] = [p.as_dict() for p in exc.problems]
    return _problem(problem, exc.message, request, **extra)


def _lookup(request: HttpRequest, environment: str, key: str) -> tuple[ServedRelease, str]:
    found = release_cache().lookup(environment, key)
    if found.release is None and found.degraded:
        raise _Refused(_unavailable(request, f"{key} in {environment}"))
    if found.release is None:
        raise _Refused(
            _problem(
                problems.NOT_RELEASED,
                f"{key} has no release in {environment} (or there is no such prompt or "
                "environment).",
                request,
            )
        )
    return found.release, found.degraded


def _unavailable(request: HttpRequest, what: str) -> HttpResponse:
    response = _problem(
        UNAVAILABLE, f"The database is unavailable and {what} is not cached here.", request
    )
    response["Retry-After"] = str(problems.DATABASE_RETRY_AFTER_SECONDS)
    response[DEGRADED_HEADER] = DATABASE_UNAVAILABLE
    return response


def resolution_answer(resolution: Resolution) -> dict[str, Any]:
    release, version, assignment = resolution.release, resolution.version, resolution.assignment
    return {
        "prompt": release.prompt,
        "environment": release.environment,
        "version": version.number,
        "variant": assignment.label,
        "reason": str(assignment.reason),
        "sticky": assignment.sticky,
        "locale": resolution.locale,
        "requested_locale": resolution.requested_locale,
        "sections": version.templates[resolution.locale],
        "variables": list(version.variables),
        "model": version.model,
        "revision": release.revision,
        "content_hash": version.content_hash,
        "shadow": list(resolution.shadow),
        "trace": {
            "bucket": assignment.bucket,
            "salt": resolution.salt,
            "hash_version": HASH_VERSION,
        },
    }


def _json(data: Any, *, status: int = 200, etag: str = "", degraded: str = "") -> HttpResponse:
    return _json_bytes(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(),
        status=status,
        etag=etag,
        degraded=degraded,
    )


def _json_bytes(
    body: bytes, *, status: int = 200, etag: str = "", degraded: str = ""
) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Cache-Control"] = "private, no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    if etag:
        response["ETag"] = etag
    if degraded:
        response[DEGRADED_HEADER] = degraded
    return response


def _not_modified(request: HttpRequest, etag: str) -> HttpResponse | None:
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


def _resolve(
    request: HttpRequest, key: str, environment: str, locale: str | None, subject: str | None
):
    release, degraded = _lookup(request, environment, key)
    try:
        resolution = resolve(release, subject=subject, locale=locale)
    except NotReleased as exc:
        raise _Refused(_problem(problems.NOT_RELEASED, exc.message, request)) from exc
    except RegistryError as exc:
        raise _Refused(_domain_problem(exc, request)) from exc
    return resolution, degraded


def resolve_view(request: HttpRequest, key: str) -> HttpResponse:
    """``GET /api/v1/prompts/{key}/resolve?environment=&locale=&subject=``"""
    if request.method not in {"GET", "HEAD"}:
        return method_not_allowed(request, ("GET", "HEAD"))
    query = query_values(request)  # request.GET, without building a QueryDict
    environment = query.get("environment", "")
    try:
        _authorize(request, environment)
        resolution, degraded = _resolve(
            request,
            key,
            environment,
            query.get("locale") or None,
            query.get("subject") or None,
        )
    except _Refused as refused:
        return refused.response
    # The answer is ``resolution_answer``'s, encoded without building it (api/resolve_path.py).
    etag = resolution_etag(resolution)
    not_modified = _not_modified(request, etag)
    if not_modified is not None:
        return not_modified
    return _json_bytes(resolution_body(resolution), etag=etag, degraded=degraded)


def _body(request: HttpRequest) -> dict[str, Any]:
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip()
    if content_type != "application/json":
        raise _Refused(_problem(problems.UNSUPPORTED_MEDIA, "Send application/json.", request))
    try:
        raw = request.body  # enforces DATA_UPLOAD_MAX_MEMORY_SIZE
    except RequestDataTooBig as exc:
        raise _Refused(
            _problem(
                problems.TOO_LARGE,
                f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                request,
            )
        ) from exc
    try:
        # The same strict parser as the DRF views: a value PostgreSQL cannot store would
        # otherwise reach the model and then fail to be recorded.
        data = strict_json_loads(raw or b"{}")
    except JSONRefused as exc:
        problem = problems.MALFORMED if exc.malformed else problems.VALIDATION
        extra = {"errors": [e.as_dict() for e in exc.errors]} if exc.errors else {}
        raise _Refused(_problem(problem, str(exc), request, **extra)) from exc
    if not isinstance(data, dict):
        raise _Refused(_problem(problems.MALFORMED, "The body must be a JSON object.", request))
    errors = []
    for name in ("environment", "locale", "subject"):
        if data.get(name) is not None and not isinstance(data[name], str):
            errors.append(
                {"code": "invalid", "detail": f"{name} must be a string.", "pointer": f"/{name}"}
            )
    if not isinstance(data.get("variables", {}), dict):
        errors.append(
            {"code": "invalid", "detail": "variables must be an object.", "pointer": "/variables"}
        )
    if errors:
        raise _Refused(
            _problem(
                problems.VALIDATION, "The request has problems; see errors.", request, errors=errors
            )
        )
    return data


@csrf_exempt  # a bearer key, never a cookie, authenticates it (when reached through the URLconf)
def render_view(request: HttpRequest, key: str) -> HttpResponse:
    """``POST /api/v1/prompts/{key}/render`` ``{environment, locale, subject, variables}``"""
    if request.method != "POST":
        return method_not_allowed(request, ("POST",))
    try:
        entry = _authenticate(request)
        data = _body(request)
        environment = data.get("environment") or ""
        _allow_environment(request, entry, environment)
        resolution, degraded = _resolve(
            request, key, environment, data.get("locale") or None, data.get("subject") or None
        )
        rendered = version_render(
            resolution.version, locale=resolution.locale, variables=data.get("variables") or {}
        )
    except _Refused as refused:
        return refused.response
    except RegistryError as exc:
        return _domain_problem(exc, request)
    answer = resolution_answer(resolution)
    answer["rendered"] = rendered.as_dict()
    answer["messages"] = to_messages(rendered)
    return _json(answer, degraded=degraded)


def bundle_view(request: HttpRequest, environment: str) -> HttpResponse:
    """``GET /api/v1/environments/{environment}/bundle``: every release there, for SDKs."""
    if request.method not in {"GET", "HEAD"}:
        return method_not_allowed(request, ("GET", "HEAD"))
    try:
        _authorize(request, environment)
    except _Refused as refused:
        return refused.response
    releases, degraded = release_cache().environment(environment)
    if releases is None and degraded:
        return _unavailable(request, f"the {environment} bundle")
    if releases is None:
        return _domain_problem(
            EnvironmentNotFound(f"There is no environment {environment!r}."), request
        )
    etag = bundle_etag(environment, releases)
    not_modified = _not_modified(request, etag)
    if not_modified is not None:
        return not_modified
    return _json(bundle_body(environment, releases), etag=etag, degraded=degraded)


def bundle_etag(environment: str, releases: dict[str, ServedRelease]) -> str:
    return revisions_etag(environment, {k: r.revision for k, r in releases.items()})


def revisions_etag(environment: str, revisions: Mapping[str, int]) -> str:
    """The bundle's ETag from its releases' revisions alone (the stream's ``hello`` sends it)."""
    basis = ",".join(f"{k}:{revisions[k]}" for k in sorted(revisions))
    return '"' + hashlib.sha256(f"{environment}|{basis}".encode()).hexdigest()[:32] + '"'


def bundle_body(environment: str, releases: dict[str, ServedRelease]) -> dict[str, Any]:
    return {
        "environment": environment,
        "hash_version": HASH_VERSION,
        "releases": {
            key: {
                "prompt": r.prompt,
                "default_locale": r.default_locale,
                "revision": r.revision,
                "state": r.state.as_dict(),
                "versions": {
                    str(n): {
                        "number": v.number,
                        "content_hash": v.content_hash,
                        "variables": list(v.variables),
                        "model": v.model,
                        "templates": v.templates,
                    }
                    for n, v in sorted(r.versions.items())
                },
            }
            for key, r in sorted(releases.items())
        },
    }


# Without Redis (or once it fails mid-stream), how often a stream compares revisions with the
# database: a rollback reaches a streaming SDK within about this long.


STREAM_KEEPALIVE_SECONDS = 15.0  # a comment line in an event stream, so proxies keep it open


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
