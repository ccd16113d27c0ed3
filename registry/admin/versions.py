"""The version editor: drafts edited with their variables and templates inline, committed versions
shown read-only, and the verbs (commit, new draft from this version, discard) as permissioned
pages that call the services (STYLE R2, R13).

A draft's rows are never saved by Django: ``save_model`` hands the content the ``DraftEditor``
assembled and checked to ``version_draft_create``/``version_draft_update``, which write it whole.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.forms import BaseInlineFormSet, Form, ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from registry.actors import Actor
from registry.errors import DraftConflict, RegistryError
from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable
from registry.selectors import version_translation_status
from registry.services import version_draft_create, version_draft_discard, version_draft_update

from . import pages, verbs, workbench
from .display import guardrails_policy_table, status_badge, translation_badges, version_url
from .forms import DraftEditor, DraftInlineFormSet, TemplateForm, VariableForm, VersionForm

BINDING_FIELDS = [
    "provider",
    "model_name",
    "parameters",
    "response_schema",
    "fallbacks",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "cache",
    "guardrails",
]
# A committed version's binding fields shown by a display of their own, not as the field's value.
COMMITTED_SHOWN = {"guardrails": "guardrails_shown"}
INFO_FIELDS = [
    "number",
    "status_display",
    "parent_link",
    "translation_status",
    "content_hash",
    "written_by",
    "committed_by_display",
    "committed_at",
    "updated_at",
]


def draft_editor(request: HttpRequest) -> DraftEditor:
    """The request's ``DraftEditor``. ModelAdmin instances serve every request, so per-request
    state lives on the request, as the admin keeps ``request.current_app`` there."""
    editor = getattr(request, "_registry_draft_editor", None)
    if editor is None:
        editor = DraftEditor()
        request._registry_draft_editor = editor  # type: ignore[attr-defined]
    return editor


class DraftOnlyInline:
    """Inline rows are editable on a draft only; a committed version shows them read-only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_committed:
            return False
        return super().has_add_permission(request, obj)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_committed:
            return False
        return super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_committed:
            return False
        return super().has_delete_permission(request, obj)  # type: ignore[misc]


class VariableInline(DraftOnlyInline, admin.TabularInline):
    model = Variable
    form = VariableForm
    formset = DraftInlineFormSet
    fields = ["name", "type", "required", "default", "after", "description"]
    ordering = ["position"]
    extra = 1


