"""Subscriptions, the deliveries queued for them, and each delivery's attempts (the delivery log).

A ``Subscription`` is a receiver's URL, the event types it wants, optional prompt and environment
filters, and the secret its deliveries are signed with (plus the previous one for a while after a
rotation). A ``Delivery`` is one event's message for one subscription: its body as signed and
sent, pending until a 2xx answer (delivered) or until its attempts run out (failed). A
subscription's deliveries leave one at a time, oldest first: ``sending_until`` is a sender's claim
on the subscription, and ``retry_at`` the end of its backoff after a failed attempt.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from registry.events import EventType
from registry.models import Prompt
from releases.models import Environment
from runs.egress import WEBHOOKS, url_refusal

URL_MAX = 2000
ERROR_MAX = 300


class Subscription(models.Model):
    name = models.CharField(
        max_length=100, help_text="Who receives it, for the lists: e.g. Release announcements."
    )
    url = models.URLField(
        max_length=URL_MAX,
        help_text="Where deliveries are POSTed: https, on a public address.",
    )
    event_types = models.JSONField(
        default=list, help_text="The event types sent (registry.events.EventType values)."
    )
    prompt = models.ForeignKey(
        Prompt,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this prompt's events; empty: every prompt's.",
    )
    environment = models.ForeignKey(
        Environment,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only events in this environment (events that belong to none, a commit or an "
        "eval run, still come); empty: every environment's.",
    )
    # ``whsec_`` + base64; kept readable, since every delivery is signed with it.
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    # Set when the sender disabled it (failures in a row, 410 Gone): the admin's notice.
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.TextField(blank=True, editable=False)
    failures_in_a_row = models.PositiveIntegerField(default=0, editable=False)
    retry_at = models.DateTimeField(null=True, blank=True, editable=False)
    sending_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_by_label = models.CharField(max_length=150, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        problems = {}
        # The outbound policy at save time (what the URL says; sending resolves the name too).
        if self.url and (why := url_refusal(self.url, resolve=False, policy=WEBHOOKS)):
            problems["url"] = why
        known = set(EventType.values)
        if not isinstance(self.event_types, list) or not self.event_types:
            problems["event_types"] = "Choose at least one event type."
        elif unknown := [t for t in self.event_types if t not in known]:
            problems["event_types"] = f"Unknown event types: {', '.join(map(str, unknown))}."
        if problems:
            raise ValidationError(problems)


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    # The ``webhook-id``: one per event (every subscription's delivery of it, every attempt and
    # every redelivery carry it), so a receiver can drop what it has already processed.
    message_id = models.CharField(max_length=40)
    # No ``choices``: a new event type would then need a migration (EventType is the one list).
    event_type = models.CharField(max_length=40)
    body = models.TextField(help_text="The envelope exactly as signed and sent.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    # The last attempt's answer, for the list (every attempt is in DeliveryAttempt).
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=ERROR_MAX, blank=True)
    redelivery_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The sender's queue: a subscription's pending deliveries, oldest first.
            models.Index(
                fields=["subscription", "id"],
                condition=Q(status="pending"),
                name="delivery_pending_queue",
            ),
            # The log's pruning and the lists: a subscription's deliveries, newest first.
            models.Index(fields=["subscription", "-id"], name="delivery_subscription_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.subscription_id} ({self.status})"


class DeliveryAttempt(models.Model):
    class Outcome(models.TextChoices):
        DELIVERED = "delivered", "Delivered (2xx)"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused by the outbound policy"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="None: not sent.")
    response_excerpt = models.TextField(blank=True)
    error = models.CharField(max_length=ERROR_MAX, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_unique_number")
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} ({self.outcome})"
