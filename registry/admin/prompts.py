"""The prompt list (a dashboard: a column per environment with what is served) and a prompt's page
(a hub: its versions, where it is released, its datasets, eval runs, calls and A/B results).
Creating and changing a prompt go through the services; the list reads ``prompt_list()``'s
annotations and the apps' column sources (``hub``), so it costs the same queries for 2 prompts or
2,000 (STYLE R13, R16)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timezone import localtime

from registry.actors import Actor
from registry.models import Prompt, PromptVersion
from registry.selectors import prompt_list, version_list
from registry.services import prompt_create, prompt_update
from registry.snippets import snippet_users

from .display import version_by_number_url, version_url
from .errors import ServiceErrorsAsMessages
from .forms import PromptForm
from .hub import Cell, Columns, Link, Panel, prompt_columns, prompt_panels


def versions_url(prompt: Prompt) -> str:
    return f"{reverse('admin:registry_promptversion_changelist')}?prompt__id__exact={prompt.pk}"


def first_version_url(prompt: Prompt) -> str:
    """Where a prompt's first version is written: a new draft of it."""
    return f"{reverse('admin:registry_promptversion_add')}?prompt={prompt.pk}"


def next_step(prompt: Prompt, latest: int | None, draft: int | None) -> Link:
    """The author's next step on a prompt: go on with the open draft, start a draft from the
    latest version (its page has "New draft from this version"), or write the first one."""
    if draft is not None:
        return Link(f"Go on with draft v{draft}", version_by_number_url(prompt.pk, draft), True)
    if latest is not None:
        return Link(
            f"New draft from v{latest}", version_by_number_url(prompt.pk, latest), primary=False
        )
    return Link("Write the first version", first_version_url(prompt), primary=True)


RECENT_VERSIONS = 10


def version_panel(request: HttpRequest, prompt: Prompt) -> Panel:
    """The prompt's most recent versions, newest first, and where to write the next one."""
    versions = list(version_list(prompt=prompt)[: RECENT_VERSIONS + 1])
    return Panel(
        title="Versions",
        headers=["Version", "Status", "Message", "Written by", "Committed"],
        rows=[
            [
                format_html('<a href="{}">v{}</a>', version_url(v.pk), v.number),
                v.get_status_display().lower(),
                Truncator(v.message).chars(80),
                v.author_label or "—",
                localtime(v.committed_at).strftime("%Y-%m-%d %H:%M") if v.committed_at else "—",
            ]
            for v in versions[:RECENT_VERSIONS]
        ],
        links=[Link("Every version", versions_url(prompt))]
        if len(versions) > RECENT_VERSIONS
        else [],
        empty="No version yet: write the first one.",
        order=20,
        note=f"The {RECENT_VERSIONS} most recent." if len(versions) > RECENT_VERSIONS else "",
    )


SNIPPET_USERS_SHOWN = 200