class TemplateInline(DraftOnlyInline, admin.StackedInline):
    model = LocalizedTemplate
    form = TemplateForm
    formset = DraftInlineFormSet
    fields = ["locale", "system", "context", "instruction", "format"]
    ordering = ["locale"]
    verbose_name = "localized template"

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 2 if obj is None else 1  # a new draft: the default locale and one translation


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    form = VersionForm
    inlines = [VariableInline, TemplateInline]
    list_display = [
        "version_label",
        "prompt",
        "number",
        "status_display",
        "short_message",
        "written_by",
        "committed_at",
        "translations",
    ]
    list_display_links = ["version_label"]
    list_filter = ["status", "prompt"]
    list_select_related = ["prompt"]
    search_fields = ["prompt__key", "message"]
    autocomplete_fields = ["prompt"]
    actions = ["commit_selected"]
    show_full_result_count = False

    # --- reads ------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[PromptVersion]:
        # The translation column and badges read every version's templates: one prefetch query
        # for the page, not one per row.
        return (
            super()
            .get_queryset(request)
            .select_related("prompt", "parent")
            .prefetch_related(
                Prefetch("templates", queryset=LocalizedTemplate.objects.order_by("locale"))
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: PromptVersion | None = None) -> list:
        binding = ("Model binding", {"fields": BINDING_FIELDS})
        if obj is None:
            return [(None, {"fields": ["prompt", "message"]}), binding]
        if obj.is_committed:
            # Read, not edited: the guardrail policy as a table of its checks, not one line of
            # JSON (the diff page shows the JSON, indented).
            shown = [COMMITTED_SHOWN.get(name, name) for name in BINDING_FIELDS]
            binding = ("Model binding", {"fields": shown})
        own = ["prompt", "message"] + ([] if obj.is_committed else ["loaded_hash"])
        return [(None, {"fields": own}), ("Version", {"fields": INFO_FIELDS}), binding]

    def get_readonly_fields(self, request: HttpRequest, obj: PromptVersion | None = None) -> list:
        if obj is None:
            return []
        return ["prompt", *INFO_FIELDS, *(COMMITTED_SHOWN.values() if obj.is_committed else ())]

    @admin.display(description="Guardrails")
    def guardrails_shown(self, version: PromptVersion) -> SafeString | str:
        return guardrails_policy_table(version.guardrails)

    # --- permissions: a committed version is a view page; discard and commit are verbs -----

    def has_change_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        if obj is not None and obj.is_committed:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        # PostgreSQL refuses to delete a committed version (migration 0002); say so up front.
        if obj is not None and obj.is_committed:
            return False
        return super().has_delete_permission(request, obj)

    def has_commit_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.commit_promptversion")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.delete_promptversion")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # Deleting versions in bulk is not a verb here: drafts are discarded one at a time and
        # committed versions are history.
        actions.pop("delete_selected", None)
        return actions

    # --- the editor -------------------------------------------------------------------------

    def get_form(
        self,
        request: HttpRequest,
        obj: PromptVersion | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[ModelForm]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and obj.is_committed:
            return form
        # A fresh subclass carries this request's editor to the form instance (see DraftEditor).
        return type(form.__name__, (form,), {"editor": draft_editor(request)})

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Any, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        kwargs["editor"] = draft_editor(request)
        if isinstance(inline, TemplateInline) and obj.pk is None:
            # A new draft starts with a row for the prompt's default locale (?prompt=<id>, as the
            # prompt list links); the same initial on POST, so an untouched row stays untouched.
            kwargs["initial"] = [{"locale": self._default_locale(request)}]
        return kwargs

    def _default_locale(self, request: HttpRequest) -> str:
        prompt_id = request.GET.get("prompt", "")
        prompt = Prompt.objects.filter(pk=prompt_id).first() if prompt_id.isdigit() else None
        return prompt.default_locale if prompt is not None else "en"

    def save_model(
        self, request: HttpRequest, obj: PromptVersion, form: VersionForm, change: bool
    ) -> None:
        editor = form.editor
        if editor is None or editor.content is None:
            raise RuntimeError("A draft is saved only after the DraftEditor checked its content.")
        actor = Actor.for_user(request.user)
        if change:
            saved = version_draft_update(
                version=obj,
                actor=actor,
                content=editor.content,
                message=form.cleaned_data["message"],
                expected_tag=form.cleaned_data.get("loaded_hash") or None,
            )
        else:
            saved = version_draft_create(
                prompt=form.cleaned_data["prompt"],
                actor=actor,
                content=editor.content,
                message=form.cleaned_data["message"],
            )
        # Django goes on with ``obj`` (log entry, redirect, message): make it the saved row.
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False
        for warning in editor.warnings:
            self.message_user(request, warning.detail, messages.WARNING)

    def save_related(
        self, request: HttpRequest, form: Form, formsets: list[BaseInlineFormSet], change: bool
    ) -> None:
        """Nothing to do: ``save_model``'s service call wrote the variables and templates."""

    def construct_change_message(
        self, request: HttpRequest, form: Form, formsets: list[BaseInlineFormSet], add: bool
    ) -> str:
        # The default reads formset.new_objects, which only formset.save() sets.
        action = "Opened the draft" if add else "Saved the draft"
        return f"{action}; content {form.instance.content_hash[:12]}."

    def delete_model(self, request: HttpRequest, obj: PromptVersion) -> None:
        version_draft_discard(version=obj, actor=Actor.for_user(request.user))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "can_commit": self.has_commit_permission(request),
            "can_branch": self.has_add_permission(request),
            "can_discard": self.has_discard_permission(request),
        }
        try:
            return super().changeform_view(request, object_id, form_url, context)
        except DraftConflict:
            # Saved by someone else between the form's check and the service's lock: the
            # transaction was rolled back. Showing the form again runs the check again, which
            # now sees the newer save and says so in place, with the author's text kept.
            request._registry_draft_editor = None  # type: ignore[attr-defined]
            return super().changeform_view(request, object_id, form_url, context)
        except RegistryError as exc:
            # The form checked everything it could; what is left is a race with another writer
            # (a draft opened, committed or saved meanwhile). The transaction was rolled back.
            prompt_id = request.POST.get("prompt", "")
            return verbs.refused(
                self,
                request,
                exc,
                back=request.get_full_path(),
                prompt_id=int(prompt_id) if prompt_id.isdigit() else None,
            )

    # --- the workbench: a draft's change form, laid out for writing ---------------------------

    def uses_workbench(self, request: HttpRequest, obj: PromptVersion | None) -> bool:
        """A new draft, or a draft the user may change; committed versions and view-only users
        keep the read-only page."""
        if obj is None:
            return self.has_add_permission(request)
        return not obj.is_committed and self.has_change_permission(request, obj)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: PromptVersion | None = None,
    ) -> HttpResponse:
        response = super().render_change_form(request, context, add, change, form_url, obj)
        if self.uses_workbench(request, obj):
            extra = workbench.workbench_context(
                request,
                response.context_data,
                obj,
                getattr(request, "_registry_draft_editor", None),
            )
            if extra is not None:
                response.context_data.update(extra)
                response.template_name = workbench.TEMPLATE
        return response

    def response_add(
        self, request: HttpRequest, obj: PromptVersion, post_url_continue: str | None = None
    ) -> HttpResponse:
        return self._workbench_response(request, obj) or super().response_add(
            request, obj, post_url_continue
        )

    def response_change(self, request: HttpRequest, obj: PromptVersion) -> HttpResponse:
        return self._workbench_response(request, obj) or super().response_change(request, obj)

    def _workbench_response(self, request: HttpRequest, obj: PromptVersion) -> HttpResponse | None:
        """After a save from the workbench: "Save and commit" goes on to the commit
        confirmation; a plain save stays on the workbench (writing is not done yet)."""
        if "_workbench" not in request.POST:
            return None
        if "_commit" in request.POST and self.has_commit_permission(request):
            self.message_user(request, f"Saved {obj}; review and commit it.", messages.SUCCESS)
            return HttpResponseRedirect(
                reverse("admin:registry_promptversion_commit", args=[obj.pk])
            )
        self.message_user(request, f"Saved {obj}.", messages.SUCCESS)
        return HttpResponseRedirect(version_url(obj.pk))

    # --- list columns and read-only fields ---------------------------------------------------

    @admin.display(description="Version", ordering="number")
    def version_label(self, obj: PromptVersion) -> str:
        return str(obj)

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: PromptVersion) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Message")
    def short_message(self, obj: PromptVersion) -> str:
        return Truncator(obj.message).chars(60)

    @admin.display(description="Translations")
    def translations(self, obj: PromptVersion) -> SafeString:
        return translation_badges(version_translation_status(obj), compact=True)

    @admin.display(description="Translation status")
    def translation_status(self, obj: PromptVersion) -> SafeString:
        return translation_badges(version_translation_status(obj))

    @admin.display(description="Last saved by")
    def written_by(self, obj: PromptVersion) -> str:
        return obj.author_label or "—"

    @admin.display(description="Committed by")
    def committed_by_display(self, obj: PromptVersion) -> str:
        return obj.committed_by_label or "—"

    @admin.display(description="Parent")
    def parent_link(self, obj: PromptVersion) -> SafeString | str:
        if obj.parent is None:
            return "—"
        return format_html('<a href="{}">{}</a>', version_url(obj.parent_id), obj.parent)

    # --- pages and verbs --------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path(
                "workbench/preview/",
                wrap(self.workbench_preview_view),
                name=f"{info}_workbench_preview",
            ),
            path("<path:object_id>/preview/", wrap(self.preview_view), name=f"{info}_preview"),
            path("<path:object_id>/diff/", wrap(self.diff_view), name=f"{info}_diff"),
            path("<path:object_id>/commit/", wrap(self.commit_view), name=f"{info}_commit"),
            path("<path:object_id>/branch/", wrap(self.branch_view), name=f"{info}_branch"),
            path("<path:object_id>/discard/", wrap(self.discard_view), name=f"{info}_discard"),
            path(
                "by-number/<int:prompt_id>/<int:number>/",
                wrap(self.by_number_view),
                name=f"{info}_by_number",
            ),
            *super().get_urls(),
        ]

    def workbench_preview_view(self, request: HttpRequest) -> HttpResponse:
        return workbench.preview(self, request)

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return pages.preview(self, request, object_id)

    def diff_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return pages.diff(self, request, object_id)

    def commit_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return verbs.commit(self, request, object_id)

    @method_decorator(require_POST)
    def branch_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return verbs.branch(self, request, object_id)

    def discard_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return verbs.discard(self, request, object_id)

    def by_number_view(self, request: HttpRequest, prompt_id: int, number: int) -> HttpResponse:
        """``support.refund-reply`` v3 by number, for links that know numbers, not ids."""
        return verbs.by_number(self, request, prompt_id, number)

    @admin.action(permissions=["commit"], description="Commit selected drafts")
    def commit_selected(
        self, request: HttpRequest, queryset: QuerySet[PromptVersion]
    ) -> HttpResponse | None:
        return verbs.commit_selected(self, request, queryset)
