from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from registry.guardrails import ACTIONS, FALLBACK, FLAG, REDACT, REFUSE
from registry.templatetags.registry_display import count, decimal, money, ms, tokens_in_out
from releases.models import Release

from .admin_display import (
    EMPTY,
    api_key_shown,
    attempts_table,
    call_list_url,
    call_url,
    column_title,
    diff_item,
    guardrails_marker,
    guardrails_table,
    pair_choices,
    pair_view,
    parse_pairs,
    pretty_json,
    report_rows,
    report_url,
    text_block,
    verdict_cell,
)
from .guardrail_records import (
    GUARDRAIL_COUNT_SAMPLE,
    STAGE_CHECKS,
    calls_with_guardrails,
    guardrail_counts,
    stage_check_parse,
)
from .models import Budget, Call, ModelPrice, Provider, ShadowRun, SpendAnomaly
from .selectors import (
    CALL_TEXT_SEARCH_WINDOW,
    MIN_RUNS,
    call_list,
    call_search,
    call_variants,
    prompt_version_numbers,
    shadow_disagreements,
    shadow_report,
    shadow_run_list,
    shadowed_releases,
    structure_differences,
    traffic_calls,
)
from .services import provider_save
from .spend import SPEND_GROUPS, spend_by_day, spend_chart, spend_legend


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    # Timeout and retries share a column: seven columns beside the filter no longer fit 1,400 px.
    list_display = ["name", "base_url", "api_key_env", "limits", "strict", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "base_url"]
    inlines = [ModelPriceInline]
    fieldsets = [
        (None, {"fields": ["name", "base_url", "enabled"]}),
        (
            "Credentials and limits",
            {
                "fields": ["api_key_env", "timeout_seconds", "max_retries"],
                "description": "The key itself stays in the server's environment, never here.",
            },
        ),
        ("Capabilities", {"fields": ["strict_output"]}),
    ]

    @admin.display(description="Limits")
    def limits(self, obj: Provider) -> str:
        return f"{obj.timeout_seconds:g} s, {obj.max_retries} retries"

    @admin.display(boolean=True, description="Strict output", ordering="strict_output")
    def strict(self, obj: Provider) -> bool:
        return obj.strict_output

    def save_model(self, request, obj: Provider, form, change: bool) -> None:
        # Through the service like every other writer (the form has validated the fields).
        saved, _ = provider_save(
            name=obj.name,
            base_url=obj.base_url,
            api_key_env=obj.api_key_env,
            timeout_seconds=obj.timeout_seconds,
            max_retries=obj.max_retries,
            enabled=obj.enabled,
            strict_output=obj.strict_output,
        )
        obj.pk = saved.pk


# --- calls and shadow runs ----------------------------------------------------------------------
#
# Records of what happened: read-only for everyone, superusers included. The runs write them and
# retention deletes them; an edit here would make the record lie. Outputs are untrusted text (model
# answers, redacted inputs): every value goes through format_html or template autoescaping, never
# mark_safe. Reading needs ``runs.view_call`` (the call list) and ``runs.view_shadowrun`` (shadow
# runs); the shadow report needs both.

TEMPLATES = "admin/runs"
# The list filters' time windows, and the report's (which adds "all").
WINDOWS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
}
REPORT_WINDOWS: dict[str, tuple[str, timedelta | None]] = {**WINDOWS, "all": ("All time", None)}
REPORT_WINDOW_DEFAULT = "7d"  # a small sample may need days to reach the verdict's minimum
# The guardrails page's windows: the list filter's, each bounded.
GUARDRAILS_WINDOWS: dict[str, tuple[str, timedelta]] = {
    key: (label, delta) for key, (label, delta) in WINDOWS.items() if delta is not None
}
GUARDRAILS_WINDOW_DEFAULT = "7d"


class RecentFilter(admin.SimpleListFilter):
    """Last hour / 24 hours / 7 days, on the created_at index (cheaper than a date hierarchy,
    which reads the distinct dates of every row)."""

    title = "time"
    parameter_name = "within"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in WINDOWS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        window = WINDOWS.get(self.value() or "")
        if window is None or window[1] is None:
            return queryset
        return queryset.filter(created_at__gte=timezone.now() - window[1])