def snippet_users_panel(request: HttpRequest, prompt: Prompt) -> Panel | None:
    """A snippet's page: every version that includes it (drafts too), by prompt, newest first,
    and whether each follows the snippet's stable release or pins a version."""
    if not prompt.is_snippet:
        return None
    uses = snippet_users(snippet=prompt)
    total = uses.count()
    rows: list[list[Cell]] = [
        [
            format_html(
                '<a href="{}">{}</a>',
                reverse("admin:registry_prompt_change", args=[use.version.prompt_id]),
                use.version.prompt.key,
            ),
            format_html('<a href="{}">v{}</a>', version_url(use.version_id), use.version.number),
            use.version.get_status_display().lower(),
            "follows the stable release" if use.pinned is None else f"pins v{use.pinned}",
        ]
        for use in uses[:SNIPPET_USERS_SHOWN]
    ]
    return Panel(
        title="Included by",
        headers=["Prompt", "Version", "Status", "Include"],
        rows=rows,
        empty="No version includes this snippet yet: "
        'write {{ snippet("' + prompt.key + '") }} in a template.',
        order=25,
        note=f"The first {SNIPPET_USERS_SHOWN} of {total}." if total > SNIPPET_USERS_SHOWN else "",
    )


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
    change_form_template = "admin/registry/prompt/change_form.html"
    change_list_template = "admin/registry/prompt/change_list.html"
    # The environments' columns (one per environment, from ``hub``) come after the draft.
    list_display = ["key", "about", "latest_version", "draft_version"]
    search_fields = ["key", "description", "tags"]
    search_help_text = "Part of a key, a description or a tag; several words must all match."
    list_filter = [TagFilter, HasDraftFilter]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prompt]:
        qs = prompt_list()
        ordering = self.get_ordering(request)
        return qs.order_by(*ordering) if ordering else qs

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Prompt], search_term: str
    ) -> tuple[QuerySet[Prompt], bool]:
        # The selector owns what a search matches (key, description, tags), for the API and here;
        # each word narrows the list, as the admin's own search does.
        for word in search_term.split():
            queryset = queryset.filter(pk__in=prompt_list(search=word).values("pk"))
        return queryset, False

    # --- the dashboard: columns from the apps above the registry -------------------------------

    def _columns(self, request: HttpRequest) -> list[Columns]:
        # Asked several times per request (list_display, then the cells): ask the sources once.
        if not hasattr(request, "_registry_prompt_columns"):
            request._registry_prompt_columns = prompt_columns(request)  # type: ignore[attr-defined]
        return request._registry_prompt_columns  # type: ignore[attr-defined]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        extra = [
            self._cell(request, name, title)
            for columns in self._columns(request)
            for name, title in columns.headers
        ]
        return [*self.list_display, *extra]

    @staticmethod
    def _cell(request: HttpRequest, name: str, title: str) -> Callable[[Prompt], Cell]:
        @admin.display(description=title)
        def cell(prompt: Prompt) -> Cell:
            cells: Mapping[tuple[int, str], Cell] = getattr(request, "_registry_prompt_cells", {})
            return cells.get((prompt.pk, name), "—")

        cell.__name__ = name  # the column's CSS class: column-env_production
        return cell

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """The page of prompts, then every extra column's cells for that page at once."""
        changelist = super().get_changelist_instance(request)
        prompts = list(changelist.result_list)
        changelist.result_list = prompts
        cells: dict[tuple[int, str], Cell] = {}
        for columns in self._columns(request):
            cells.update(columns.fill(prompts))
        request._registry_prompt_cells = cells  # type: ignore[attr-defined]
        return changelist

    # --- the prompt's page: a hub ------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        prompt = self.get_object(request, unquote(object_id))
        extra: dict[str, Any] = {}
        if prompt is not None and self.has_view_or_change_permission(request, prompt):
            numbers = prompt_list().filter(pk=prompt.pk).values("latest_number", "draft_number")
            latest = numbers[0] if numbers else {"latest_number": None, "draft_number": None}
            step = next_step(prompt, latest["latest_number"], latest["draft_number"])
            extra = {
                "panels": prompt_panels(request, prompt),
                "next_step": step if self._may_write_versions(request) else None,
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def _may_write_versions(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.add_promptversion")

    def response_add(
        self, request: HttpRequest, obj: Prompt, post_url_continue: str | None = None
    ) -> HttpResponse:
        """After "Save", the prompt's own page, where writing its first version is one click;
        "Save and add another" and the popup keep Django's behaviour."""
        if "_addanother" in request.POST or "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(
            request,
            format_html(
                'The prompt “{}” was added. Next: <a href="{}">write its first version</a>.',
                obj.key,
                first_version_url(obj),
            ),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:registry_prompt_change", args=[obj.pk]))

    def get_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        if obj is None:
            return ["key", "description", "default_locale", "tags", "is_snippet"]
        return [
            "key",
            "default_locale",
            "description",
            "tags",
            "is_snippet",
            "owner",
            "created_at",
            "updated_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        # Services ask for a prompt by key, and every translation's staleness is measured
        # against the default locale: both are fixed once the prompt exists.
        if obj is None:
            return []
        return ["key", "default_locale", "owner", "created_at", "updated_at"]

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
                prompt=obj,
                actor=actor,
                description=data["description"],
                tags=data["tags"],
                is_snippet=data["is_snippet"],
            )
            return
        created = prompt_create(
            key=data["key"],
            actor=actor,
            description=data["description"],
            default_locale=data["default_locale"],
            tags=data["tags"],
            is_snippet=data["is_snippet"],
        )
        # Django goes on with ``obj`` (log entry, redirect, message): make it the saved row.
        obj.pk = created.pk
        obj.refresh_from_db()
        obj._state.adding = False

    # --- columns ----------------------------------------------------------------------------

    @admin.display(description="Description")
    def about(self, obj: Prompt) -> SafeString:
        """The start of the description, and the tags under it."""
        return format_html(
            '<span class="prompt-description">{}</span>{}',
            Truncator(obj.description).chars(70),
            format_html('<br><small class="prompt-tags">{}</small>', " · ".join(obj.tags))
            if obj.tags
            else "",
        )

    @admin.display(description="Latest", ordering="latest_number")
    def latest_version(self, obj: Prompt) -> SafeString | str:
        """The latest committed version, and the count of all of them (the prompt's versions)."""
        count = format_html(
            '<small><a href="{}">{} version{}</a></small>',
            versions_url(obj),
            obj.version_count,
            "" if obj.version_count == 1 else "s",
        )
        if obj.latest_number is None:
            return format_html("—<br>{}", count)
        return format_html(
            '<a href="{}">v{}</a><br>{}',
            version_by_number_url(obj.pk, obj.latest_number),
            obj.latest_number,
            count,
        )

    @admin.display(description="Draft", ordering="draft_number")
    def draft_version(self, obj: Prompt) -> SafeString:
        """The open draft, or where the next one starts: the latest version's page (whose "New
        draft from this version" copies it) or an empty draft."""
        step = next_step(obj, obj.latest_number, obj.draft_number)
        if obj.draft_number is not None:
            return format_html('<a href="{}">v{} (draft)</a>', step.url, obj.draft_number)
        return format_html(
            '<small><a href="{}" title="{}">new draft</a></small>', step.url, step.label
        )
