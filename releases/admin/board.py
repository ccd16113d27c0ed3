"""The release board: the changelist of ``Release``, one environment at a time.

Every prompt released in the environment with its stable version, canary (version @ percent, as a
bar), experiment, shadows, revision and last change, and the verbs as links to their confirmation
pages. The list costs the same queries for 2 releases or 2,000 (STYLE R13, R16): versions are
joined, the latest event is prefetched in one query, and no column reads anything else.

Releases are never added or edited through a ModelForm: the release page is read-only, and every
change goes through a verb's confirmation page and its service.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timesince import timesince

from releases.models import Environment, Release
from releases.rights import ReleaseRights, user_release_rights, who_may_change
from releases.selectors import environment_list, release_board, schedules_active_by_release
from releases.state import release_state

from . import schedules, views
from .display import canary_cell, experiment_cell, shadow_cell
from .scheduled import pending_text
from .verbs import VERBS


class EnvironmentFilter(admin.SimpleListFilter):
    """The board shows one environment: the one asked for, or the last in promotion order
    (production), where a release manager looks first. There is no "All": the columns only mean
    something side by side within one environment."""

    title = "environment"
    parameter_name = "environment"

    def __init__(self, request: HttpRequest, params: dict, model: Any, model_admin: Any) -> None:
        self.environments: list[Environment] = list(environment_list())  # one query, a few rows
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(e.name, e.name) for e in self.environments]

    def value(self) -> str | None:
        default = self.environments[-1].name if self.environments else None
        return super().value() or default

    @property
    def environment(self) -> Environment | None:
        return next((e for e in self.environments if e.name == self.value()), None)

    def choices(self, changelist: ChangeList) -> Any:
        for name, title in self.lookup_choices:
            yield {
                "selected": self.value() == name,
                "query_string": changelist.get_query_string(
                    {self.parameter_name: name}, remove=["p"]
                ),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Release]) -> QuerySet[Release]:
        environment = self.environment
        return queryset.none() if environment is None else queryset.filter(environment=environment)


def rights_sentence(rights: ReleaseRights) -> str:
    """What the board's user may do in its environment, and why not where they may not."""
    if rights.deploy and rights.rollback:
        return "You may change releases here and roll them back."
    if rights.deploy:
        return f"You may change releases here but not roll them back: {rights.rollback_refusal}"
    if rights.rollback:
        return f"You may roll releases back here, nothing more: {rights.deploy_refusal}"
    return f"You may look only: {rights.deploy_refusal}"


def stop(release: Release) -> views.Link:
    return views.Link("Stop experiment", views.verb_url("experiment_stop", release.pk))


