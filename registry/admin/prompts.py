"""The prompt list and a prompt's page. Creating and changing a prompt go through the services;
the list reads ``prompt_list()``'s annotations, so it costs the same queries for 2 prompts or 2,000
(STYLE R13, R16)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import Form
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from registry.actors import Actor
from registry.models import Prompt, PromptVersion
from registry.selectors import prompt_list, version_list
from registry.services import prompt_create, prompt_update

from .display import version_by_number_url, version_url
from .errors import ServiceErrorsAsMessages
from .forms import PromptForm


def versions_url(prompt: Prompt) -> str:
    return f"{reverse('admin:registry_promptversion_changelist')}?prompt__id__exact={prompt.pk}"


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        # One query over the tags column; a registry has tens of tags, not thousands.
        tags = {tag for row in Prompt.objects.values_list("tags", flat=True) for tag in row or ()}
        return [(tag, tag) for tag in sorted(tags)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> QuerySet[Prompt]:
        if not self.value():
            return queryset
        # The selector owns how a tag matches (JSON containment is not portable to SQLite).
        return queryset.filter(pk__in=prompt_list(tag=self.value()).values("pk"))


class HasDraftFilter(admin.SimpleListFilter):
    title = "draft"
    parameter_name = "has_draft"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Has a draft"), ("no", "No draft")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> QuerySet[Prompt]:
        if self.value() == "yes":
            return queryset.filter(draft_number__isnull=False)
        if self.value() == "no":
            return queryset.filter(draft_number__isnull=True)
        return queryset


@admin.register(Prompt)
class PromptAdmin(ServiceErrorsAsMessages, admin.ModelAdmin):
    form = PromptForm
    list_display = [
        "key",
        "short_description",
        "default_locale",
        "tag_list",
        "latest_version",
        "draft_version",
        "updated_at",
        "links",
    ]
    search_fields = ["key", "description"]
    list_filter = [TagFilter, HasDraftFilter]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prompt]:
        qs = prompt_list()
        ordering = self.get_ordering(request)
        return qs.order_by(*ordering) if ordering else qs

    def get_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        if obj is None:
            return ["key", "description", "default_locale", "tags"]
        return [
            "key",
            "default_locale",
            "description",
            "tags",
            "owner",
            "created_at",
            "updated_at",
            "versions",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        # Services ask for a prompt by key, and every translation's staleness is measured
        # against the default locale: both are fixed once the prompt exists.
        if obj is None:
            return []
        return ["key", "default_locale", "owner", "created_at", "updated_at", "versions"]

    def has_delete_permission(self, request: HttpRequest, obj: Prompt | None = None) -> bool:
        # Committed versions are history, and PostgreSQL refuses to delete them (migration 0002).
        if (
            obj is not None
            and version_list(prompt=obj).filter(status=PromptVersion.Status.COMMITTED).exists()
        ):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Prompt, form: Form, change: bool) -> None:
        data = form.cleaned_data
        actor = Actor.for_user(request.user)
        if change:
            prompt_update(
                prompt=obj, actor=actor, description=data["description"], tags=data["tags"]
            )
            return
        created = prompt_create(
            key=data["key"],
            actor=actor,
            description=data["description"],
            default_locale=data["default_locale"],
            tags=data["tags"],
        )
        # Django goes on with ``obj`` (log entry, redirect, message): make it the saved row.
        obj.pk = created.pk
        obj.refresh_from_db()
        obj._state.adding = False

    # --- columns ----------------------------------------------------------------------------

    @admin.display(description="Description")
    def short_description(self, obj: Prompt) -> str:
        return Truncator(obj.description).chars(80)

    @admin.display(description="Tags")
    def tag_list(self, obj: Prompt) -> str:
        return ", ".join(obj.tags or ())

    @admin.display(description="Latest", ordering="latest_number")
    def latest_version(self, obj: Prompt) -> SafeString | str:
        if obj.latest_number is None:
            return "—"
        return format_html(
            '<a href="{}">v{}</a>',
            version_by_number_url(obj.pk, obj.latest_number),
            obj.latest_number,
        )

    @admin.display(description="Draft", ordering="draft_number")
    def draft_version(self, obj: Prompt) -> SafeString | str:
        if obj.draft_number is None:
            return "—"
        return format_html(
            '<a href="{}">v{} (draft)</a>',
            version_by_number_url(obj.pk, obj.draft_number),
            obj.draft_number,
        )

    @admin.display(description="")
    def links(self, obj: Prompt) -> SafeString:
        """Its versions, and where a new draft starts: the open draft, the latest version's page
        (whose "New draft from this version" copies it) or an empty draft."""
        versions = format_html(
            '<a href="{}">{} version{}</a>',
            versions_url(obj),
            obj.version_count,
            "" if obj.version_count == 1 else "s",
        )
        if obj.draft_number is not None:
            return versions
        if obj.latest_number is not None:
            start = format_html(
                '<a href="{}">new draft from v{}</a>',
                version_by_number_url(obj.pk, obj.latest_number),
                obj.latest_number,
            )
        else:
            add = reverse("admin:registry_promptversion_add")
            start = format_html('<a href="{}?prompt={}">new draft</a>', add, obj.pk)
        return format_html("{} · {}", versions, start)

    @admin.display(description="Versions")
    def versions(self, obj: Prompt) -> SafeString:
        rows = format_html_join(
            "",
            '<li><a href="{}">v{}</a> {} — {}</li>',
            (
                (
                    version_url(v.pk),
                    v.number,
                    v.get_status_display().lower(),
                    Truncator(v.message).chars(80),
                )
                for v in version_list(prompt=obj)
            ),
        )
        return format_html('<ul style="margin-left:0">{}</ul>{}', rows, self.links(obj))
