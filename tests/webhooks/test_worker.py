"""Deliveries through a real Celery worker (tests/celery_worker.py) and Redis: a receiver down for
a while, then back. The first attempt is refused, the worker backs the subscription off (a
second, the shortest the setting takes), the events written meanwhile wait behind it, and once
the receiver is back everything arrives once, signed, in the order it happened."""

from __future__ import annotations

import pytest
from django.db import transaction

from registry.events import EventType, event_emit
from tests.celery_worker import wait_for, worker_on_own_queue
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_a_receiver_down_for_a_while_gets_every_delivery_in_order_once_back(
    settings, needs_redis, tmp_path, receiver, subscribe
):
    _, secret = subscribe()
    receiver.stop()  # down: its port refuses connections
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="webhooks") as worker:
        worker.env |= {"WEBHOOK_ALLOW_LOOPBACK": "true", "WEBHOOK_RETRY_BASE_SECONDS": "1"}
        worker.start()
        for n in (1, 2, 3):
            with transaction.atomic():  # committed: the send is queued after it
                event_emit(EventType.RELEASE_CHANGED, {"n": n})
        wait_for(
            lambda: DeliveryAttempt.objects.filter(outcome=DeliveryAttempt.Outcome.FAILED).exists(),
            "the first attempt to fail",
        )
        receiver.start()  # back, on the same port
        wait_for(
            lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == 3,
            "every delivery",
        )
    assert [r.json["data"]["n"] for r in receiver.received] == [1, 2, 3]
    assert all(r.verified_by(secret) for r in receiver.received)
    first, *later = Delivery.objects.order_by("id")
    refused = first.attempts.order_by("number").first()
    assert refused.outcome == DeliveryAttempt.Outcome.FAILED
    assert refused.error.startswith("Could not deliver: ConnectError")
    assert first.attempt_count >= 2
    assert [d.attempt_count for d in later] == [1, 1]  # they waited; they were never tried early
