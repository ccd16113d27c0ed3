"""Events: what happened that other systems may want to hear about (webhooks, docs/webhooks.md).

The apps where things happen sit at every level (registry: a version committed; releases: a
release changed, rolled back, a gate refused or overridden, a change request opened or decided; evaluations: a canary verdict, an eval
run finished), and what sends them (``webhooks``) sits above them all. So, as with the promotion
checks (``releases.gates``) and the prompt page's slots (``registry.admin.hub``), the bottom app
holds the hook: each app calls ``event_emit`` inside the transaction that makes the change, and
``WebhooksConfig.ready()`` registers the listener that queues the deliveries. Nothing here
imports an app above; no app imports ``webhooks``.

``EventType`` is the one list of event types: the admin's checkboxes, the subscriptions' filter
and the docs' sections follow it. A new event is one line here, the ``event_emit`` where it
happens, and its section in docs/webhooks.md.

A listener's failure never fails the change that emitted it (a rollback is never blocked by a
webhook): each listener runs in a savepoint, and an error is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.db import models, transaction
from django.utils import timezone

from config.metrics import EVENT_LISTENER_FAILURES

logger = logging.getLogger(__name__)


class EventType(models.TextChoices):
    """``<thing>.<what happened>``, as the Standard Webhooks specification names them."""

    VERSION_COMMITTED = "version.committed", "A prompt version was committed"
    RELEASE_CHANGED = "release.changed", "A release changed (any verb, rollback included)"
    RELEASE_ROLLED_BACK = "release.rolled_back", "A release was rolled back"
    GATE_REFUSED = "gate.refused", "A promotion gate refused a release change"
    GATE_OVERRIDDEN = "gate.overridden", "A release change overrode failing gates"
    CANARY_VERDICT = "canary.verdict", "Canary analysis stored a verdict"
    EVAL_RUN_FINISHED = "eval_run.finished", "An eval run finished"
    SCHEDULE_STEP_SKIPPED = (
        "schedule.step_skipped",
        "A scheduled release change was skipped, and its schedule stopped",
    )
    SPEND_ANOMALY = (
        "spend.anomaly",
        "A prompt's or a model's spend today is far outside its trailing baseline",
    )
    CHANGE_REQUEST_OPENED = "change_request.opened", "A release change was proposed for review"
    CHANGE_REQUEST_DECIDED = (
        "change_request.decided",
        "A change request was approved, rejected, applied, withdrawn or expired",
    )


@dataclass(frozen=True, slots=True)
class Event:
    """One event as its listeners get it. ``data`` is JSON-ready and holds no secret and no
    variable value; ``prompt_id`` and ``environment`` (a name) are what subscriptions filter on
    (None: the event belongs to no prompt, or to no environment)."""

    type: EventType
    data: Mapping[str, Any]
    prompt_id: int | None = None
    environment: str | None = None
    occurred_at: datetime = field(default_factory=timezone.now)


class EventListener(Protocol):
    def __call__(self, event: Event) -> None: ...


_LISTENERS: list[EventListener] = []


def event_listener_register(listener: EventListener) -> None:
    if listener not in _LISTENERS:
        _LISTENERS.append(listener)


def event_listener_unregister(listener: EventListener) -> None:
    """Removes a listener (tests)."""
    if listener in _LISTENERS:
        _LISTENERS.remove(listener)


def event_emit(
    event_type: EventType,
    data: Mapping[str, Any],
    *,
    prompt_id: int | None = None,
    environment: str | None = None,
) -> None:
    """Tells every listener that ``event_type`` happened. Call it inside the transaction that
    makes the change: a listener writes what it must send in that transaction and sends it after
    commit, so a change rolled back sends nothing and a committed one is never lost."""
    if not _LISTENERS:
        return
    event = Event(event_type, data, prompt_id=prompt_id, environment=environment)
    for listener in _LISTENERS:
        try:
            # A savepoint: a listener's failed query must not break the change's transaction.
            with transaction.atomic():
                listener(event)
        except Exception:
            logger.exception("An event listener failed: event=%s", event_type)
            EVENT_LISTENER_FAILURES.labels(event_type=event_type).inc()
