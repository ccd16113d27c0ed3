"""The admin for cases (STYLE R13): the case list with holdout and must-pass filters, a case's page
where it is added, edited and removed, and "Add to a dataset" from a call's page.

One validation path: the form checks a case with ``services.case_validate``, which is the
import's row check (``casefiles.case_check``) plus the key; saving calls ``case_add`` /
``case_update`` / ``case_remove``, which check again under the dataset's lock. The admin never
saves a case row itself, and Django's own model validation of the row is skipped (it would be a
second set of rules, with other words). Every change is in the admin's history (LogEntry), as
any other admin change.

A holdout case is frozen for authors (``holdout.with_frozen_holdout``): they see that it exists and
its flags, not its variables or expectation, so they may not change or remove it either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from registry.actors import Actor
from registry.admin.errors import ServiceErrorsAsMessages
from registry.admin.forms import json_refusal, pointer_parts
from registry.errors import Problem
from registry.strictjson import JSONRefused, strict_json_loads
from runs import admin as runs_admin
from runs.models import Call

from ..datasets.services import CaseInvalid, case_add, case_remove, case_update, case_validate
from ..models import Case, Dataset
from .holdout import frozen_or, with_frozen_holdout
from .marks import CaseMarks

TEMPLATES = "admin/evaluations/case"
# Where a case's problems go: the field named by the first step of its pointer.
CASE_FIELDS = ("key", "variables", "expectation", "holdout", "must_pass", "locale")
# The expectation a call's output starts as: a similarity, since a model seldom answers the same
# words twice; the author edits it (a contains, an exact, a JSON field...).
FROM_CALL_SCORER = "similarity"
FROM_CALL_THRESHOLD = 0.8


def may_add_from_call(request: HttpRequest) -> bool:
    """Reading the call (its redacted inputs and output) and adding a case."""
    return request.user.has_perm("runs.view_call") and request.user.has_perm("evaluations.add_case")


def may_read_holdout(request: HttpRequest) -> bool:
    """Release managers (who run the gates) and superusers; see ``with_frozen_holdout``."""
    return request.user.has_perm("releases.deploy_release")


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


class CaseForm(forms.ModelForm):
    """A case as a JSONL line has it, field by field; ``variables`` and ``expectation`` are JSON.

    ``clean`` hands the whole case to ``case_validate`` and puts each problem next to its field;
    ``case_input`` is then what the services take."""

    variables = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "class": "vLargeTextField"}),
        help_text="JSON: an object of name: value, checked against the variables the prompt's "
        "latest committed version declares.",
    )
    expectation = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "class": "vLargeTextField"}),
        help_text='JSON: a scorer expectation, e.g. {"scorer": "contains", "value": "refund"} '
        "(docs/evaluations.md, Scorers).",
    )

    class Meta:
        model = Case
        fields = ["dataset", "key", "variables", "expectation", "holdout", "must_pass", "locale"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "key" in self.fields:  # a new case's; an existing case's key is fixed (read-only)
            self.fields["key"].required = False
            self.fields["key"].help_text = (
                "Optional: left empty, a key is made from the case's content. Fixed once the case "
                "exists: reports compare runs by key."
            )
        if self.instance.pk is not None:
            self.initial["variables"] = _pretty(self.instance.variables)
            self.initial["expectation"] = _pretty(self.instance.expectation)
        self.case_input: dict[str, Any] = {}

    def _json(self, name: str, *, empty: Any) -> Any:
        raw = self.cleaned_data.get(name, "")
        if not raw.strip():
            return empty
        try:
            return strict_json_loads(raw)
        except JSONRefused as exc:
            raise forms.ValidationError(
                json_refusal(exc) if exc.errors else "This is not valid JSON."
            ) from exc

    def clean_variables(self) -> Any:
        return self._json("variables", empty={})

    def clean_expectation(self) -> Any:
        return self._json("expectation", empty=None)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data  # a field that did not parse: its own error says why
        dataset = data.get("dataset") or self.instance_dataset()
        if dataset is None:
            return data
        case_input = {
            name: data[name] for name in CASE_FIELDS if name in data and name in self.fields
        }
        try:
            case_validate(
                dataset=dataset,
                data=case_input,
                case=self.instance if self.instance.pk is not None else None,
            )
        except CaseInvalid as exc:
            self.place(exc.problems)
        self.case_input = case_input
        return data

    def instance_dataset(self) -> Dataset | None:
        return self.instance.dataset if self.instance.dataset_id is not None else None

    def place(self, problems: list[Problem]) -> None:
        for problem in problems:
            parts = pointer_parts(problem.pointer)
            name = parts[0] if parts and parts[0] in self.fields else None
            detail = problem.detail
            if name == "variables" and len(parts) > 1:
                detail = f"{'/'.join(parts[1:])}: {detail}"
            self.add_error(name, detail)

    def _post_clean(self) -> None:
        # Django's model validation of the row is left out on purpose: ``case_validate`` is the
        # one check of a case (the import's), and the services write the row.
        pass


class HasLocaleFilter(admin.SimpleListFilter):
    title = "locale"
    parameter_name = "has_locale"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "A locale of its own"), ("no", "The default locale")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Case]) -> QuerySet[Case]:
        if self.value() == "yes":
            return queryset.exclude(locale="")
        if self.value() == "no":
            return queryset.filter(locale="")
        return queryset


READ_FIELDS = [
    "dataset",
    "key",
    "position",
    "variables_shown",
    "expectation_shown",
    "holdout_mark",
    "must_pass_mark",
    "locale",
    "created_at",
    "updated_at",
]
EDIT_FIELDS = ["dataset", "key", "variables", "expectation", "holdout", "must_pass", "locale"]
INFO_FIELDS = ["position", "created_at", "updated_at"]


@admin.register(Case)
class CaseAdmin(CaseMarks, ServiceErrorsAsMessages, admin.ModelAdmin):
    """Every case across datasets, to find the holdout or must-pass ones; a case's page edits it."""

    form = CaseForm
    list_display = [
        "key",
        "dataset",
        "scorer",
        "holdout_mark",
        "must_pass_mark",
        "locale",
        "position",
    ]
    list_select_related = ["dataset", "dataset__prompt"]
    list_filter = ["holdout", "must_pass", HasLocaleFilter, "dataset__prompt", "dataset"]
    search_fields = ["key", "dataset__name", "dataset__prompt__key"]
    ordering = ["dataset", "position", "pk"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Case]:
        return with_frozen_holdout(request, super().get_queryset(request)).select_related(
            "dataset__prompt"
        )

    # --- who may do what ------------------------------------------------------------------------

    def _frozen_for(self, request: HttpRequest, obj: Case | None) -> bool:
        return obj is not None and obj.holdout and not may_read_holdout(request)

    def has_change_permission(self, request: HttpRequest, obj: Case | None = None) -> bool:
        return super().has_change_permission(request, obj) and not self._frozen_for(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Case | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not self._frozen_for(request, obj)

    def _editable(self, request: HttpRequest, obj: Case | None) -> bool:
        if obj is None:
            return self.has_add_permission(request)
        return self.has_change_permission(request, obj)

    def get_fields(self, request: HttpRequest, obj: Case | None = None) -> list[str]:
        if not self._editable(request, obj):
            return READ_FIELDS  # variables and expectation shown frozen where they must be
        return EDIT_FIELDS if obj is None else [*EDIT_FIELDS, *INFO_FIELDS]

    def get_readonly_fields(self, request: HttpRequest, obj: Case | None = None) -> list[str]:
        if not self._editable(request, obj):
            return READ_FIELDS
        # The dataset and the key are fixed once the case exists: reports compare by key.
        return [] if obj is None else ["dataset", "key", *INFO_FIELDS]

    def get_form(self, request: HttpRequest, obj: Case | None = None, **kwargs: Any):
        form = super().get_form(request, obj, **kwargs)
        if obj is None and "dataset" in form.base_fields:
            form.base_fields["dataset"].queryset = Dataset.objects.select_related("prompt")
        return form

    # --- writes, through the services -----------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Case, form: CaseForm, change: bool) -> None:
        actor = Actor.for_user(request.user)
        if change:
            case_update(case=obj, data=form.case_input, actor=actor)
            obj.refresh_from_db()
            return
        created = case_add(dataset=form.cleaned_data["dataset"], data=form.case_input, actor=actor)
        # Django goes on with ``obj`` (log entry, redirect, message): make it the saved row.
        obj.pk = created.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets, change) -> None:
        pass  # a case has no related rows the form edits

    def delete_model(self, request: HttpRequest, obj: Case) -> None:
        case_remove(case=obj, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Case]) -> None:
        actor = Actor.for_user(request.user)
        for case in queryset.select_related("dataset"):
            case_remove(case=case, actor=actor)

    def _back_to_dataset(self, request: HttpRequest, obj: Case) -> HttpResponse:
        return HttpResponseRedirect(
            reverse("admin:evaluations_dataset_change", args=[obj.dataset_id])
        )

    def response_post_save_add(self, request: HttpRequest, obj: Case) -> HttpResponse:
        return self._back_to_dataset(request, obj)

    def response_post_save_change(self, request: HttpRequest, obj: Case) -> HttpResponse:
        return self._back_to_dataset(request, obj)

    # --- columns ---------------------------------------------------------------------------------

    @admin.display(description="Scorer")
    def scorer(self, obj: Case) -> str:
        return str(obj.expectation.get("scorer", "")) if isinstance(obj.expectation, dict) else ""

    @admin.display(description="Variables")
    def variables_shown(self, obj: Case) -> SafeString:
        return frozen_or(obj, _pre(_pretty(obj.variables)))

    @admin.display(description="Expectation")
    def expectation_shown(self, obj: Case) -> SafeString:
        return frozen_or(obj, _pre(_pretty(obj.expectation)))

    # --- a call, added to a dataset --------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "from-call/<int:call_id>/",
                self.admin_site.admin_view(self.from_call_view),
                name=f"{info}_from_call",
            ),
            *super().get_urls(),
        ]

    def from_call_view(self, request: HttpRequest, call_id: int) -> HttpResponse:
        """A new case of one of the call's prompt's datasets: its variables from the call's
        (redacted) inputs, its expectation from the call's output, both editable first."""
        if not may_add_from_call(request):
            raise PermissionDenied
        call = get_object_or_404(
            Call.objects.select_related("prompt", "version", "environment"), pk=call_id
        )
        datasets = Dataset.objects.filter(prompt=call.prompt).select_related("prompt")
        form = FromCallForm(
            request.POST or None, initial=from_call_initial(call, datasets), datasets=datasets
        )
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    case = case_add(
                        dataset=form.cleaned_data["dataset"],
                        data=form.case_input,
                        actor=Actor.for_user(request.user),
                    )
                except CaseInvalid as exc:  # a case with its key was added meanwhile
                    form.place(exc.problems)
                else:
                    self.log_addition(request, case, [{"added": {}}])
                    self.message_user(
                        request,
                        f"Call {call.request_id} added to {case.dataset} as case {case.key!r}.",
                        messages.SUCCESS,
                    )
                    return self._back_to_dataset(request, case)
            status = 400
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add this call to a dataset",
            "subtitle": f"Call {call.request_id}",
            "call": call,
            "call_url": reverse("admin:runs_call_change", args=[call.pk]),
            "form": form,
            "datasets": datasets,
            "may_add_dataset": request.user.has_perm("evaluations.add_dataset"),
            "add_dataset_url": reverse("admin:evaluations_dataset_add")
            + f"?prompt={call.prompt_id}",
            "has_view_permission": True,
        }
        return TemplateResponse(request, f"{TEMPLATES}/from_call.html", context, status=status)


