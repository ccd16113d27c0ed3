"""Sending a subscription's deliveries: in order, one at a time, with backoff, disabling a
receiver that keeps failing (STYLE R6, R7, R8).

``subscription_send`` (the task ``webhooks.send``, queued after the commit that wrote a
delivery):

1. Claim the subscription: a compare-and-swap on ``sending_until`` (never a row lock held over
   the network). Only an enabled subscription past its backoff (``retry_at``) is claimed, by one
   sender at a time, so its deliveries leave in the order they were written. Not claimed:
   another sender has it (and sends this delivery too), or it is disabled or backing off.
   The claim lasts the task's hard time limit, past which no sender can still be running.
2. Take the oldest pending delivery; none: done.
3. Attempt it, outside any transaction (``webhooks.sender``), then record the attempt in one
   short transaction (``attempt_record``): the log row, the delivery's status (delivered, or
   failed once its attempts are spent), the subscription's failures in a row and backoff, and
   disabling.
4. After a failure the subscription backs off: nothing newer leaves before ``retry_at`` (a newer
   delivery would overtake the failed one). A backoff shorter than the sweep's interval gets a
   send queued for its end; beat's sweep (``sends_due_queue``) queues the longer ones, and any
   send lost on the way (the broker down at commit, a worker killed).
5. Otherwise go on with the next one, for at most ``SENDS_PER_TASK`` attempts or half the task's
   soft time limit; then queue a follow-up, so one busy subscription does not hold a worker.
6. Release the claim. A delivery written while it was held found it taken: if one is pending,
   go round again.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from enum import Enum

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from config.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_SUBSCRIPTIONS_DISABLED

from .models import Delivery, DeliveryAttempt, Subscription
from .sender import AttemptResult, attempt_send
from .tasks import subscription_send_task

logger = logging.getLogger(__name__)

Outcome = DeliveryAttempt.Outcome
PENDING = Delivery.Status.PENDING
SENDS_PER_TASK = 50
ROUNDS_PER_TASK = 3  # step 6's rounds before a follow-up task takes over
SWEEP_BATCH = 200  # subscriptions queued by one sweep (the next sweep takes the rest)
JITTER = 0.2


class _Stop(Enum):
    IDLE = "idle"  # nothing pending
    WAIT = "wait"  # backing off after a failure, or disabled
    MORE = "more"  # this task's share is spent, deliveries are left


def send_queue(subscription_id: int, *, countdown: float | None = None) -> None:
    """Queues a send; a broker that is down leaves it to beat's sweep."""
    try:
        subscription_send_task.apply_async(
            kwargs={"subscription_id": subscription_id},
            countdown=countdown,
            queue=settings.CELERY_TASK_DEFAULT_QUEUE,
        )
    except BrokerUnavailable:
        logger.warning(
            "Webhook send not queued (the broker is down): subscription=%s; the sweep sends it",
            subscription_id,
        )


def subscription_send(*, subscription_id: int) -> int:
    """Sends a subscription's due deliveries in order (the module docstring's steps); returns
    how many attempts it made."""
    made = 0
    for _ in range(ROUNDS_PER_TASK):
        claim = _claim(subscription_id)
        if claim is None:
            return made
        try:
            stop, attempts = _send_claimed(subscription_id)
        finally:
            Subscription.objects.filter(pk=subscription_id, sending_until=claim).update(
                sending_until=None
            )
        made += attempts
        if stop is _Stop.WAIT:
            return made
        if stop is _Stop.IDLE and not _pending(subscription_id).exists():
            return made
    send_queue(subscription_id)
    return made


def _claim(subscription_id: int) -> datetime | None:
    now = timezone.now()
    until = now + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimed = (
        Subscription.objects.filter(pk=subscription_id, enabled=True)
        .filter(Q(sending_until__isnull=True) | Q(sending_until__lt=now))
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .update(sending_until=until)
    )
    return until if claimed else None


def _pending(subscription_id: int) -> QuerySet[Delivery]:
    return Delivery.objects.filter(subscription_id=subscription_id, status=PENDING)


def _send_claimed(subscription_id: int) -> tuple[_Stop, int]:
    deadline = time.monotonic() + settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    for made in range(SENDS_PER_TASK):
        subscription = Subscription.objects.filter(pk=subscription_id, enabled=True).first()
        delivery = _pending(subscription_id).order_by("id").only("message_id", "body").first()
        if subscription is None:
            return _Stop.WAIT, made
        if delivery is None:
            return _Stop.IDLE, made
        attempted_at = timezone.now()
        result = attempt_send(
            url=subscription.url,
            message_id=delivery.message_id,
            body=delivery.body.encode("utf-8"),
            secrets_in_use=secrets_in_use(subscription, attempted_at),
        )
        backoff = attempt_record(delivery_id=delivery.pk, result=result, attempted_at=attempted_at)
        if backoff is not None:
            if backoff <= settings.WEBHOOK_SWEEP_SECONDS:
                send_queue(subscription_id, countdown=backoff)
            return _Stop.WAIT, made + 1
        if time.monotonic() > deadline:
            return _Stop.MORE, made + 1
    return _Stop.MORE, SENDS_PER_TASK