class VersionFilter(admin.SimpleListFilter):
    """The chosen prompt's versions. Shown once a prompt is chosen: every version of every prompt
    would be a long list, and a number means nothing without its prompt."""

    title = "version"
    parameter_name = "version"
    prompt_parameter = "prompt__id__exact"  # the "prompt" list filter's

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        prompt = request.GET.get(self.prompt_parameter, "")
        if not prompt.isdigit():
            return []
        return [
            (str(pk), f"v{number}") for pk, number in prompt_version_numbers(prompt_id=int(prompt))
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value() or ""
        return queryset.filter(version_id=int(value)) if value.isdigit() else queryset


class VariantFilter(admin.SimpleListFilter):
    title = "variant"
    parameter_name = "variant"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in call_variants()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(variant=self.value()) if self.value() else queryset


class SourceFilter(admin.SimpleListFilter):
    """Release traffic by default (run and reported calls): the playground's runs are shown when
    asked for, by their source or with every call (decision 0036)."""

    title = "source"
    parameter_name = "source"
    EVERY = "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*Call.Source.choices, (self.EVERY, "Every source")]

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        # "All" is not the default here: the default (no parameter) is release traffic.
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Release traffic",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == str(lookup),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return traffic_calls(queryset)
        if value == self.EVERY:
            return queryset
        return queryset.filter(source=value)


class GuardrailFilter(admin.SimpleListFilter):
    """Calls on which a guardrail check fired (decision 0052): any, or one that took an action."""

    title = "guardrails"
    parameter_name = "guardrails"
    ANY = "any"
    LABELS = {
        REFUSE: "A check refused",
        FALLBACK: "Answered with the fallback",
        REDACT: "A check redacted",
        FLAG: "A check flagged",
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.ANY, "Any check fired"), *((a, self.LABELS[a]) for a in ACTIONS)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == self.ANY:
            return calls_with_guardrails(queryset)
        if value in self.LABELS:
            return calls_with_guardrails(queryset, action=value)
        return queryset


class GuardrailCheckFilter(admin.SimpleListFilter):
    """Calls on which one check fired (``input.pii``); with the guardrails filter, one check that
    took that action (the guardrails page links both)."""

    title = "guardrail check"
    parameter_name = "guardrail_check"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(f"{stage}.{check}", f"{stage} {check}") for stage, check in STAGE_CHECKS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        found = stage_check_parse(self.value() or "")
        if found is None:
            return queryset
        stage, check = found
        action = request.GET.get(GuardrailFilter.parameter_name)
        return calls_with_guardrails(
            queryset, stage=stage, check=check, action=action if action in ACTIONS else None
        )


class ShadowedReleaseFilter(admin.SimpleListFilter):
    """Releases that have shadow runs, labelled in the one query that lists them."""

    title = "release"
    parameter_name = "release"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(release.pk), str(release)) for release in shadowed_releases()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value() or ""
        return queryset.filter(release_id=int(value)) if value.isdigit() else queryset


class ReadOnlyRecords:
    """Nobody adds, changes or deletes a record through the admin (see above)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def exact_search(
        self, queryset: QuerySet, search_term: str, field: str
    ) -> tuple[QuerySet, bool]:
        # An exact, case-sensitive match uses the index; the admin's default (icontains on every
        # search field) would scan the table.
        term = search_term.strip()
        return (queryset.filter(**{field: term}) if term else queryset), False


class MeasuredRecords(ReadOnlyRecords):
    """The columns calls and shadow runs share: which version, how long, how many tokens."""

    @admin.display(description="Version", ordering="version__number")
    def version_number(self, record: Call | ShadowRun) -> str:
        return f"v{record.version.number}"

    @admin.display(description="Latency", ordering="latency_ms")
    def latency(self, record: Call | ShadowRun) -> str:
        return ms(record.latency_ms)

    @admin.display(description="Tokens")
    def token_counts(self, record: Call | ShadowRun) -> str:
        return tokens_in_out(record.input_tokens, record.output_tokens)

    @admin.display(description="Cost", ordering="cost")
    def cost_shown(self, record: Call | ShadowRun) -> str:
        return money(record.cost)

    @admin.display(description="When", ordering="created_at")
    def when(self, record: Call | ShadowRun) -> SafeString:
        """Date over time of day: a column half as wide as Django's one-line timestamp."""
        at = timezone.localtime(record.created_at)
        return format_html(
            '<span class="nowrap">{}</span><br><small class="nowrap">{}</small>',
            at.strftime("%Y-%m-%d"),
            at.strftime("%H:%M:%S"),
        )


