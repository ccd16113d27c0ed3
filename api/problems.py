"""RFC 9457 problem documents: the one error vocabulary of the API (STYLE R12).

Every error the API answers is ``application/problem+json`` with a stable ``type``, a ``title`` that
is the same for every instance of that type, a ``detail`` about this one, and for validation an
``errors`` list (``code``, ``detail``, ``pointer`` into the request body, sometimes ``line``).

Types are relative URI references (``/problems/draft-exists``): stable strings for clients to match
on, resolved against the service's own address, where docs/api.md lists them.

Domain errors never know about HTTP; the table below maps each class (by its MRO, so a subclass
inherits its parent's type unless it has its own) to a status and type. ``answer_exception`` is the
one exception handler: the DRF views reach it through ``problem_exception_handler``
(``REST_FRAMEWORK["EXCEPTION_HANDLER"]``), the runtime path's plain views through
``api.fastpath.runtime_view``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import set_rollback

from evaluations.canary import services as canary_analysis
from evaluations.evalruns import services as evaluation_runs
from evaluations.experiments import selectors as evaluation_experiments
from evaluations.gates import services as evaluation_gates
from registry import errors as registry_errors
from registry.strictjson import JSONRefused
from registry.sync import SyncInvalid
from releases import errors as release_errors
from releases.cache import DATABASE_OUTAGE
from releases.resolution import NotReleased
from runs.budgets import BudgetExceeded
from runs.events import EventBatchTooLarge
from runs.services import CallNotFound

from .parsers import JSONBodyRefused, RequestTooLarge

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5  # what the runtime path's 503 says too (api.fastpath)
BEARER_CHALLENGE = 'Bearer realm="api"'

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "/problems/"


@dataclass(frozen=True, slots=True)
class ProblemType:
    status: int
    slug: str
    title: str

    @property
    def uri(self) -> str:
        return TYPE_BASE + self.slug


VALIDATION = ProblemType(400, "validation-error", "The request is not valid.")
MALFORMED = ProblemType(400, "malformed-request", "The request body is not valid JSON.")
BAD_HOST = ProblemType(400, "bad-host", "The Host header names no host this service answers for.")
UNAUTHENTICATED = ProblemType(401, "unauthenticated", "A valid API key is needed.")
FORBIDDEN = ProblemType(403, "forbidden", "This API key may not do that.")
INSUFFICIENT_SCOPE = ProblemType(403, "insufficient-scope", "The API key lacks a scope this needs.")
# SECURE_SSL_REDIRECT is on and a write came over plain http (api/middleware.py says why not 301).
HTTPS_REQUIRED = ProblemType(403, "https-required", "This service answers only over https.")
ENVIRONMENT_FORBIDDEN = ProblemType(
    403, "environment-forbidden", "The API key is limited to other environments."
)
# GET /metrics (api.metrics): the token METRICS_TOKEN names is missing or wrong (401), or the
# scrape comes from outside METRICS_ALLOWED_NETWORKS (403).
METRICS_UNAUTHENTICATED = ProblemType(
    401, "metrics-unauthenticated", "A valid metrics token is needed."
)
METRICS_FORBIDDEN = ProblemType(403, "metrics-forbidden", "Metrics are not served to this address.")
NOT_FOUND = ProblemType(404, "not-found", "Not found.")
METHOD_NOT_ALLOWED = ProblemType(405, "method-not-allowed", "That method is not allowed here.")
NOT_ACCEPTABLE = ProblemType(406, "not-acceptable", "No acceptable representation.")
CONFLICT = ProblemType(409, "conflict", "The request conflicts with the current state.")
TOO_LARGE = ProblemType(413, "request-too-large", "The request body is too large.")
UNSUPPORTED_MEDIA = ProblemType(415, "unsupported-media-type", "Send application/json.")
THROTTLED = ProblemType(429, "throttled", "Too many requests.")
# The release stream's bounds (api.streamlimits): the key holds RELEASE_STREAM_MAX_PER_KEY streams
# on this process already (429), or the process holds RELEASE_STREAM_MAX_PER_PROCESS (503).
TOO_MANY_STREAMS = ProblemType(
    429, "too-many-streams", "This API key holds as many release streams here as it may."
)
STREAMS_FULL = ProblemType(
    503, "streams-full", "This server holds as many release streams as it may."
)
NOT_RELEASED = ProblemType(404, "not-released", "The prompt has no release in that environment.")
# The database is down and this process holds no copy of what was asked for (runtime path), or
# a call that must write (a release change, an event batch) cannot reach it.
DATABASE_UNAVAILABLE = ProblemType(
    503, "database-unavailable", "The registry cannot read its database and holds no copy."
)
# Every model the binding names (primary and fallbacks) failed; the document lists the attempts.
PROVIDER_UNAVAILABLE = ProblemType(
    502, "provider-unavailable", "No model answered: every provider the binding names failed."
)
# A guardrail of the version or of its environment refused the run (runs.guardrails): before
# the model call, or its answer; the document names the check.
GUARDRAIL_REFUSED = ProblemType(422, "guardrail-refused", "A guardrail refused this run.")
SERVER_ERROR = ProblemType(500, "server-error", "The server failed to answer this request.")

# Domain errors, most specific first is not needed: lookup walks each exception's MRO.
DOMAIN_PROBLEMS: dict[type[Exception], ProblemType] = {
    registry_errors.PromptNotFound: ProblemType(404, "prompt-not-found", "No such prompt."),
    registry_errors.VersionNotFound: ProblemType(404, "version-not-found", "No such version."),
    registry_errors.PromptExists: ProblemType(409, "prompt-exists", "The prompt exists already."),
    registry_errors.DraftExists: ProblemType(
        409, "draft-exists", "The prompt has an open draft already."
    ),
    registry_errors.VersionImmutable: ProblemType(
        409, "version-immutable", "A committed version never changes."
    ),
    registry_errors.PromptInvalid: VALIDATION,
    # A conversation sent to the OpenAI-compatible endpoints: its shape, as a history's.
    registry_errors.ConversationInvalid: VALIDATION,
    registry_errors.ContentInvalid: ProblemType(
        400, "invalid-content", "The version's content is not valid."
    ),
    registry_errors.TemplateInvalid: ProblemType(
        400, "invalid-template", "The template is not valid."
    ),
    registry_errors.VariablesInvalid: ProblemType(
        400, "invalid-variables", "The variables do not match the declared ones."
    ),
    registry_errors.RenderFailed: ProblemType(
        400, "render-failed", "The prompt could not be rendered."
    ),
    registry_errors.LocaleInvalid: ProblemType(400, "invalid-locale", "Not a valid BCP 47 tag."),
    registry_errors.LocaleUnavailable: ProblemType(
        400, "locale-unavailable", "No template for that locale or its fallbacks."
    ),
    registry_errors.DraftConflict: ProblemType(
        409, "draft-changed", "The draft changed since it was read."
    ),
    # A prompt file's problems are listed with the file's name (``file``) and line.
    SyncInvalid: ProblemType(400, "invalid-prompt-files", "The prompt files cannot be imported."),
    release_errors.EnvironmentNotFound: ProblemType(
        404, "environment-not-found", "No such environment."
    ),
    release_errors.ReleaseNotFound: ProblemType(404, "release-not-found", "No such release."),
    # A person or key the environment's release rights leave out (releases.rights); the detail
    # says who may, or what is missing.
    release_errors.ReleaseChangeForbidden: ProblemType(
        403, "release-change-forbidden", "You may not change releases in that environment."
    ),
    NotReleased: NOT_RELEASED,
    release_errors.ReleaseConflict: ProblemType(
        409, "stale-revision", "The release changed since it was read."
    ),
    release_errors.ReleaseStateInvalid: ProblemType(
        409, "release-state", "That change does not apply to the release as it is."
    ),
    release_errors.ReleaseInvalid: VALIDATION,
    release_errors.VersionNotReleasable: ProblemType(
        409, "version-not-releasable", "Only a committed version can be released."
    ),
    release_errors.PromotionBlocked: ProblemType(
        409, "promotion-blocked", "The version may not be released here yet."
    ),
    release_errors.NothingToRollBack: ProblemType(
        409, "nothing-to-roll-back", "There is no change left to roll back."
    ),
    # --- scheduled changes (decision 0049) ---
    release_errors.ScheduleExists: ProblemType(
        409, "schedule-exists", "The release has an active schedule already."
    ),
    release_errors.ScheduleNotFound: ProblemType(
        404, "schedule-not-found", "The release has never been scheduled."
    ),
    release_errors.ScheduleRefused: ProblemType(
        409, "schedule-refused", "Something else steers this release; it cannot be scheduled."
    ),
    release_errors.ScheduleEnded: ProblemType(
        409, "schedule-ended", "The release has no active schedule."
    ),
    # --- change requests (decision 0048) ---
    release_errors.ReviewRequired: ProblemType(
        409, "review-required", "This environment requires review: propose the change."
    ),
    release_errors.ReviewNotRequired: ProblemType(
        409, "review-not-required", "This change is not held for review: apply it directly."
    ),
    release_errors.ChangeRequestNotFound: ProblemType(
        404, "change-request-not-found", "No such change request."
    ),
    release_errors.ChangeRequestClosed: ProblemType(
        409, "change-request-state", "The change request does not allow that in its state."
    ),
    release_errors.ReviewForbidden: ProblemType(
        403, "review-forbidden", "You may not do that to this change request."
    ),
    release_errors.OwnChangeRequest: ProblemType(
        403, "own-change-request", "A change request is approved by someone else."
    ),
    release_errors.ChangeRequestOutdated: ProblemType(
        409, "change-request-outdated", "The release changed since the request was proposed."
    ),
    # A count, not a size: the client splits the batch, as it would a body that is too large.
    CallNotFound: ProblemType(404, "call-not-found", "No call with that request id."),
    EventBatchTooLarge: ProblemType(
        413, "too-many-events", "The batch holds more events than one request may."
    ),
    # --- eval runs ---
    evaluation_runs.DatasetNotFound: ProblemType(
        404, "dataset-not-found", "The prompt has no dataset with that name."
    ),
    evaluation_runs.DatasetEmpty: ProblemType(400, "dataset-empty", "The dataset has no cases."),
    evaluation_runs.EvalRunNotFound: ProblemType(404, "eval-run-not-found", "No such eval run."),
    evaluation_runs.EvalRunEnded: ProblemType(409, "eval-run-ended", "The eval run has ended."),
    # --- promotion gates ---
    evaluation_gates.GateNotFound: ProblemType(404, "gate-not-found", "No such promotion gate."),
    evaluation_gates.GateExists: ProblemType(
        409, "gate-exists", "The environment has a gate on that dataset already."
    ),
    evaluation_gates.GateInvalid: VALIDATION,
    # --- canary analysis ---
    canary_analysis.CanaryPolicyInvalid: VALIDATION,
    canary_analysis.CanaryNotRunning: ProblemType(409, "no-canary", "No canary is running."),
    canary_analysis.CanaryAnalysisExists: ProblemType(
        409, "canary-analysis-exists", "The canary is being analysed already."
    ),
    canary_analysis.CanaryAnalysisNotFound: ProblemType(
        404, "canary-analysis-not-found", "The release's canary has never been analysed."
    ),
    canary_analysis.CanaryAnalysisStateInvalid: ProblemType(
        409, "canary-analysis-state", "That does not apply to the analysis as it is."
    ),
    canary_analysis.CanaryScheduled: ProblemType(
        409, "canary-scheduled", "The release follows a schedule; it cannot be analysed too."
    ),
    # A run over a budget of its key, prompt or environment (runs.budgets): no model was called.
    BudgetExceeded: ProblemType(
        429, "budget-exceeded", "A budget of this key, prompt or environment is spent."
    ),
    # --- experiment results ---
    evaluation_experiments.NoExperimentRunning: ProblemType(
        404, "no-experiment", "No experiment is running on this release."
    ),
    evaluation_experiments.ExperimentNotFound: ProblemType(
        404, "experiment-not-found", "The release has no such experiment."
    ),
}

# Every problem type the API answers, by slug: the registry the OpenAPI schema documents, one
# component per type (``api.schema``). A new type goes here (a module constant or a
# ``DOMAIN_PROBLEMS`` entry is picked up) and is documented, or tests/api/test_problem_types.py fails.
PROBLEM_TYPES: dict[str, ProblemType] = {
    problem.slug: problem
    for problem in (
        VALIDATION,
        MALFORMED,
        BAD_HOST,
        UNAUTHENTICATED,
        FORBIDDEN,
        INSUFFICIENT_SCOPE,
        HTTPS_REQUIRED,
        ENVIRONMENT_FORBIDDEN,
        METRICS_UNAUTHENTICATED,
        METRICS_FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        NOT_ACCEPTABLE,
        CONFLICT,
        TOO_LARGE,
        UNSUPPORTED_MEDIA,
        THROTTLED,
        TOO_MANY_STREAMS,
        STREAMS_FULL,
        NOT_RELEASED,
        DATABASE_UNAVAILABLE,
        PROVIDER_UNAVAILABLE,
        GUARDRAIL_REFUSED,
        SERVER_ERROR,
        *DOMAIN_PROBLEMS.values(),
    )
}


# What a client needs to recover, beyond the message: the draft to open, the hash to send again.
DOMAIN_EXTRAS: dict[type[Exception], Any] = {
    registry_errors.DraftExists: lambda e: {"draft_number": e.draft_number},
    registry_errors.DraftConflict: lambda e: {"current_tag": e.current_tag},
    release_errors.ReleaseConflict: lambda e: {"current_revision": e.current_revision},
    release_errors.ReleaseChangeForbidden: lambda e: {"environment": e.environment},
    release_errors.PromotionBlocked: lambda e: {"gate": e.gate, "failed_gates": list(e.failed)},
    release_errors.ReviewRequired: lambda e: {"environment": e.environment},
    release_errors.ChangeRequestOutdated: lambda e: {
        "proposed_revision": e.proposed_revision,
        "current_revision": e.current_revision,
    },
    EventBatchTooLarge: lambda e: {"max_events": e.limit},
    BudgetExceeded: lambda e: {
        "budget": {
            "scope": e.scope,
            "name": e.scope_label,
            "limit": e.limit,
            "value": e.limit_value,
        }
    },
    SyncInvalid: lambda e: {
        "errors": [
            {"file": failure.path.name, **problem.as_dict()}
            for failure in e.failures
            for problem in failure.problems
        ]
    },
}

_DRF_PROBLEMS: dict[type[Exception], ProblemType] = {
    drf.ParseError: MALFORMED,
    drf.NotAuthenticated: UNAUTHENTICATED,
    drf.PermissionDenied: FORBIDDEN,
    drf.AuthenticationFailed: UNAUTHENTICATED,
    drf.NotFound: NOT_FOUND,
    drf.MethodNotAllowed: METHOD_NOT_ALLOWED,
    drf.NotAcceptable: NOT_ACCEPTABLE,
    drf.UnsupportedMediaType: UNSUPPORTED_MEDIA,
    drf.Throttled: THROTTLED,
}


class ProblemException(drf.APIException):
    """Raised by views for a problem with no domain error behind it (a scope, an environment),
    with the headers its answer needs (``Retry-After``, ``Allow``)."""

    def __init__(
        self,
        problem: ProblemType,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.status_code = problem.status
        self.headers = dict(headers or {})
        self.extra = extra


@dataclass(frozen=True, slots=True)
class ProblemAnswer:
    """The problem document that answers an exception, and the headers it needs: what both the
    DRF views (a ``Response``) and the runtime path's plain views (a ``JsonResponse``) send."""

    problem: ProblemType
    detail: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self, instance: str) -> dict[str, Any]:
        return problem_body(self.problem, self.detail, instance=instance, **self.extra)