def _pre(text: str) -> SafeString:
    return format_html("<pre>{}</pre>", text)


class FromCallForm(CaseForm):
    """The case form with the dataset limited to the call's prompt's: a dataset of another prompt
    is not a choice (and is refused as one when posted)."""

    def __init__(self, *args: Any, datasets: QuerySet[Dataset], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets
        self.fields["dataset"].empty_label = None


def from_call_initial(call: Call, datasets: QuerySet[Dataset]) -> dict[str, Any]:
    """The case a call suggests: its redacted inputs as the variables, its output as what a
    similar answer should be, its locale when it is not the prompt's default."""
    first = datasets.order_by("name").first()
    return {
        "dataset": first.pk if first is not None else None,
        "variables": _pretty(call.inputs if isinstance(call.inputs, Mapping) else {}),
        "expectation": _pretty(
            {
                "scorer": FROM_CALL_SCORER,
                "value": call.output,
                "threshold": FROM_CALL_THRESHOLD,
            }
        ),
        "locale": "" if call.locale == call.prompt.default_locale else call.locale,
    }


def add_to_dataset_tool(request: HttpRequest, call: Call) -> tuple[str, str] | None:
    """The "Add to a dataset" button on a call's page, for those who may use it."""
    if not may_add_from_call(request):
        return None
    return "Add to a dataset", reverse("admin:evaluations_case_from_call", args=[call.pk])


if add_to_dataset_tool not in runs_admin.CALL_PAGE_TOOLS:
    runs_admin.CALL_PAGE_TOOLS.append(add_to_dataset_tool)