class ShadowRecords(MeasuredRecords):
    """What a shadow run adds to the measured columns: how close it came to the live answer."""

    @admin.display(description="Similarity", ordering="similarity")
    def similarity_shown(self, run: ShadowRun) -> str:
        return decimal(run.similarity, 3)


class ShadowRunInline(ShadowRecords, admin.TabularInline):
    model = ShadowRun
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "kind",
        "version_number",
        "status",
        "exact_match",
        "similarity_shown",
        "latency",
        "cost_shown",
        "output_excerpt",
        "report",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ShadowRun]:
        return super().get_queryset(request).select_related("version")

    @admin.display(description="Output")
    def output_excerpt(self, run: ShadowRun) -> str:
        return Truncator(run.output).chars(120) or EMPTY

    @admin.display(description="")
    def report(self, run: ShadowRun) -> SafeString:
        return format_html('<a href="{}">Shadow report</a>', report_url(run.release_id))


# Buttons other apps put on a call's page ("Add to a dataset", from evaluations), without runs
# importing them: the dependency points the other way (evaluations imports runs). Each tool
# answers (label, url) for a request and a call, or None when that user may not use it.
CallPageTool = Callable[[HttpRequest, Call], tuple[str, str] | None]
CALL_PAGE_TOOLS: list[CallPageTool] = []


