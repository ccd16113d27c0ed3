"""The admin for eval runs: the run list with progress and pass rates, a run's page with its
progress bar (polling a small JSON endpoint while it runs) and the report against the stable
version, the "Run an evaluation" page, and the results, read-only.

Everything a page does goes through ``evaluations.evalruns.services`` (start, cancel, lookups) and
``evaluations.evalruns.report`` (the report): the API calls the same functions. Runs and results are
records of what happened: nobody changes them here. Starting a run needs ``add_evalrun`` (Prompt
authors have it), a gate run (holdout included) ``releases.deploy_release`` too, and cancelling
one ``add_evalrun``. Outputs are model text: every value goes through autoescaping.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from registry.actors import Actor
from registry.admin.errors import error_text
from registry.errors import RegistryError
from registry.models import Prompt
from registry.templatetags.registry_display import EMPTY, percent, percent_points
from releases.models import Environment
from runs.admin_display import guardrails_table

from ..evalruns.report import eval_run_report, eval_run_summary
from ..evalruns.services import (
    IN_PROGRESS,
    EvalRunNotFound,
    eval_run_cancel,
    eval_run_get,
    eval_run_list,
    eval_run_start,
)
from ..models import DATASET_NAME_MAX, Dataset, EvalResult, EvalRun
from .marks import CaseMarks

TEMPLATES = "admin/evaluations/evalrun"
GATE_RUN_PERMISSION = "releases.deploy_release"


def _percent(value: float | None) -> str:
    """A pass rate as the reports keep it (0–100)."""
    return percent(None if value is None else value / 100)


def _points(value: float | None) -> str:
    """A difference of pass rates in percentage points, as the reports keep it."""
    return percent_points(None if value is None else value / 100)


def run_url(run_id: int, *, next_url: str = "") -> str:
    url = reverse("admin:evaluations_evalrun_change", args=[run_id])
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


def safe_next(request: HttpRequest, url: str | None) -> str:
    """``url`` if it is a page of this site (a gate run's way back), else ''."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


def ended_message(run: EvalRun) -> tuple[int, str]:
    """What a gate run came to, for the page it comes back to."""
    summary = eval_run_summary(run)
    what = f"Gate run #{run.pk} of version {run.version.number} on {run.dataset.name}"
    if run.status == EvalRun.Status.FINISHED:
        rate = _percent(summary.pass_rate)
        return messages.SUCCESS, f"{what} finished: {rate} of cases pass."
    reason = f": {run.error}" if run.error else "."
    return messages.WARNING, f"{what} {run.get_status_display().lower()}{reason}"


class EvalRunStartForm(forms.Form):
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.select_related("prompt").order_by("prompt__key", "name"),
        help_text="The prompt and its dataset: prompt / dataset.",
    )
    version = forms.IntegerField(min_value=1, help_text="The version to run; a draft too.")
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.order_by("position"),
        required=False,
        help_text="Whose stable version the report compares with.",
    )
    include_holdout = forms.BooleanField(
        required=False,
        label="Gate run",
        help_text="Score the frozen holdout cases too, as promotion gates need (they count "
        "only runs started after the version was committed). Their outputs are never shown.",
    )

    def __init__(self, *args: Any, may_gate: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].empty_label = (
            f"Default ({settings.EVAL_BASELINE_ENVIRONMENT}, else the highest with a stable "
            "version)"
        )
        if not may_gate:
            del self.fields["include_holdout"]


class GateRunForm(forms.Form):
    """A gate run started from a release's confirmation page: its hidden fields say which."""

    prompt = forms.ModelChoiceField(queryset=Prompt.objects.all())
    version = forms.IntegerField(min_value=1)
    dataset = forms.CharField(max_length=DATASET_NAME_MAX)
    environment = forms.ModelChoiceField(queryset=Environment.objects.all(), to_field_name="name")
    next = forms.CharField(required=False)


