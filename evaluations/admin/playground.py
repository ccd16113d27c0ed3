"""The playground: a version (committed or a draft) run from the admin, one or two side by side.

- ``/admin/playground/<version id>/``: the page. The variables start from the author's last
  preview of the version (``registry.admin.samples``) or from a dataset case they pick
  (``?case=<id>``); a locale; per column, a version of the prompt, a provider and a model (empty:
  the binding's).
- ``…/run/`` (POST, the form): the run as server-sent events (``start``, ``token``…, then
  ``done`` or ``error``), or a problem document (400, 503) when nothing could be run: every
  problem with the field it is about, so the page puts it in place.
- ``…/case/`` (POST, JSON): an input and its output saved as a case of one of the prompt's
  datasets (``case_add``, the case page's own checks).

An adapter (DESIGN: "new doors are thin"): ``runs.playground`` runs the version on the run path
and records the call with its own source; ``runs.streaming`` relays the tokens. Here only the
forms are read and the answers written. Who may run it: ``runs.run_playground`` (a model call
costs money) and reading versions; saving a case: ``evaluations.add_case``. Decision 0036.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse

from registry.actors import Actor
from registry.admin.forms import pointer_parts
from registry.admin.pages import PreviewForm, field_name, place_variable_problems
from registry.admin.samples import samples_recall
from registry.errors import (
    LocaleInvalid,
    LocaleUnavailable,
    Problem,
    RenderFailed,
    TemplateInvalid,
    VariablesInvalid,
)
from registry.models import PromptVersion
from registry.providers import priced_models
from registry.selectors import version_content, version_list
from registry.strictjson import JSONRefused, strict_json_loads
from registry.variables import VariableSpec, VariableType
from releases.cache import DATABASE_OUTAGE
from runs.calls import attempts_as_dicts
from runs.execution import CallOutcome, PreparedRun
from runs.playground import (
    NoEnvironment,
    PlaygroundInvalid,
    Target,
    playground_answer,
    playground_prepare,
    playground_record,
)
from runs.selectors import enabled_provider_names
from runs.streaming import call_streamed

from ..datasets.selectors import dataset_list, prompt_cases
from ..datasets.services import CaseInvalid, case_add
from ..models import Case, Dataset
from .cases import FROM_CALL_SCORER, FROM_CALL_THRESHOLD, may_read_holdout

TEMPLATE = "admin/evaluations/playground.html"
CASES_LISTED = 200  # the cases offered to start from: the first of each of the prompt's datasets
KEEPALIVE_SECONDS = 15.0
PROBLEM = "application/problem+json"


def may_run(request: HttpRequest) -> bool:
    user = request.user
    return user.has_perm("runs.run_playground") and user.has_perm("registry.view_promptversion")


def _version(request: HttpRequest, version_id: int) -> PromptVersion:
    if not may_run(request):
        raise PermissionDenied
    return get_object_or_404(PromptVersion.objects.select_related("prompt"), pk=version_id)


# --- the page ---------------------------------------------------------------------------------


def _shown(spec: VariableSpec, value: Any) -> Any:
    """A value as the preview form's input for its type shows it."""
    if spec.type is VariableType.BOOLEAN:
        return bool(value)
    if spec.type is VariableType.STRING and isinstance(value, str):
        return value
    if spec.type in (VariableType.LIST, VariableType.OBJECT):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def _readable_cases(request: HttpRequest, version: PromptVersion) -> QuerySet[Case] | None:
    """The prompt's cases this user may read (a holdout only for those who run gates, as on the
    case pages); None when they may read none."""
    if not request.user.has_perm("evaluations.view_case"):
        return None
    return prompt_cases(prompt=version.prompt, include_holdout=may_read_holdout(request))


def _starting_case(request: HttpRequest, version: PromptVersion) -> Case | None:
    """``?case=<id>``: one of the cases the user may read."""
    raw, cases = request.GET.get("case", ""), _readable_cases(request, version)
    return cases.filter(pk=int(raw)).first() if raw.isdigit() and cases is not None else None