def button_links(links: list[views.Link]) -> SafeString:
    return format_html_join(
        " ",
        '<a role="button" class="button release-verb{}" href="{}">{}</a>',
        ((" default" if link.primary else "", link.url, link.label) for link in links),
    )


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    change_list_template = "admin/releases/release/board.html"
    list_filter = [EnvironmentFilter]
    list_display_links = None  # the prompt column links to the release and its history itself
    list_select_related = ["prompt", "environment", "stable_version", "canary_version"]
    search_fields = ["prompt__key"]
    ordering = ["prompt__key"]
    list_per_page = 50
    show_full_result_count = False  # the filtered count is enough; skip counting every release
    actions = ["rollback_selected", "abort_selected_canaries"]

    # --- permissions ------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a release appears with its first deploy ("Deploy a prompt")

    def has_change_permission(self, request: HttpRequest, obj: Release | None = None) -> bool:
        return False  # changes are verbs with confirmation pages, never a ModelForm save

    def has_delete_permission(self, request: HttpRequest, obj: Release | None = None) -> bool:
        return False  # a release's history refers to it; PROTECT refuses anyway

    # With a release (``obj``), the environment's release rights too (releases.rights): the
    # board and the pages offer only what the service would accept from this user.

    def has_deploy_permission(self, request: HttpRequest, obj: Release | None = None) -> bool:
        allowed = self._has(request, "deploy")
        return allowed and (obj is None or self.rights(request, obj.environment).deploy)

    def has_rollback_permission(self, request: HttpRequest, obj: Release | None = None) -> bool:
        allowed = self._has(request, "rollback")
        return allowed and (obj is None or self.rights(request, obj.environment).rollback)

    def has_verb_permission(
        self, request: HttpRequest, permission: str, obj: Release | None = None
    ) -> bool:
        return {"deploy": self.has_deploy_permission, "rollback": self.has_rollback_permission}[
            permission
        ](request, obj)

    def _has(self, request: HttpRequest, action: str) -> bool:
        codename = get_permission_codename(action, self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def rights(self, request: HttpRequest, environment: Environment) -> ReleaseRights:
        """What the user may do in ``environment``, read once per request and environment."""
        cache = request.__dict__.setdefault("_release_rights", {})
        if environment.pk not in cache:
            cache[environment.pk] = user_release_rights(user=request.user, environment=environment)
        return cache[environment.pk]

    # --- the board --------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Release]:
        return release_board()

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        # The buttons depend on the user's permissions and the environment's rights; a closure
        # keeps them per request (one ModelAdmin instance serves every request).
        @admin.display(description="")
        def buttons(release: Release) -> SafeString:
            deploy = self.has_deploy_permission(request, release)
            rollback = self.has_rollback_permission(request, release)
            state = release_state(release)
            links = views.verb_links(release, state, deploy=deploy, rollback=rollback, compact=True)
            if deploy and state.experiment is not None:
                # A running experiment ends from its row too: the confirmation page picks the
                # winner (or none) and shows who moves before it applies.
                back = views.verb_url("rollback", release.pk)
                at = next((i for i, link in enumerate(links) if link.url == back), len(links))
                links.insert(at, stop(release))  # before "Roll back", which stays last
            return button_links(links)

        return [
            "prompt_links",
            "stable",
            "canary",
            "experiment",
            "shadows",
            "revision",
            "last_change",
            buttons,
        ]

    @admin.display(description="Prompt", ordering="prompt__key")
    def prompt_links(self, release: Release) -> SafeString:
        return format_html(
            '<a href="{}"><strong>{}</strong></a><br><a class="release-history-link" href="{}">'
            "history</a>",
            views.release_url(release.pk),
            release.prompt.key,
            views.prompt_history_url(release.prompt_id),
        )

    @admin.display(description="Stable", ordering="stable_version__number")
    def stable(self, release: Release) -> str:
        return str(release.stable_version.number) if release.stable_version_id else "—"

    @admin.display(description="Canary", ordering="canary_weight")
    def canary(self, release: Release) -> SafeString | str:
        return canary_cell(release_state(release).canary)

    @admin.display(description="Experiment", ordering="experiment_name")
    def experiment(self, release: Release) -> SafeString | str:
        return experiment_cell(release_state(release).experiment)

    @admin.display(description="Shadows")
    def shadows(self, release: Release) -> SafeString | str:
        return shadow_cell(release_state(release).shadow)

    @admin.display(description="Last change · next", ordering="updated_at")
    def last_change(self, release: Release) -> SafeString | str:
        """The last change, and the next one when a schedule has it (one column: the board's
        verbs must stay on screen at 800 pixels)."""
        event = release.latest_events[0] if getattr(release, "latest_events", None) else None
        last = (
            format_html(
                '{}<br><small title="{}">{} · {} ago{}</small>',
                event.get_action_display(),
                event.created_at.isoformat(),
                event.actor_label,
                timesince(event.created_at, depth=1),
                format_html(" · “{}”", Truncator(event.reason).chars(60)) if event.reason else "",
            )
            if event is not None
            else "—"
        )
        # ``active_schedule`` is set on the page's rows by ``changelist_view`` (two queries).
        scheduled = pending_text(getattr(release, "active_schedule", None))
        if not scheduled:
            return last
        return format_html(
            '{}<br><small class="release-scheduled">Next: <a href="{}">{}</a></small>',
            last,
            views.release_url(release.pk),
            scheduled,
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and "cl" in (response.context_data or {}):
            # The environment switcher above the board reads the filter the changelist built.
            cl = response.context_data["cl"]
            # The page's rows are read (the template renders later): their active schedules
            # in two queries, whatever the number of rows.
            active = schedules_active_by_release(cl.result_list)
            for release in cl.result_list:
                release.active_schedule = active.get((release.prompt_id, release.environment_id))
            spec = next(s for s in cl.filter_specs if isinstance(s, EnvironmentFilter))
            environment = spec.environment
            rights = self.rights(request, environment) if environment else None
            response.context_data.update(
                environment_tabs=list(spec.choices(cl)),
                environment=environment,
                can_deploy=bool(self.has_deploy_permission(request) and rights and rights.deploy),
                # Who may change this environment, and what this user may do in it.
                releasers=who_may_change(environment) if environment else "",
                your_rights=rights_sentence(rights) if rights else "",
            )
        return response

    # --- pages ------------------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return views.release_page(self, request, object_id)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The release's history is its event timeline, on the release page; not LogEntry.
        return HttpResponseRedirect(reverse("admin:releases_release_change", args=[object_id]))

    def get_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        own = [
            path("deploy/", wrap(partial(views.deploy_prompt, self)), name=f"{info}_deploy_prompt"),
            path(
                "prompt/<int:prompt_id>/history/",
                wrap(partial(views.prompt_history, self)),
                name=f"{info}_prompt_history",
            ),
        ]
        own += [
            path(
                "<path:object_id>/schedule/",
                wrap(partial(schedules.schedule_page, self)),
                name=f"{info}_schedule",
            ),
            path(
                "<path:object_id>/schedule/cancel/",
                wrap(partial(schedules.schedule_cancel_page, self)),
                name=f"{info}_schedule_cancel",
            ),
        ]
        own += [
            path(
                f"<path:object_id>/{name.replace('_', '-')}/",
                wrap(partial(views.verb_page, self, verb=name)),
                name=f"{info}_{name}",
            )
            for name in VERBS
        ]
        return own + super().get_urls()

    # --- changelist actions -----------------------------------------------------------------

    @admin.action(permissions=["rollback"], description="Roll back selected releases")
    def rollback_selected(
        self, request: HttpRequest, queryset: QuerySet[Release]
    ) -> HttpResponse | None:
        return views.confirm_selected(self, request, queryset, VERBS["rollback"])

    @admin.action(permissions=["deploy"], description="Abort selected canaries")
    def abort_selected_canaries(
        self, request: HttpRequest, queryset: QuerySet[Release]
    ) -> HttpResponse | None:
        return views.confirm_selected(self, request, queryset, VERBS["canary_abort"])
