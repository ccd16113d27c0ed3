"""Release events and environments in the admin.

Release events are the audit log: readable by release managers, changed by nobody. Not even a
superuser gets add, change or delete here, and the database refuses UPDATE and DELETE anyway
(migration 0002); the admin must not offer what would only fail.

Environments are configuration: superusers edit them (who may change releases in each one
included, releases.rights), release managers read them.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from registry.admin.display import guardrails_summary
from registry.admin.forms import OptionalJSONField
from registry.templatetags.registry_display import EMPTY
from releases.models import Environment, ReleaseEvent
from releases.rights import who_may_change
from releases.state import ReleaseState

from .display import changes_html, state_changes, state_summary
from .views import release_url


@admin.register(ReleaseEvent)
class ReleaseEventAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "release_link",
        "revision",
        "action",
        "actor_label",
        "changes",
        "short_reason",
    ]
    list_filter = ["action", "release__environment"]
    list_select_related = ["release__prompt", "release__environment"]
    search_fields = ["release__prompt__key", "actor_label", "reason"]
    show_full_result_count = False
    fields = [
        "release_link",
        "revision",
        "action",
        "actor_label",
        "created_at",
        "reason",
        "gates_overridden",
        "changes",
        "before_state",
        "after_state",
        "restores",
        "schema_version",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ReleaseEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ReleaseEvent | None = None) -> bool:
        return False

    @admin.display(description="Release", ordering="release__prompt__key")
    def release_link(self, event: ReleaseEvent) -> SafeString:
        return format_html('<a href="{}">{}</a>', release_url(event.release_id), event.release)

    @admin.display(description="Change")
    def changes(self, event: ReleaseEvent) -> SafeString | str:
        return changes_html(
            state_changes(ReleaseState.from_dict(event.before), ReleaseState.from_dict(event.after))
        )

    @admin.display(description="Reason")
    def short_reason(self, event: ReleaseEvent) -> str:
        return Truncator(event.reason).chars(80)

    @admin.display(description="Gates overridden")
    def gates_overridden(self, event: ReleaseEvent) -> SafeString | str:
        # The failed gates a release manager released past; the reason says why.
        if not event.overridden_gates:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><b>{}</b> (version {}): {}</li>",
                (
                    (g.get("gate", ""), g.get("version", ""), g.get("detail", ""))
                    for g in event.overridden_gates
                ),
            ),
        )

    @admin.display(description="State before")
    def before_state(self, event: ReleaseEvent) -> str:
        return state_summary(ReleaseState.from_dict(event.before))

    @admin.display(description="State after")
    def after_state(self, event: ReleaseEvent) -> str:
        return state_summary(ReleaseState.from_dict(event.after))


ENVIRONMENT_FIELDS = [
    "name",
    "position",
    "requires_previous_stable",
    "description",
    "release_groups",
    "release_users",
    "requires_review",
    "review_group",
    "approvals_required",
    "change_request_hours",
    "guardrails",
]
GUARDRAILS_HELP = (
    "Optional: checks every run in this environment makes besides its version's own guardrails "
    "(a floor no version can lower), as JSON, e.g. "
    '{"input": {"injection": {"action": "refuse"}, "pii": {"action": "redact"}}, '
    '"output": {"pii": {"action": "redact"}}}. A check\'s action is refuse, redact, flag or '
    "fallback (give the fallback text as fallback). It applies to the next run, in every "
    "process: no deploy. Empty: no floor (docs/guardrails.md)."
)


class EnvironmentForm(forms.ModelForm):
    """The environment's fields; its guardrail floor read as strict JSON (no NaN, which
    PostgreSQL refuses) and checked by ``Environment.clean`` (registry.guardrails), each problem
    at its JSON Pointer."""

    class Meta:
        model = Environment
        fields = ENVIRONMENT_FIELDS
        field_classes = {"guardrails": OptionalJSONField}
        widgets = {"guardrails": forms.Textarea(attrs={"rows": 8, "cols": 80})}
        help_texts = {"guardrails": GUARDRAILS_HELP}
        labels = {"guardrails": "Guardrail floor"}


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    form = EnvironmentForm
    list_display = [
        "name",
        "position",
        "requires_previous_stable",
        "requires_review",
        "who_may_change",
        "guardrail_floor",
    ]
    fields = ENVIRONMENT_FIELDS
    filter_horizontal = ["release_groups", "release_users"]
    ordering = ["position"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Environment]:
        return super().get_queryset(request).prefetch_related("release_groups", "release_users")

    @admin.display(description="Who may change releases")
    def who_may_change(self, environment: Environment) -> str:
        return who_may_change(environment)

    @admin.display(description="Guardrail floor")
    def guardrail_floor(self, environment: Environment) -> str:
        """The floor's checks as "input injection: refuse", or a dash for none."""
        return guardrails_summary(environment.guardrails) or EMPTY

    def get_readonly_fields(self, request: HttpRequest, obj: Environment | None = None) -> list:
        # API keys, SDK bundles, caches and event salts know an environment by its name: renaming
        # one would silently cut them off, so the name is fixed once the environment exists.
        return ["name"] if obj is not None else []

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Environment | None = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Environment | None = None) -> bool:
        return request.user.is_superuser  # releases PROTECT it: the admin lists what blocks