def playground_view(request: HttpRequest, version_id: int) -> HttpResponse:
    version = _version(request, version_id)
    prompt = version.prompt
    content = version_content(version)
    case = _starting_case(request, version)
    recalled = samples_recall(request, version_id=version.pk)
    values, locale, start = {}, prompt.default_locale, "the variables' defaults"
    if case is not None:
        values, locale = dict(case.variables), case.locale or prompt.default_locale
        start = f"case {case.key!r} of {case.dataset.name}"
    elif recalled is not None:
        values, locale = recalled[0], recalled[1] or prompt.default_locale
        start = "your last preview"
    form = PreviewForm(None, specs=content.variables, locale=locale)
    for spec in content.variables:
        if spec.name in values:
            form.initial[field_name(spec.name)] = _shown(spec, values[spec.name])
    readable = _readable_cases(request, version)
    base = reverse("admin:playground", args=[version.pk])
    context = {
        **admin.site.each_context(request),
        "title": "Playground",
        "subtitle": str(version),
        "version": version,
        "prompt": prompt,
        "form": form,
        "start": start,
        "case": case,
        "cases": [] if readable is None else list(readable[:CASES_LISTED]),
        "versions": list(version_list(prompt=prompt)),
        "locales": list(content.templates),
        "providers": enabled_provider_names(),
        "models": priced_models(),
        "binding": {"provider": version.provider, "model": version.model_name},
        "datasets": (
            list(dataset_list(prompt=prompt))
            if request.user.has_perm("evaluations.add_case")
            else []
        ),
        "version_url": reverse("admin:registry_promptversion_change", args=[version.pk]),
        "config": {
            "runUrl": base + "run/",
            "caseUrl": base + "case/",
            "callUrl": reverse("admin:runs_call_change", args=[0]),
            "mayReadCalls": request.user.has_perm("runs.view_call"),
            "maxSeconds": settings.RUN_STREAM_MAX_SECONDS,
        },
    }
    return TemplateResponse(request, TEMPLATE, context)


# --- a run ------------------------------------------------------------------------------------


def _problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> JsonResponse:
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    return JsonResponse({**body, **extra}, status=status, content_type=PROBLEM)


def _invalid(detail: str, errors: Sequence[Mapping[str, str]]) -> JsonResponse:
    return _problem(400, "validation-error", "The request is not valid.", detail, errors=errors)


def _form_errors(form: PreviewForm) -> list[dict[str, str]]:
    """The form's errors, each with the input it is about (empty: the form as a whole)."""
    return [
        {"field": "" if name == "__all__" else name, "detail": str(message)}
        for name, messages in form.errors.items()
        for message in messages
    ]


def _problem_errors(problems: Sequence[Problem]) -> list[dict[str, str]]:
    """Problems of the target (provider, model) or of a template, at the input or section."""
    errors = []
    for p in problems:
        parts = pointer_parts(p.pointer)
        where = parts[0] if len(parts) == 1 and parts[0] in ("provider", "model") else ""
        errors.append({"field": where, "detail": p.detail})
    return errors


