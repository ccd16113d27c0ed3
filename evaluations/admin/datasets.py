"""The admin for golden datasets (STYLE R13): the dataset list with case counts, a dataset's page
with its cases (each links to its own page, where it is edited: ``admin.cases``), and the "Import
cases" page with a dry run. Writes go through ``evaluations.datasets.services``. Templates live in
``templates/admin/evaluations/``.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from registry.actors import Actor
from registry.admin.errors import ServiceErrorsAsMessages
from registry.errors import ProblemsError

from ..datasets.casefiles import MAX_IMPORT_CASES, case_file_read, file_too_large
from ..datasets.selectors import dataset_cases, dataset_list
from ..datasets.services import ImportFormat, dataset_create, dataset_import, dataset_update
from ..models import Case, Dataset
from .holdout import frozen_or, with_frozen_holdout
from .marks import CaseMarks

TEMPLATES = "admin/evaluations/dataset"
_SUFFIXES = {".jsonl": ImportFormat.JSONL, ".ndjson": ImportFormat.JSONL, ".csv": ImportFormat.CSV}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class CaseInline(CaseMarks, admin.TabularInline):
    """The dataset's cases as a table in file order; each is changed on its own page (where it
    is checked as an imported row is), so the table itself is read-only."""

    model = Case
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "key",
        "variables_shown",
        "expectation_shown",
        "holdout_mark",
        "must_pass_mark",
        "locale",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Dataset | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Dataset | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Case]:
        return with_frozen_holdout(request, super().get_queryset(request)).order_by(
            "position", "pk"
        )

    @admin.display(description="Variables")
    def variables_shown(self, obj: Case) -> SafeString:
        shown = format_html("<code>{}</code>", Truncator(_json(obj.variables)).chars(160))
        return frozen_or(obj, shown)

    @admin.display(description="Expectation")
    def expectation_shown(self, obj: Case) -> SafeString:
        shown = format_html("<code>{}</code>", Truncator(_json(obj.expectation)).chars(160))
        return frozen_or(obj, shown)


class DatasetForm(forms.ModelForm):
    class Meta:
        model = Dataset
        fields = ["prompt", "name", "description"]


@admin.register(Dataset)
class DatasetAdmin(ServiceErrorsAsMessages, admin.ModelAdmin):
    form = DatasetForm
    list_display = [
        "name",
        "prompt",
        "case_count",
        "holdout_count",
        "must_pass_count",
        "updated_at",
    ]
    list_select_related = ["prompt"]
    list_filter = ["prompt"]
    search_fields = ["name", "prompt__key", "description"]
    autocomplete_fields = ["prompt"]
    inlines = [CaseInline]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        qs = dataset_list()
        ordering = self.get_ordering(request)
        return qs.order_by(*ordering) if ordering else qs

    def get_inlines(self, request: HttpRequest, obj: Dataset | None) -> list[type[CaseInline]]:
        # A new dataset has no cases; they arrive by import, on its page.
        return [CaseInline] if obj is not None else []

    def get_readonly_fields(self, request: HttpRequest, obj: Dataset | None = None) -> list[str]:
        # Gates name datasets and eval reports compare runs of one dataset: fixed once created.
        if obj is None:
            return []
        return ["prompt", "name", "created_by_label", "created_at", "updated_at"]

    def get_fields(self, request: HttpRequest, obj: Dataset | None = None) -> list[str]:
        if obj is None:
            return ["prompt", "name", "description"]
        return ["prompt", "name", "description", "created_by_label", "created_at", "updated_at"]

    def save_model(
        self, request: HttpRequest, obj: Dataset, form: forms.Form, change: bool
    ) -> None:
        if change:
            dataset_update(
                dataset=obj,
                actor=Actor.for_user(request.user),
                description=form.cleaned_data["description"],
            )
            return
        created = dataset_create(
            prompt=form.cleaned_data["prompt"],
            name=form.cleaned_data["name"],
            description=form.cleaned_data["description"],
            actor=Actor.for_user(request.user),
        )
        # Django goes on with ``obj`` (log entry, redirect, message): make it the saved row.
        obj.pk = created.pk
        obj.refresh_from_db()
        obj._state.adding = False

    @admin.display(description="Cases", ordering="case_count")
    def case_count(self, obj: Dataset) -> int:
        return obj.case_count

    @admin.display(description="Holdout", ordering="holdout_count")
    def holdout_count(self, obj: Dataset) -> int:
        return obj.holdout_count

    @admin.display(description="Must pass", ordering="must_pass_count")
    def must_pass_count(self, obj: Dataset) -> int:
        return obj.must_pass_count

    # --- import -------------------------------------------------------------------------------

    def has_import_permission(self, request: HttpRequest, obj: Dataset | None = None) -> bool:
        # An import adds, changes and (with replace) removes cases of the dataset.
        opts = Case._meta
        return request.user.has_perms(
            [f"{opts.app_label}.add_case", f"{opts.app_label}.change_case"]
        ) and self.has_change_permission(request, obj)

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/import/", wrap(self.import_view), name=f"{info}_import"),
            *super().get_urls(),
        ]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args, **kwargs):
        context["can_import"] = self.has_import_permission(request, context.get("original"))
        context["can_add_case"] = request.user.has_perm("evaluations.add_case")
        return super().render_change_form(request, context, *args, **kwargs)

    def import_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Parse the upload, call ``dataset_import`` (a dry run first if asked), present: the cases
        it would store and what happens to each key, or every problem with its line."""
        dataset = self.get_object(request, unquote(object_id))
        if dataset is None:
            raise Http404("No such dataset.")
        if not self.has_import_permission(request, dataset):
            raise PermissionDenied
        form = CaseImportForm(request.POST or None, request.FILES or None)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import cases",
            "subtitle": str(dataset),
            "dataset": dataset,
            "original": dataset,
            "form": form,
            "case_count": dataset_cases(dataset, include_holdout=True).count(),
            "has_view_permission": True,
        }
        status = 200
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = dataset_import(
                    dataset=dataset,
                    content=case_file_read(upload),
                    format=form.format_for(upload.name),
                    replace=form.cleaned_data["replace"],
                    dry_run=form.cleaned_data["dry_run"],
                    actor=Actor.for_user(request.user),
                )
            except ProblemsError as exc:
                context |= {"error": exc.message, "problems": exc.problems}
                status = 400
            else:
                if not result.dry_run:
                    self.log_change(request, dataset, result.describe())
                    self.message_user(request, result.describe(), messages.SUCCESS)
                    return HttpResponseRedirect(
                        reverse("admin:evaluations_dataset_change", args=[dataset.pk])
                    )
                context["result"] = result
        elif request.method == "POST":
            status = 400
        return TemplateResponse(request, f"{TEMPLATES}/import.html", context, status=status)