def secrets_in_use(subscription: Subscription, now: datetime) -> list[str]:
    """The secret, and the previous one while a rotation lasts: a signature each."""
    rotating = subscription.previous_secret and (
        subscription.previous_secret_until is not None and subscription.previous_secret_until > now
    )
    return (
        [subscription.secret, subscription.previous_secret] if rotating else [subscription.secret]
    )


def backoff_seconds(failures_in_a_row: int, retry_after: float | None = None) -> float:
    """``WEBHOOK_RETRY_BASE_SECONDS`` doubled per failure in a row, +-20 % so that receivers
    failing together are not retried together, at most ``WEBHOOK_RETRY_MAX_SECONDS``; a longer
    Retry-After within that maximum is honoured."""
    most = settings.WEBHOOK_RETRY_MAX_SECONDS
    exponent = min(max(failures_in_a_row - 1, 0), 32)
    delay = min(most, settings.WEBHOOK_RETRY_BASE_SECONDS * 2**exponent)
    delay *= random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, most)


@transaction.atomic
def attempt_record(
    *, delivery_id: int, result: AttemptResult, attempted_at: datetime
) -> float | None:
    """Records one attempt (step 3); returns the backoff in seconds after a failure, None after
    a success or when the delivery is gone (its subscription deleted meanwhile)."""
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None:
        return None
    # Lock order: the subscription, then its delivery (as subscription_enable and the admin).
    subscription = Subscription.objects.select_for_update().get(pk=delivery.subscription_id)
    delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
    delivery.attempt_count += 1
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempt_count,
        attempted_at=attempted_at,
        outcome=result.outcome,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        response_excerpt=result.response_excerpt,
        error=result.error,
    )
    delivery.last_status_code, delivery.last_error = result.status_code, result.error
    now, backoff = timezone.now(), None
    if result.outcome == Outcome.DELIVERED:
        delivery.status, delivery.finished_at = Delivery.Status.DELIVERED, now
        subscription.failures_in_a_row, subscription.retry_at = 0, None
    else:
        subscription.failures_in_a_row += 1
        if delivery.attempt_count >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status, delivery.finished_at = Delivery.Status.FAILED, now
        backoff = backoff_seconds(subscription.failures_in_a_row, result.retry_after)
        subscription.retry_at = now + timedelta(seconds=backoff)
        _disable_if_due(subscription, result, now)
    delivery.save(
        update_fields=["attempt_count", "last_status_code", "last_error", "status", "finished_at"]
    )
    subscription.save(
        update_fields=[
            "failures_in_a_row",
            "retry_at",
            "enabled",
            "disabled_at",
            "disabled_reason",
            "updated_at",
        ]
    )
    if delivery.status != PENDING:
        _log_prune(subscription.pk)
    counted = WEBHOOK_ATTEMPTS.labels(event_type=delivery.event_type, outcome=result.outcome)
    transaction.on_commit(counted.inc)
    return backoff


def _disable_if_due(subscription: Subscription, result: AttemptResult, now: datetime) -> None:
    """Disables the subscription on a 410 Gone, or once its failures in a row reach
    ``WEBHOOK_DISABLE_AFTER_FAILURES``: the reason is the admin's notice; a log line and a
    metric tell whoever watches those."""
    limit = settings.WEBHOOK_DISABLE_AFTER_FAILURES
    if result.gone:
        label = "gone"
        reason = "The receiver answered 410 Gone: it wants no more deliveries."
    elif subscription.failures_in_a_row >= limit:
        label = "failures"
        reason = (
            f"{subscription.failures_in_a_row} failed attempts in a row (the limit is {limit}); "
            f"the last: {result.error or result.outcome}"
        )
    else:
        return
    subscription.enabled, subscription.disabled_at, subscription.disabled_reason = (
        False,
        now,
        reason,
    )
    logger.warning(
        "Webhook subscription disabled: subscription=%s reason=%s failures=%d",
        subscription.pk,
        label,
        subscription.failures_in_a_row,
    )
    transaction.on_commit(WEBHOOK_SUBSCRIPTIONS_DISABLED.labels(reason=label).inc)


def _log_prune(subscription_id: int) -> None:
    """Keeps the subscription's ``WEBHOOK_DELIVERIES_KEPT`` most recent finished deliveries
    (their attempts go with them); pending ones are never pruned."""
    kept = settings.WEBHOOK_DELIVERIES_KEPT
    finished = Delivery.objects.filter(subscription_id=subscription_id).exclude(status=PENDING)
    oldest_kept = finished.order_by("-id").values_list("id", flat=True)[kept - 1 : kept]
    if oldest_kept:
        finished.filter(id__lt=oldest_kept[0]).delete()


def sends_due_queue() -> int:
    """Beat's sweep: queues a send for each enabled subscription, past its backoff and not
    claimed, with a delivery pending for longer than the sweep's interval (a long backoff that
    has ended, or a send lost on the way). Returns how many it queued."""
    now = timezone.now()
    waiting = Delivery.objects.filter(
        subscription=OuterRef("pk"),
        status=PENDING,
        created_at__lte=now - timedelta(seconds=settings.WEBHOOK_SWEEP_SECONDS),
    )
    due = list(
        Subscription.objects.filter(enabled=True)
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .filter(Q(sending_until__isnull=True) | Q(sending_until__lt=now))
        .filter(Exists(waiting))
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    for pk in due:
        send_queue(pk)
    return len(due)