def problem_body(
    problem: ProblemType, detail: str, *, instance: str = "", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_for(exc: Exception) -> ProblemType:
    """The problem type of a domain error (by its MRO); 409 for one with no entry."""
    return _lookup(exc, DOMAIN_PROBLEMS) or CONFLICT


def problem_extra(exc: Exception) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for cls, extract in DOMAIN_EXTRAS.items():
        if isinstance(exc, cls):
            extra |= extract(exc)
    return extra


def _lookup(exc: Exception, table: dict[type[Exception], ProblemType]) -> ProblemType | None:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return None


def _drf_errors(detail: Any, pointer: str = "") -> list[dict[str, Any]]:
    """Flattens a serializer's nested error dict into ``errors`` entries with JSON pointers."""
    if isinstance(detail, dict):
        out: list[dict[str, Any]] = []
        for name, sub in detail.items():
            # RFC 6901: "~" and "/" in a key (a locale, a parameter name) are escaped.
            token = str(name).replace("~", "~0").replace("/", "~1")
            key = "" if name == "non_field_errors" else f"/{token}"
            out += _drf_errors(sub, pointer + key)
        return out
    if isinstance(detail, list):
        if all(isinstance(d, drf.ErrorDetail | str) for d in detail):
            return [
                {"code": getattr(d, "code", "invalid"), "detail": str(d), "pointer": pointer}
                for d in detail
            ]
        out = []
        for i, sub in enumerate(detail):
            out += _drf_errors(sub, f"{pointer}/{i}")
        return out
    return [{"code": getattr(detail, "code", "invalid"), "detail": str(detail), "pointer": pointer}]


def answer_exception(exc: Exception, *, path: str = "") -> ProblemAnswer | None:
    """The one exception handler of the API, for the DRF views and the runtime path's plain views
    alike (STYLE R12): the problem document that answers ``exc``, or None for an exception that is
    a bug (Django then answers 500, through ``server_error_view``).

    Rolls the request's transaction back (``ATOMIC_REQUESTS``) as DRF's own handler does."""
    set_rollback()
    answer = _answer(exc, path)
    if answer is not None and answer.problem.status == 401:
        # RFC 9110 (11.6.1): a 401 names the scheme that would work.
        answer = replace(answer, headers={"WWW-Authenticate": BEARER_CHALLENGE, **answer.headers})
    return answer


def _answer(exc: Exception, path: str) -> ProblemAnswer | None:
    if isinstance(exc, ProblemException):
        return ProblemAnswer(exc.problem, str(exc.detail), exc.extra, exc.headers)
    if isinstance(exc, registry_errors.RegistryError):
        extra = problem_extra(exc)
        if isinstance(exc, registry_errors.ProblemsError):
            extra["errors"] = [p.as_dict() for p in exc.problems]
        return ProblemAnswer(problem_for(exc), exc.message, extra)
    if isinstance(exc, BudgetExceeded):
        wait = str(max(1, math.ceil(exc.retry_after)))
        return ProblemAnswer(
            problem_for(exc), str(exc), problem_extra(exc), headers={"Retry-After": wait}
        )
    if isinstance(exc, drf.ValidationError):
        errors = _drf_errors(exc.detail)
        return ProblemAnswer(
            VALIDATION, "The request has problems; see errors.", {"errors": errors}
        )
    if isinstance(exc, JSONBodyRefused):
        extra = {"errors": exc.errors} if exc.errors else {}
        return ProblemAnswer(MALFORMED if exc.malformed else VALIDATION, str(exc.detail), extra)
    if isinstance(exc, JSONRefused):  # the runtime path parses its bodies itself
        extra = {"errors": [e.as_dict() for e in exc.errors]} if exc.errors else {}
        return ProblemAnswer(MALFORMED if exc.malformed else VALIDATION, str(exc), extra)
    if isinstance(exc, RequestTooLarge):
        return ProblemAnswer(TOO_LARGE, str(exc.detail))
    if isinstance(exc, RequestDataTooBig):
        # DRF >= 3.16 hands JSON parsers ``request.body``, whose own check raises this first; the
        # runtime path reads ``request.body`` itself.
        detail = f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        return ProblemAnswer(TOO_LARGE, detail)
    if isinstance(exc, Http404):
        return ProblemAnswer(NOT_FOUND, "Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return ProblemAnswer(FORBIDDEN, str(exc) or FORBIDDEN.title)
    if isinstance(exc, DjangoValidationError):
        errors = [{"code": "invalid", "detail": m, "pointer": ""} for m in exc.messages]
        return ProblemAnswer(
            VALIDATION, "The request has problems; see errors.", {"errors": errors}
        )
    if isinstance(exc, DATABASE_OUTAGE):
        # The database cannot be reached (stopped, failing over, refusing connections): nothing
        # was committed and the caller may retry, so a 503 problem saying when, never a 500.
        # Input that PostgreSQL refuses (DataError, IntegrityError) is no outage and is not
        # answered as one.
        logger.warning("Database unavailable: %s %s", type(exc).__name__, path)
        return ProblemAnswer(
            DATABASE_UNAVAILABLE,
            "The database is unavailable; nothing was changed. Try again shortly.",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, drf.APIException):
        problem = _lookup(exc, _DRF_PROBLEMS) or ProblemType(
            exc.status_code, "error", str(exc.default_detail)
        )
        headers = {"Retry-After": str(int(exc.wait))} if getattr(exc, "wait", None) else {}
        return ProblemAnswer(problem, str(exc.detail), headers=headers)
    return None


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """``REST_FRAMEWORK["EXCEPTION_HANDLER"]``: ``answer_exception`` as a DRF ``Response``."""
    request = context.get("request")
    path = request.path if request is not None else ""
    answer = answer_exception(exc, path=path)
    if answer is None:
        return None
    return Response(
        answer.body(path),
        status=answer.problem.status,
        headers=dict(answer.headers),
        content_type=CONTENT_TYPE,
    )


def problem_json(answer: ProblemAnswer, request: HttpRequest) -> JsonResponse:
    """A problem document as a plain Django response: what the runtime path and the 404 and 500
    handlers send."""
    response = JsonResponse(
        answer.body(request.path), status=answer.problem.status, content_type=CONTENT_TYPE
    )
    for name, value in answer.headers.items():
        response[name] = value
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found_view(request: HttpRequest, exception: Exception | None = None):
    """``handler404``: a problem document under /api/, Django's page elsewhere."""
    if _is_api(request):
        return problem_json(ProblemAnswer(NOT_FOUND, "There is nothing at this address."), request)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error_view(request: HttpRequest):
    """``handler500``: never a stack trace; the log has it."""
    if _is_api(request):
        answer = ProblemAnswer(SERVER_ERROR, "An unexpected error occurred; it has been logged.")
        return problem_json(answer, request)
    from django.views.defaults import server_error

    return server_error(request)