def run_view(request: HttpRequest, version_id: int) -> HttpResponse:
    """POST the form: one column's run as server-sent events, or what stops it, in place."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    page_version = _version(request, version_id)
    chosen = request.POST.get("version", "")
    version = (
        PromptVersion.objects.select_related("prompt")
        .filter(pk=int(chosen), prompt_id=page_version.prompt_id)
        .first()
        if chosen.isdigit()
        else page_version
    )
    if version is None:
        return _invalid(
            "Pick a version of this prompt.", [{"field": "version", "detail": "Not a version."}]
        )
    content = version_content(version)
    form = PreviewForm(request.POST, specs=content.variables, locale="")
    values = form.values() if form.is_valid() else {}
    if not form.is_valid():  # values() adds an error for JSON that does not parse
        return _invalid("Some values are not valid.", _form_errors(form))
    target = Target(
        version=version,
        provider=request.POST.get("provider", "").strip(),
        model=request.POST.get("model", "").strip(),
    )
    try:
        prepared = playground_prepare(
            target=target, locale=form.cleaned_data["locale"] or None, variables=values
        )
    except (LocaleInvalid, LocaleUnavailable) as exc:
        return _invalid(exc.message, [{"field": "locale", "detail": exc.message}])
    except VariablesInvalid as exc:
        place_variable_problems(form, exc.problems)
        return _invalid(exc.message, _form_errors(form))
    except (PlaygroundInvalid, TemplateInvalid, RenderFailed) as exc:
        return _invalid(exc.message, _problem_errors(exc.problems))
    except NoEnvironment as exc:
        return _invalid(exc.message, [])
    except DATABASE_OUTAGE:
        detail = "The database is unavailable, and a run is recorded: no model was called."
        return _problem(503, "database-unavailable", "The database is unavailable.", detail)
    response = StreamingHttpResponse(
        _events(prepared, version=version, values=values), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the events back
    return response


def _sse(event: str, data: Any) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def _events(
    prepared: PreparedRun, *, version: PromptVersion, values: Mapping[str, Any]
) -> Iterator[bytes]:
    """``start`` (what runs), ``token`` per delta, then ``done`` (the answer) or ``error`` (a
    502 problem naming every attempt). The call is recorded when it ends, or when the page is
    left before (``call_streamed``)."""
    request_id = uuid.uuid4().hex
    binding = prepared.binding

    def record(outcome: CallOutcome) -> tuple[str, dict[str, Any]]:
        recorded = playground_record(prepared=prepared, outcome=outcome, request_id=request_id)
        call = recorded.call
        if outcome.refused is not None:
            refused = outcome.refused
            return "error", {
                "type": "/problems/guardrail-refused",
                "title": "A guardrail refused this run.",
                "status": 422,
                "detail": f"The {refused.stage} guardrail {refused.check} ({refused.source}'s "
                f"policy) refused this run: {refused.detail}.",
                "guardrails": [t.as_dict() for t in outcome.guardrails],
                "call": call.pk if call is not None else None,
            }
        if outcome.failure is not None:
            return "error", {
                "type": "/problems/provider-unavailable",
                "title": "No model answered.",
                "status": 502,
                "detail": str(outcome.failure),
                "attempts": attempts_as_dicts(outcome.attempts),
                "call": call.pk if call is not None else None,
            }
        answer = playground_answer(prepared, outcome, recorded=recorded)
        return "done", {**answer, "call": call.pk if call is not None else None}

    yield _sse(
        "start",
        {
            "request_id": request_id,
            "version": version.number,
            "draft": not version.is_committed,
            "locale": prepared.resolution.locale,
            "provider": binding.provider,
            "model": binding.model,
            "variables": dict(values),
        },
    )
    for kind, value in call_streamed(
        prepared,
        on_end=record,
        max_seconds=settings.RUN_STREAM_MAX_SECONDS,
        keepalive_seconds=KEEPALIVE_SECONDS,
    ):
        if kind == "token":
            yield _sse("token", {"text": value})
        elif kind == "tool_call":
            yield _sse("tool_call", value)
        elif kind == "keepalive":
            yield b": keep-alive\n\n"
        else:
            yield _sse(*value)


# --- a case -----------------------------------------------------------------------------------


def case_view(request: HttpRequest, version_id: int) -> HttpResponse:
    """POST ``{dataset, key, variables, locale, output}``: a case of one of the prompt's datasets
    whose expectation is an answer similar to ``output`` (as "Add to a dataset" from a call)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    version = _version(request, version_id)
    if not request.user.has_perm("evaluations.add_case"):
        raise PermissionDenied
    try:
        doc = strict_json_loads(request.body.decode("utf-8"))
    except (JSONRefused, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("output"), str):
        return _invalid("Send {dataset, key, variables, locale, output} as a JSON object.", [])
    dataset_id = doc.get("dataset")
    dataset = (
        Dataset.objects.select_related("prompt")
        .filter(pk=dataset_id, prompt_id=version.prompt_id)
        .first()
        if type(dataset_id) is int
        else None
    )
    if dataset is None:
        return _invalid(
            "Pick one of the prompt's datasets.",
            [{"field": "dataset", "detail": "Not a dataset of this prompt."}],
        )
    locale = doc.get("locale") if isinstance(doc.get("locale"), str) else ""
    data = {
        "key": doc.get("key"),
        "variables": doc.get("variables"),
        "expectation": {
            "scorer": FROM_CALL_SCORER,
            "value": doc["output"],
            "threshold": FROM_CALL_THRESHOLD,
        },
        "locale": "" if locale == version.prompt.default_locale else locale,
    }
    try:
        case = case_add(dataset=dataset, data=data, actor=Actor.for_user(request.user))
    except CaseInvalid as exc:
        return _invalid(exc.message, _case_errors(exc))
    return JsonResponse(
        {
            "case": case.key,
            "dataset": dataset.name,
            "url": reverse("admin:evaluations_case_change", args=[case.pk]),
        },
        status=201,
    )


def _case_errors(exc: CaseInvalid) -> list[dict[str, str]]:
    """Each problem with the case field it is about (its pointer's first step)."""
    return [
        {"field": (pointer_parts(p.pointer) or [""])[0], "detail": p.detail} for p in exc.problems
    ]


# --- hooking the pages into the admin site ------------------------------------------------------

_site_get_urls = admin.site.get_urls


def _get_urls() -> list[URLPattern | URLResolver]:
    wrap = admin.site.admin_view
    return [
        path("playground/<int:version_id>/", wrap(playground_view), name="playground"),
        path("playground/<int:version_id>/run/", wrap(run_view), name="playground_run"),
        path("playground/<int:version_id>/case/", wrap(case_view), name="playground_case"),
        *_site_get_urls(),
    ]


admin.site.get_urls = _get_urls
