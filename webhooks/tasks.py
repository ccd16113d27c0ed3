"""Celery tasks of the webhooks app: thin adapters over ``webhooks.sending`` (STYLE R2, R7).

Each task imports its service inside the task: the service queues the task (it imports this
module). Both are safe to run twice: a send claims its subscription first (only one sends), and
the sweep only queues sends.
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError


# Retries are the sending's own (a failed attempt backs the subscription off and queues the next
# send); Celery retries only a database error (a failover), with backoff and jitter.
@shared_task(
    name="webhooks.send",
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def subscription_send_task(*, subscription_id: int) -> int:
    from .sending import subscription_send

    return subscription_send(subscription_id=subscription_id)


@shared_task(name="webhooks.send_due", ignore_result=True)
def sends_due_task() -> int:
    from .sending import sends_due_queue

    return sends_due_queue()