class CaseImportForm(forms.Form):
    file = forms.FileField()  # its help text names DATASET_FILE_MAX_BYTES as it is now
    format = forms.ChoiceField(
        choices=[("", "From the file's extension")]
        + [(f.value, f.value.upper()) for f in ImportFormat],
        required=False,
    )
    replace = forms.BooleanField(
        required=False,
        help_text="The dataset ends up holding exactly the file's cases: same keys are updated, "
        "the others removed. Unticked: the cases are added, and a key the dataset has is refused.",
    )
    dry_run = forms.BooleanField(
        required=False,
        initial=True,
        help_text="Check and show what would be imported; store nothing.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = settings.DATASET_FILE_MAX_BYTES
        self.fields[
            "file"
        ].help_text = f"UTF-8, at most {filesizeformat(limit)} and {MAX_IMPORT_CASES:,} cases."

    def clean_file(self) -> UploadedFile:
        # The size the upload handlers counted, before a byte of the file is read (they stop
        # storing it past the limit: config.uploads).
        upload = self.cleaned_data["file"]
        if upload.size > settings.DATASET_FILE_MAX_BYTES:
            raise forms.ValidationError(file_too_large(upload.size, at_least=True).detail)
        return upload

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("file")
        if upload is not None and not data.get("format"):
            suffix = "." + upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
            if suffix not in _SUFFIXES:
                self.add_error("format", "Cannot tell the format from the file name; choose one.")
        return data

    def format_for(self, filename: str) -> ImportFormat:
        if self.cleaned_data["format"]:
            return ImportFormat(self.cleaned_data["format"])
        return _SUFFIXES["." + filename.rsplit(".", 1)[-1].lower()]
