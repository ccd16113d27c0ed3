"""The webhooks' admin: subscriptions (the URL checked on save, the event types as checkboxes,
the secret shown once, rotated on its own page, a notice when the sender disabled one) and the
delivery log (filters, each attempt's answer, redelivery). Every change goes through
``webhooks.services`` (STYLE R2, R13); the log is read-only, superusers included."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from registry.actors import Actor
from registry.events import EventType
from runs.admin import ReadOnlyRecords

from .models import Delivery, DeliveryAttempt, Subscription
from .services import (
    delivery_redeliver,
    subscription_create,
    subscription_enable,
    subscription_secret_rotate,
    subscription_update,
)

RECENT_DELIVERIES = 10
TEMPLATES = "admin/webhooks"


class SubscriptionForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Each event's data is described in docs/webhooks.md.",
    )

    class Meta:
        model = Subscription
        fields = ["name", "url", "event_types", "prompt", "environment", "enabled"]


def _disabled_notice(subscription: Subscription) -> str:
    when = (
        subscription.disabled_at.strftime("%Y-%m-%d %H:%M UTC") if subscription.disabled_at else ""
    )
    return (
        f"Disabled by the sender on {when}: {subscription.disabled_reason} Its pending deliveries "
        "wait; fix the receiver, then enable it again to send them, oldest first."
    )


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ["name", "url", "events_shown", "filters_shown", "state_shown"]
    list_filter = ["enabled", "environment"]
    list_select_related = ["prompt", "environment"]
    search_fields = ["name", "url"]
    autocomplete_fields = ["prompt"]
    readonly_fields = ["secret_shown", "recent_deliveries"]
    actions = ["enable_selected"]
    fieldsets = [
        (None, {"fields": ["name", "url", "enabled"]}),
        ("What it receives", {"fields": ["event_types", "prompt", "environment"]}),
        ("Signing", {"fields": ["secret_shown"]}),
        ("Delivery log", {"fields": ["recent_deliveries"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Subscription | None = None):
        # A new subscription has no secret yet (the server makes it on save) and no log.
        return self.fieldsets[:2] if obj is None else self.fieldsets

    @admin.display(description="Event types")
    def events_shown(self, subscription: Subscription) -> str:
        return ", ".join(subscription.event_types)

    @admin.display(description="Filters")
    def filters_shown(self, subscription: Subscription) -> str:
        prompt = subscription.prompt.key if subscription.prompt else "every prompt"
        environment = (
            subscription.environment.name if subscription.environment else "every environment"
        )
        return f"{prompt}, {environment}"

    @admin.display(description="State", ordering="enabled")
    def state_shown(self, subscription: Subscription) -> SafeString | str:
        if subscription.enabled:
            return "On"
        if subscription.disabled_reason:
            return format_html(
                '<strong style="color: var(--error-fg)">Disabled: {}</strong>',
                subscription.disabled_reason,
            )
        return "Off"

    @admin.display(description="Secret")
    def secret_shown(self, subscription: Subscription) -> SafeString:
        # Never the secret itself: it was shown once, when it was made.
        rotate = reverse("admin:webhooks_subscription_rotate", args=[subscription.pk])
        rotating = ""
        if subscription.previous_secret and subscription.previous_secret_until:
            until = subscription.previous_secret_until.strftime("%Y-%m-%d %H:%M UTC")
            rotating = f" The previous secret also signs until {until}."
        return format_html(
            "Shown once, when it was made.{} <a href='{}'>Rotate the secret…</a>", rotating, rotate
        )

    @admin.display(description="Recent deliveries")
    def recent_deliveries(self, subscription: Subscription) -> SafeString:
        deliveries = subscription.deliveries.order_by("-id")[:RECENT_DELIVERIES]
        log = (
            reverse("admin:webhooks_delivery_changelist")
            + f"?subscription__id__exact={subscription.pk}"
        )
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:webhooks_delivery_change", args=[d.pk]),
                    d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    d.event_type,
                    d.get_status_display(),
                    d.last_status_code or "—",
                    d.last_error or "",
                )
                for d in deliveries
            ),
        )
        return format_html(
            "<table><thead><tr><th>Queued</th><th>Event</th><th>Status</th><th>Answer</th>"
            "<th>Error</th></tr></thead><tbody>{}</tbody></table><p><a href='{}'>The whole log</a></p>",
            rows,
            log,
        )

    def save_model(self, request: HttpRequest, obj: Subscription, form, change: bool) -> None:
        # Through the services like every other writer (the form has validated the fields).
        actor = Actor.for_user(request.user)
        values = {
            "name": obj.name,
            "url": obj.url,
            "event_types": obj.event_types,
            "prompt": obj.prompt,
            "environment": obj.environment,
            "actor": actor,
        }
        if change:
            subscription_update(subscription_id=obj.pk, enabled=obj.enabled, **values)
            return
        saved, secret = subscription_create(enabled=obj.enabled, **values)
        obj.pk, obj.secret = saved.pk, secret

    def response_add(self, request: HttpRequest, obj: Subscription, post_url_continue=None):
        self.message_user(request, f"The subscription “{obj}” was added.", messages.SUCCESS)
        return self._secret_page(request, obj, obj.secret, "Its signing secret")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        subscription = self.get_object(request, unquote(object_id))
        if subscription is not None and not subscription.enabled and subscription.disabled_reason:
            self.message_user(request, _disabled_notice(subscription), messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if request.method == "GET":
            for subscription in Subscription.objects.filter(enabled=False).exclude(
                disabled_reason=""
            ):
                self.message_user(
                    request, f"{subscription}: {_disabled_notice(subscription)}", messages.WARNING
                )
        return super().changelist_view(request, extra_context)

    @admin.action(permissions=["change"], description="Enable again (sends what waited)")
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        actor = Actor.for_user(request.user)
        for subscription in queryset.filter(enabled=False):
            subscription_enable(subscription_id=subscription.pk, actor=actor)
            self.log_change(request, subscription, "Enabled again.")
        self.message_user(
            request, "Enabled: their pending deliveries are being sent.", messages.SUCCESS
        )

    # --- the secret ------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/rotate/",
                wrap(self.rotate_view),
                name="webhooks_subscription_rotate",
            ),
            *super().get_urls(),
        ]

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: what a rotation does; POST: rotate, and show the new secret once."""
        subscription = self.get_object(request, unquote(object_id))
        if subscription is None:
            raise Http404("No such subscription.")
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        if request.method == "POST":
            secret = subscription_secret_rotate(
                subscription_id=subscription.pk, actor=Actor.for_user(request.user)
            )
            self.log_change(request, subscription, "Secret rotated.")
            return self._secret_page(request, subscription, secret, "Its new signing secret")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": subscription,
            "title": "Rotate the signing secret",
            "subtitle": str(subscription),
            "has_view_permission": True,
        }
        return TemplateResponse(request, f"{TEMPLATES}/subscription/rotate.html", context)

    def _secret_page(
        self, request: HttpRequest, subscription: Subscription, secret: str, title: str
    ) -> HttpResponse:
        # Rendered in the answer to the POST, never redirected to: a secret in a message would be
        # kept in the session or a cookie, and a page reloaded would show it again.
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": subscription,
            "title": title,
            "subtitle": str(subscription),
            "secret": secret,
            "has_view_permission": True,
        }
        response = TemplateResponse(request, f"{TEMPLATES}/subscription/secret.html", context)
        response["Cache-Control"] = "no-store"
        return response