@admin.register(EvalRun)
class EvalRunAdmin(admin.ModelAdmin):
    list_display = [
        "run_label",
        "prompt",
        "version_label",
        "dataset_name",
        "kind",
        "status",
        "progress",
        "pass_rate",
        "delta",
        "created_at",
    ]
    list_display_links = ["run_label"]
    list_filter = ["status", "include_holdout", "prompt"]
    search_fields = ["prompt__key", "dataset__name"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[EvalRun]:
        return eval_run_list()

    def has_change_permission(self, request: HttpRequest, obj: EvalRun | None = None) -> bool:
        return False  # a record of what happened

    def has_delete_permission(self, request: HttpRequest, obj: EvalRun | None = None) -> bool:
        return False

    def may_gate(self, request: HttpRequest) -> bool:
        return request.user.has_perm(GATE_RUN_PERMISSION)

    # --- the list's columns -------------------------------------------------------------------

    @admin.display(description="Run", ordering="id")
    def run_label(self, run: EvalRun) -> str:
        return f"#{run.pk}"

    @admin.display(description="Version", ordering="version__number")
    def version_label(self, run: EvalRun) -> str:
        return f"v{run.version.number}"

    @admin.display(description="Dataset", ordering="dataset__name")
    def dataset_name(self, run: EvalRun) -> str:
        return run.dataset.name

    @admin.display(description="Kind", ordering="include_holdout")
    def kind(self, run: EvalRun) -> str:
        return "Gate run" if run.include_holdout else "Author run"

    @admin.display(description="Progress")
    def progress(self, run: EvalRun) -> SafeString:
        summary = eval_run_summary(run)
        return format_html(
            '<progress value="{}" max="{}"></progress> {}/{}',
            summary.done,
            summary.total,
            summary.done,
            summary.total,
        )

    @admin.display(description="Pass rate")
    def pass_rate(self, run: EvalRun) -> str:
        return _percent(eval_run_summary(run).pass_rate)

    @admin.display(description="Δ vs stable")
    def delta(self, run: EvalRun) -> str:
        return _points(eval_run_summary(run).delta_points)

    # --- pages ----------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<int:run_id>/progress/", wrap(self.progress_view), name=f"{info}_progress"),
            path("gate/", wrap(require_POST(self.gate_view)), name=f"{info}_gate"),
            path(
                "<int:run_id>/cancel/", wrap(require_POST(self.cancel_view)), name=f"{info}_cancel"
            ),
            *super().get_urls(),
        ]

    def _run(self, request: HttpRequest, object_id: str | int) -> EvalRun:
        if not str(object_id).isdigit():
            raise Http404("No such eval run.")
        try:
            run = eval_run_get(run_id=int(object_id))
        except EvalRunNotFound as exc:
            raise Http404(exc.message) from exc
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return run

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The run's page: progress, figures, and every case, must-pass failures first.

        With ``?next=`` (a gate run started from a release's confirmation page) the page goes
        back there once the run has ended: the script does on its last poll, a reload does."""
        run = self._run(request, object_id)
        next_url = safe_next(request, request.GET.get("next"))
        if next_url and run.status not in IN_PROGRESS:
            level, text = ended_message(run)
            self.message_user(request, text, level)
            return HttpResponseRedirect(next_url)
        report = eval_run_report(run)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Eval run #{run.pk}: {run.prompt.key} v{run.version.number} on "
            f"{run.dataset.name}",
            "run": run,
            "report": report,
            "in_progress": run.status in IN_PROGRESS,
            "may_cancel": run.status in IN_PROGRESS and self.has_add_permission(request),
            "progress_url": reverse("admin:evaluations_evalrun_progress", args=[run.pk]),
            "cancel_url": reverse("admin:evaluations_evalrun_cancel", args=[run.pk]),
            "baseline_url": run_url(run.baseline_id) if run.baseline_id else "",
            "results_url": reverse("admin:evaluations_evalresult_changelist")
            + f"?run__id__exact={run.pk}",
            "pass_rate": _percent(report.run.pass_rate),
            "baseline_pass_rate": _percent(report.baseline.pass_rate if report.baseline else None),
            "delta": _points(report.delta_points),
            "dataset_changed": run.dataset_updated_at != run.dataset.updated_at,
            "next_url": next_url,
            "has_view_permission": True,
        }
        return TemplateResponse(request, f"{TEMPLATES}/run.html", context)

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        """What the run page polls while the run goes: one run's counts."""
        run = self._run(request, run_id)
        summary = eval_run_summary(run)
        return JsonResponse(
            {
                "status": run.status,
                "done": summary.done,
                "total": summary.total,
                "percent": summary.percent_done,
                "pass_rate": summary.pass_rate,
                "in_progress": run.status in IN_PROGRESS,
            }
        )

    def gate_view(self, request: HttpRequest) -> HttpResponse:
        """Starts the gate run a release's confirmation page asks for (POST), then shows its
        progress and comes back to ``next`` when it ends; an eager run (the embedded default)
        has ended already and comes straight back.

        Who may release may start it: ``releases.deploy_release`` (as for any gate run) and
        seeing eval runs, to watch it; not ``add_evalrun``, which release managers lack."""
        if not (self.may_gate(request) and self.has_view_permission(request)):
            raise PermissionDenied
        form = GateRunForm(request.POST)
        if not form.is_valid():
            return HttpResponse("The gate run's form is incomplete.", status=400)
        data = form.cleaned_data
        back = safe_next(request, data["next"])
        try:
            run = eval_run_start(
                prompt=data["prompt"],
                version=data["version"],
                dataset_name=data["dataset"],
                actor=Actor.for_user(request.user),
                include_holdout=True,
                environment=data["environment"].name,
            )
        except RegistryError as exc:
            self.message_user(
                request, error_text(exc, subject="No gate run started"), messages.ERROR
            )
            return HttpResponseRedirect(back or reverse("admin:evaluations_evalrun_changelist"))
        self.log_addition(request, run, "Started from a release's confirmation page.")
        run = eval_run_get(run_id=run.pk)
        if back and run.status not in IN_PROGRESS:
            level, text = ended_message(run)
            self.message_user(request, text, level)
            return HttpResponseRedirect(back)
        return HttpResponseRedirect(run_url(run.pk, next_url=back))

    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = self._run(request, run_id)
        if not self.has_add_permission(request):
            raise PermissionDenied
        try:
            eval_run_cancel(run=run, actor=Actor.for_user(request.user))
        except RegistryError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"Eval run #{run.pk} was cancelled.", messages.SUCCESS)
        return HttpResponseRedirect(run_url(run.pk))

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """ "Run an evaluation": a version of a prompt over one of its datasets."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        may_gate = self.may_gate(request)
        form = EvalRunStartForm(request.POST or None, initial=request.GET.dict(), may_gate=may_gate)
        status = 200
        if request.method == "POST":
            status = 400
            if form.is_valid():
                data = form.cleaned_data
                dataset = data["dataset"]
                try:
                    run = eval_run_start(
                        prompt=dataset.prompt,
                        version=data["version"],
                        dataset_name=dataset.name,
                        actor=Actor.for_user(request.user),
                        include_holdout=bool(data.get("include_holdout")),
                        environment=data["environment"].name if data["environment"] else None,
                    )
                except RegistryError as exc:
                    form.add_error(None, error_text(exc))
                else:
                    self.log_addition(request, run, "Started.")
                    self.message_user(
                        request,
                        f"Eval run #{run.pk} started: {run.total_cases} case(s).",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(run_url(run.pk))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Run an evaluation",
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, f"{TEMPLATES}/start.html", context, status=status)


@admin.register(EvalResult)
class EvalResultAdmin(CaseMarks, admin.ModelAdmin):
    """Each scored case, read-only. A holdout case's output and detail are never shown."""

    list_display = [
        "case_key",
        "run_link",
        "passed",
        "must_pass_mark",
        "holdout_mark",
        "score",
        "error_class",
        "latency_ms",
    ]
    list_filter = ["passed", "must_pass", "holdout"]
    list_select_related = ["run"]
    search_fields = ["case_key"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = [
        "run_link",
        "case_key",
        "passed",
        "score",
        "must_pass_mark",
        "holdout_mark",
        "error_class",
        "detail_shown",
        "output_shown",
        "guardrails_shown",
        "latency_ms",
        "input_tokens",
        "output_tokens",
        "cost",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: EvalResult | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: EvalResult | None = None) -> bool:
        return False

    @admin.display(description="Run", ordering="run_id")
    def run_link(self, result: EvalResult) -> SafeString:
        return format_html('<a href="{}">#{}</a>', run_url(result.run_id), result.run_id)

    @admin.display(description="Detail")
    def detail_shown(self, result: EvalResult) -> SafeString | str:
        if result.holdout:
            return "Frozen (holdout case)"
        return format_html("<pre>{}</pre>", result.detail) if result.detail else EMPTY

    @admin.display(description="Output")
    def output_shown(self, result: EvalResult) -> SafeString | str:
        if result.holdout:
            return "Frozen (holdout case)"
        return format_html("<pre>{}</pre>", result.output) if result.output else EMPTY

    @admin.display(description="Guardrail checks that fired")
    def guardrails_shown(self, result: EvalResult) -> SafeString | str:
        if result.holdout:
            return "Frozen (holdout case)"
        return guardrails_table(result.guardrails)
