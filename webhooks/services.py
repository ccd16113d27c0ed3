"""Subscriptions and deliveries: the writes (STYLE R1).

- ``event_deliveries_queue`` is the ``registry.events`` listener: inside the transaction that
  made the change, one pending delivery per enabled subscription that wants the event; after
  commit, a send per subscription (``webhooks.sending``).
- ``subscription_create`` / ``subscription_update`` check the URL against the outbound policy
  (``Subscription.clean``) and never take a secret from outside: the server makes it, and shows
  it once (``subscription_create`` and ``subscription_secret_rotate`` return it).
- ``subscription_enable`` undoes a disabling (the sender's or a person's) and sends what waited.
- ``delivery_redeliver`` queues a delivery's message again, with the same ``webhook-id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from registry.actors import Actor
from registry.events import Event
from registry.models import Prompt
from releases.models import Environment

from .models import Delivery, Subscription
from .sending import send_queue
from .signing import message_id_new, secret_new

logger = logging.getLogger(__name__)


# --- events -------------------------------------------------------------------------------------


def envelope(event: Event) -> str:
    """The body every subscription gets: ``{type, timestamp, data}`` (the specification's
    payload structure), compact JSON; the timestamp is when the event happened."""
    return json.dumps(
        {"type": str(event.type), "timestamp": event.occurred_at, "data": event.data},
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def subscriptions_wanting(event: Event) -> list[int]:
    """The enabled subscriptions whose event types and filters take ``event``. An event of no
    environment passes an environment filter (a commit, an eval run: they happen before any
    environment); an event of no prompt passes only subscriptions with no prompt filter."""
    found = Subscription.objects.filter(enabled=True)
    if event.prompt_id is None:
        found = found.filter(prompt__isnull=True)
    else:
        found = found.filter(Q(prompt__isnull=True) | Q(prompt_id=event.prompt_id))
    if event.environment is not None:
        found = found.filter(Q(environment__isnull=True) | Q(environment__name=event.environment))
    # Matched here rather than in SQL: JSON containment is PostgreSQL's, and the embedded default
    # runs on SQLite. Subscriptions are few.
    return [pk for pk, types in found.values_list("pk", "event_types") if event.type in types]


def event_deliveries_queue(event: Event) -> None:
    """The ``registry.events`` listener (see the module docstring). One ``webhook-id`` per
    event: a receiver subscribed twice can tell it is the same event."""
    wanting = subscriptions_wanting(event)
    if not wanting:
        return
    message_id, body = message_id_new(), envelope(event)
    Delivery.objects.bulk_create(
        Delivery(subscription_id=pk, message_id=message_id, event_type=event.type, body=body)
        for pk in wanting
    )
    transaction.on_commit(partial(sends_queue, subscription_ids=wanting))


def sends_queue(*, subscription_ids: Sequence[int]) -> None:
    for pk in subscription_ids:
        send_queue(pk)


# --- subscriptions ------------------------------------------------------------------------------


def subscription_create(
    *,
    name: str,
    url: str,
    event_types: Sequence[str],
    actor: Actor,
    prompt: Prompt | None = None,
    environment: Environment | None = None,
    enabled: bool = True,
) -> tuple[Subscription, str]:
    """A subscription with a new secret; returns both, the secret to show once."""
    subscription = Subscription(
        enabled=enabled,
        name=name,
        url=url,
        event_types=list(event_types),
        prompt=prompt,
        environment=environment,
        secret=secret_new(),
        created_by_label=actor.label,
    )
    subscription.full_clean()
    subscription.save()
    logger.info(
        "Webhook subscription created: subscription=%s actor=%s", subscription.pk, actor.label
    )
    return subscription, subscription.secret


@transaction.atomic
def subscription_update(
    *,
    subscription_id: int,
    name: str,
    url: str,
    event_types: Sequence[str],
    prompt: Prompt | None,
    environment: Environment | None,
    enabled: bool,
    actor: Actor,
) -> Subscription:
    """Changes what a subscription receives and where. Turning it on is ``subscription_enable``;
    turning it off keeps its pending deliveries for when it is on again."""
    locked = Subscription.objects.select_for_update().get(pk=subscription_id)
    locked.name, locked.url, locked.event_types = name, url, list(event_types)
    locked.prompt, locked.environment = prompt, environment
    locked.full_clean()
    fields = ["name", "url", "event_types", "prompt", "environment", "updated_at"]
    if locked.enabled and not enabled:
        locked.enabled, locked.disabled_at, locked.disabled_reason = False, timezone.now(), ""
        fields += ["enabled", "disabled_at", "disabled_reason"]
    locked.save(update_fields=fields)
    if enabled and not locked.enabled:
        return subscription_enable(subscription_id=locked.pk, actor=actor)
    logger.info("Webhook subscription changed: subscription=%s actor=%s", locked.pk, actor.label)
    return locked


@transaction.atomic
def subscription_enable(*, subscription_id: int, actor: Actor) -> Subscription:
    """On again, with a clean slate (no failures in a row, no backoff); its pending deliveries
    leave after commit, oldest first."""
    locked = Subscription.objects.select_for_update().get(pk=subscription_id)
    if locked.enabled:
        return locked
    locked.enabled, locked.disabled_at, locked.disabled_reason = True, None, ""
    locked.failures_in_a_row, locked.retry_at = 0, None
    locked.save(
        update_fields=[
            "enabled",
            "disabled_at",
            "disabled_reason",
            "failures_in_a_row",
            "retry_at",
            "updated_at",
        ]
    )
    transaction.on_commit(partial(send_queue, locked.pk))
    logger.info("Webhook subscription enabled: subscription=%s actor=%s", locked.pk, actor.label)
    return locked


@transaction.atomic
def subscription_secret_rotate(*, subscription_id: int, actor: Actor) -> str:
    """A new secret, returned to show once. The one it replaces still signs every delivery (a
    second signature) for ``WEBHOOK_SECRET_ROTATION_HOURS``, so the receiver can switch without
    refusing anything; a secret two rotations old signs nothing."""
    locked = Subscription.objects.select_for_update().get(pk=subscription_id)
    hours = settings.WEBHOOK_SECRET_ROTATION_HOURS
    locked.previous_secret = locked.secret if hours else ""
    locked.previous_secret_until = timezone.now() + timedelta(hours=hours) if hours else None
    locked.secret = secret_new()
    locked.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    logger.info("Webhook secret rotated: subscription=%s actor=%s", locked.pk, actor.label)
    return locked.secret


# --- deliveries ---------------------------------------------------------------------------------


@transaction.atomic
def delivery_redeliver(*, delivery_id: int, actor: Actor) -> Delivery:
    """The delivery's message again, as a new delivery at the back of its subscription's queue:
    the same ``webhook-id`` and body, attempts of its own. It is tried at once, even while the
    subscription backs off (a person asked, having fixed the receiver, say); a disabled
    subscription keeps it until it is enabled."""
    original = Delivery.objects.get(pk=delivery_id)
    Subscription.objects.filter(pk=original.subscription_id).update(retry_at=None)
    again = Delivery.objects.create(
        subscription_id=original.subscription_id,
        message_id=original.message_id,
        event_type=original.event_type,
        body=original.body,
        redelivery_of=original,
    )
    transaction.on_commit(partial(send_queue, original.subscription_id))
    logger.info(
        "Webhook redelivery queued: delivery=%s of=%s actor=%s", again.pk, original.pk, actor.label
    )
    return again