# --- the delivery log ---------------------------------------------------------------------------


class DeliveryAttemptInline(ReadOnlyRecords, admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    fields = [
        "number",
        "attempted_at",
        "outcome",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    ]
    readonly_fields = fields


# Records of what was sent: the sender writes them, the log's bound prunes them, nobody edits them.
@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyRecords, admin.ModelAdmin):
    list_display = [
        "created_at",
        "subscription",
        "event_type",
        "status",
        "attempt_count",
        "last_status_code",
        "last_error",
        "message_id",
    ]
    list_filter = ["status", "event_type", "subscription"]
    list_select_related = ["subscription"]
    search_fields = ["=message_id"]
    show_full_result_count = False
    inlines = [DeliveryAttemptInline]
    fields = [
        "subscription",
        "event_type",
        "message_id",
        "status",
        "attempt_count",
        "created_at",
        "finished_at",
        "redelivery_of",
        "body",
    ]
    readonly_fields = fields
    actions = ["redeliver_selected"]

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.change_subscription")

    @admin.action(permissions=["redeliver"], description="Redeliver (same webhook-id)")
    def redeliver_selected(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        actor = Actor.for_user(request.user)
        # Oldest first, so the receiver gets them in the order they first happened.
        chosen = list(queryset.order_by("id").values_list("pk", flat=True))
        for pk in chosen:
            delivery_redeliver(delivery_id=pk, actor=actor)
        self.message_user(
            request,
            f"{len(chosen)} deliver{'y' if len(chosen) == 1 else 'ies'} queued again, at the back "
            "of their subscriptions' queues.",
            messages.SUCCESS,
        )