@admin.register(Call)
class CallAdmin(MeasuredRecords, admin.ModelAdmin):
    change_form_template = f"{TEMPLATES}/record_change_form.html"
    # Nine narrow columns: the list fits beside the filters at 1,400 px; under 1,100 the model,
    # variant and environment give way (registry/static/registry/admin/layout.css).
    list_display = [
        "when",
        "prompt_version",
        "environment",
        "variant",
        "status_model",
        "latency",
        "tokens_in_out",
        "cost_shown",
        "feedback_shown",
    ]
    list_filter = [
        RecentFilter,
        "prompt",
        VersionFilter,
        "environment",
        VariantFilter,
        "status",
        SourceFilter,
        "cache",  # answered by the response cache (decision 0050)
        GuardrailFilter,  # a guardrail check fired (decision 0052)
        GuardrailCheckFilter,
    ]
    list_select_related = ["prompt", "version", "environment"]
    search_fields = ["request_id"]  # shows the box; the search itself is call_search's
    search_help_text = (
        "A request id (exactly), a prompt key, a version (v3), or text found in the redacted "
        f"inputs or output of the newest {CALL_TEXT_SEARCH_WINDOW:,} calls the filters select: "
        "narrow by time, prompt or version to search older ones."
    )
    show_full_result_count = False  # the filtered count is enough; skip counting every call
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice reads the whole table
    list_per_page = 50
    inlines = [ShadowRunInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "request_id",
                    "event_id",
                    "created_at",
                    "source",
                    "prompt_link",
                    "version_link",
                    "environment",
                    "variant",
                    "sticky",
                    "release_revision",
                    "locale",
                    "subject_hash",
                ]
            },
        ),
        (
            "Model",
            {
                "fields": [
                    "status",
                    "error_class",
                    "provider",
                    "model",
                    "latency",
                    "first_token",
                    "token_counts",
                    "cost_shown",
                    "schema_valid",
                    "feedback_shown",
                    "cache",
                    "cache_similarity",
                    "cache_skipped",
                ]
            },
        ),
        (
            "Guardrails",
            {
                "fields": ["guardrails_display"],
                "description": "The checks of the version's guardrail policy and of its "
                "environment's floor that fired on this call (docs/guardrails.md). What a check "
                "found never quotes the text it matched.",
            },
        ),
        (
            "Provenance",
            {
                "fields": ["run_by", "reported_by", "feedback_by"],
                "description": "The API key that ran the call (its budget counted it), and those "
                "that vouch for a reported outcome and for feedback; a canary analysis counts "
                "them only if its policy trusts the key.",
            },
        ),
        (
            "Inputs and output",
            {
                "fields": [
                    "inputs_display",
                    "conversation_display",
                    "output_display",
                    "tool_calls_display",
                    "attempts_display",
                ],
                "description": "Stored redacted: what the redaction rules left of them.",
            },
        ),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        return call_list()

    @admin.display(description="Run by")
    def run_by(self, call: Call) -> str:
        """The key whose budget the run counted in (runs.budgets)."""
        return api_key_shown(call.run_by_key_id, call.run_by_key_label)

    @admin.display(description="Reported by")
    def reported_by(self, call: Call) -> str:
        return api_key_shown(call.reported_by_key_id, call.reported_by_key_label)

    @admin.display(description="Feedback by")
    def feedback_by(self, call: Call) -> str:
        return api_key_shown(call.feedback_key_id, call.feedback_key_label)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Call], search_term: str
    ) -> tuple[QuerySet[Call], bool]:
        if not search_term.strip():
            return queryset, False
        return call_search(queryset, search_term), False

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args, **kwargs):
        call = context.get("original")
        tools = [tool(request, call) for tool in CALL_PAGE_TOOLS] if call is not None else []
        context["call_tools"] = [tool for tool in tools if tool is not None]
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="Prompt", ordering="prompt__key")
    def prompt_version(self, call: Call) -> SafeString:
        return format_html(
            '{} <span class="nowrap">v{}</span>', call.prompt.key, call.version.number
        )

    @admin.display(description="Status", ordering="status")
    def status_model(self, call: Call) -> SafeString:
        # The guardrails' note rides in this column: the list has no room for a tenth one.
        return format_html(
            '{}<br><small class="quiet">{}</small>{}',
            call.get_status_display(),
            call.model or "",
            guardrails_marker(call.guardrails),
        )

    @admin.display(description="Tokens in / out")
    def tokens_in_out(self, call: Call) -> str:
        if call.input_tokens is None and call.output_tokens is None:
            return EMPTY
        return f"{count(call.input_tokens or 0)} / {count(call.output_tokens or 0)}"

    @admin.display(description="First token", ordering="time_to_first_token_ms")
    def first_token(self, call: Call) -> str:
        return ms(call.time_to_first_token_ms)

    @admin.display(description="Feedback", ordering="feedback")
    def feedback_shown(self, call: Call) -> str:
        return decimal(call.feedback)

    @admin.display(description="Prompt")
    def prompt_link(self, call: Call) -> SafeString:
        url = reverse("admin:registry_prompt_change", args=[call.prompt_id])
        return format_html('<a href="{}">{}</a>', url, call.prompt.key)

    @admin.display(description="Version")
    def version_link(self, call: Call) -> SafeString:
        url = reverse("admin:registry_promptversion_change", args=[call.version_id])
        return format_html('<a href="{}">v{}</a>', url, call.version.number)

    @admin.display(description="Inputs")
    def inputs_display(self, call: Call) -> SafeString:
        return text_block(pretty_json(call.inputs) if call.inputs else "")

    @admin.display(description="Conversation")
    def conversation_display(self, call: Call) -> SafeString:
        # The messages an OpenAI-compatible caller appended after the prompt's (decision 0042).
        return text_block(pretty_json(call.conversation) if call.conversation else "")

    @admin.display(description="Output")
    def output_display(self, call: Call) -> SafeString:
        return text_block(call.output)

    @admin.display(description="Tool calls")
    def tool_calls_display(self, call: Call) -> SafeString:
        # Redacted when recorded, like the output; escaped by text_block like every value here.
        return text_block(pretty_json(call.tool_calls) if call.tool_calls else "")

    @admin.display(description="Attempts")
    def attempts_display(self, call: Call) -> SafeString | str:
        return attempts_table(call.attempts)

    @admin.display(description="Checks that fired")
    def guardrails_display(self, call: Call) -> SafeString | str:
        return guardrails_table(call.guardrails)

    # --- the guardrails page ---------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("guardrails/", wrap(self.guardrails_view), name=f"{info}_guardrails"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"guardrails_url": reverse("admin:runs_call_guardrails"), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def guardrails_view(self, request: HttpRequest) -> HttpResponse:
        """The guardrail checks that fired on release traffic, per prompt, check and action, over
        a window (the last 7 days by default), each linking to its calls. GET only, reads only."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = request.GET.get("within", "")
        if window not in GUARDRAILS_WINDOWS:
            window = GUARDRAILS_WINDOW_DEFAULT
        label, delta = GUARDRAILS_WINDOWS[window]
        counts = guardrail_counts(since=timezone.now() - delta)
        base = reverse("admin:runs_call_guardrails")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Guardrail checks that fired",
            "window": window,
            "window_label": label,
            "windows": [
                (key, text, f"{base}?within={key}") for key, (text, _) in GUARDRAILS_WINDOWS.items()
            ],
            "counts": counts,
            "rows": [
                (
                    row,
                    call_list_url(
                        prompt__id__exact=row.prompt_id,
                        within=window,
                        guardrails=row.action,
                        guardrail_check=f"{row.stage}.{row.check}",
                    ),
                )
                for row in counts.rows
            ],
            "all_url": call_list_url(within=window, guardrails=GuardrailFilter.ANY),
            "refused_url": call_list_url(within=window, status__exact=Call.Status.REFUSED),
            "sample": GUARDRAIL_COUNT_SAMPLE,
            "calls_url": reverse("admin:runs_call_changelist"),
            "has_view_permission": True,
        }
        return TemplateResponse(request, f"{TEMPLATES}/guardrails.html", context)


@admin.register(ShadowRun)
class ShadowRunAdmin(ShadowRecords, admin.ModelAdmin):
    change_form_template = f"{TEMPLATES}/record_change_form.html"
    list_display = [
        "created_at",
        "release",
        "kind",
        "version_number",
        "status",
        "exact_match",
        "similarity_shown",
        "latency",
        "cost_shown",
        "call_link",
        "report",
    ]
    list_filter = [RecentFilter, ShadowedReleaseFilter, "kind", "status"]
    list_select_related = ["call", "version", "release__prompt", "release__environment"]
    search_fields = ["call__request_id"]
    search_help_text = "The live call's request id, exactly."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "call_link",
                    "release",
                    "report",
                    "kind",
                    "version_number",
                    "status",
                    "error_class",
                    "created_at",
                    "finished_at",
                ]
            },
        ),
        (
            "Compared with the live answer",
            {"fields": ["exact_match", "similarity_shown", "structure_diff_display", "outputs"]},
        ),
        (
            "Model",
            {
                "fields": [
                    "provider",
                    "model",
                    "latency",
                    "token_counts",
                    "cost_shown",
                    "attempts_display",
                ]
            },
        ),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ShadowRun]:
        return shadow_run_list()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ShadowRun], search_term: str
    ) -> tuple[QuerySet[ShadowRun], bool]:
        return self.exact_search(queryset, search_term, "call__request_id")

    def has_report_permission(self, request: HttpRequest) -> bool:
        # The report shows live outputs next to shadow outputs: both records' view permissions.
        return request.user.has_perm("runs.view_call") and request.user.has_perm(
            "runs.view_shadowrun"
        )

    @admin.display(description="Live call")
    def call_link(self, run: ShadowRun) -> SafeString:
        return format_html('<a href="{}">{}</a>', call_url(run.call_id), run.call.request_id)

    @admin.display(description="Report")
    def report(self, run: ShadowRun) -> SafeString:
        return format_html('<a href="{}">Shadow report</a>', report_url(run.release_id))

    @admin.display(description="Differences")
    def structure_diff_display(self, run: ShadowRun) -> SafeString | str:
        items = [diff_item(item) for item in structure_differences(run.structure_diff)]
        if not items:
            return EMPTY
        return format_html(
            '<ul class="runs-diff">{}</ul>',
            format_html_join("", "<li><code>{}</code></li>", ((i,) for i in items)),
        )

    @admin.display(description="Answers")
    def outputs(self, run: ShadowRun) -> SafeString:
        return format_html(
            '<div class="runs-pair"><div><h4>Live (v{})</h4>{}</div><div><h4>{} (v{})</h4>{}</div></div>',
            run.call.version.number,
            text_block(run.call.output),
            run.get_kind_display(),
            run.version.number,
            text_block(run.output),
        )

    @admin.display(description="Attempts")
    def attempts_display(self, run: ShadowRun) -> SafeString | str:
        return attempts_table(run.attempts)

    # --- the shadow report ----------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("report/<int:release_id>/", wrap(self.report_view), name=f"{info}_report"),
            *super().get_urls(),
        ]

    def report_view(self, request: HttpRequest, release_id: int) -> HttpResponse:
        """The release's shadows side by side and the disagreeing pairs; GET only, reads only."""
        if not self.has_report_permission(request):
            raise PermissionDenied
        release = get_object_or_404(
            Release.objects.select_related("prompt", "environment"), pk=release_id
        )
        window = request.GET.get("window", "")
        if window not in REPORT_WINDOWS:
            window = REPORT_WINDOW_DEFAULT
        delta = REPORT_WINDOWS[window][1]
        since = timezone.now() - delta if delta is not None else None
        report = shadow_report(release=release, since=since)
        pairs = pair_choices(report)
        chosen = request.GET.get("pairs", "")
        if chosen not in {value for value, _ in pairs}:
            chosen = pairs[0][0]
        kind, version = parse_pairs(chosen)
        disagreements = shadow_disagreements(
            release=release, version=version, kind=kind, since=since
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Shadow report: {release}",
            "release": release,
            "report": report,
            "since": since,
            "window": window,
            "windows": [
                (key, label, report_url(release.pk, window=key, pairs=chosen))
                for key, (label, _) in REPORT_WINDOWS.items()
            ],
            "columns": [column_title(side) for side in report.sides],
            "rows": report_rows(report),
            "verdicts": [verdict_cell(side) for side in report.sides],
            "pairs": [
                (value, label, report_url(release.pk, window=window, pairs=value))
                for value, label in pairs
            ],
            "chosen_pairs": chosen,
            "disagreements": [pair_view(d) for d in disagreements],
            "release_url": reverse("admin:releases_release_change", args=[release.pk]),
            "runs_url": reverse("admin:runs_shadowrun_changelist") + f"?release={release.pk}",
            "min_runs": MIN_RUNS,
            "has_view_permission": True,
        }
        return TemplateResponse(request, f"{TEMPLATES}/shadow_report.html", context)


# --- budgets and spend (runs.budgets, runs.anomalies, runs.spend; docs/runs.md) -----------------

SPEND_WINDOWS = {"7": 7, "30": 30, "90": 90}


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    """Budgets are edited here; saving one drops every process's copy (runs.budgets). The model's
    ``clean`` refuses a zero limit and a budget of no scope or of two."""

    list_display = ("__str__", *Budget.LIMITS, "enabled", "updated_at")
    list_filter = ("enabled",)
    list_select_related = ("prompt", "environment")
    raw_id_fields = ("prompt",)
    fields = ("api_key_id", "prompt", "environment", *Budget.LIMITS, "enabled", "note")

    def get_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [path("spend/", wrap(self.spend_view), name=f"{info}_spend"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"spend_url": reverse("admin:runs_budget_spend"), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def spend_view(self, request: HttpRequest) -> HttpResponse:
        """Spend per prompt, model or key and UTC day, as a chart; and the spend anomalies of
        the last week (the notices the spend check raised). GET only, reads only."""
        if not (
            request.user.has_perm("runs.view_call") and request.user.has_perm("runs.view_budget")
        ):
            raise PermissionDenied
        by = request.GET.get("by", "prompt")
        if by not in SPEND_GROUPS:
            by = "prompt"
        window = request.GET.get("days", "30")
        if window not in SPEND_WINDOWS:
            window = "30"
        table = spend_by_day(by=by, days=SPEND_WINDOWS[window])
        base = reverse("admin:runs_budget_spend")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Spend",
            "by": by,
            "window": window,
            "groupings": [(key, f"{base}?by={key}&days={window}") for key in SPEND_GROUPS],
            "windows": [(key, f"{base}?by={by}&days={key}") for key in SPEND_WINDOWS],
            "chart": spend_chart(table),
            "legend": spend_legend(table),
            "anomalies": SpendAnomaly.objects.filter(
                day__gte=timezone.now().date() - timedelta(days=7)
            )[:50],
            "budgets_url": reverse("admin:runs_budget_changelist"),
            "has_view_permission": True,
        }
        return TemplateResponse(request, f"{TEMPLATES}/spend.html", context)


@admin.register(SpendAnomaly)
class SpendAnomalyAdmin(admin.ModelAdmin):
    """The spend check's notices (runs.anomalies): read only, kept for the record."""

    list_display = ("subject", "name", "day", "spend", "baseline", "found_at")
    list_filter = ("subject", "day")
    search_fields = ("name",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
