"""The webhooks' fixtures: a receiver on loopback, settings that let it be reached and fail fast,
and subscribing to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from config.celery import app as celery_app
from registry.actors import Actor
from registry.events import EventType
from tests.webhooks.receiver import Receiver
from webhooks.models import Subscription
from webhooks.services import subscription_create

ADMIN = Actor(label="webhook-admin")
EVERY_TYPE = list(EventType.values)


@pytest.fixture(autouse=True)
def _webhook_settings(settings, no_proxy) -> None:
    """The receiver listens on 127.0.0.1 (loopback allowed, as with DEBUG); attempts time out and
    back off in fractions of a second."""
    settings.WEBHOOK_ALLOW_LOOPBACK = True
    settings.WEBHOOK_ALLOWED_HOSTS = []
    settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 2
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 2


@pytest.fixture
def eager(monkeypatch) -> None:
    """Sends run in this process when queued (the embedded default's way), whatever REDIS_URL:
    after the commit that queued them, under ``django_capture_on_commit_callbacks``."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    try:
        yield running
    finally:
        running.released.set()
        running.stop()


@pytest.fixture
def subscribe(db, receiver) -> Callable[..., tuple[Subscription, str]]:
    """``subscribe("/all", event_types=[...], prompt=..., environment=...)``: a subscription to
    the receiver at that path; returns it with its secret."""

    def make(path: str = "/hook", **fields) -> tuple[Subscription, str]:
        fields.setdefault("event_types", EVERY_TYPE)
        fields.setdefault("name", path.strip("/") or "hook")
        return subscription_create(url=receiver.url(path), actor=ADMIN, **fields)

    return make


@pytest.fixture
def emit(eager, django_capture_on_commit_callbacks) -> Callable[..., None]:
    """``emit()``: a ``release.changed`` of no prompt (``data`` says which, ``{"n": 1}``...),
    committed, and its sends run: what every event's delivery goes through."""
    from registry.events import event_emit

    count = iter(range(1, 1_000_000))

    def send(event_type: EventType = EventType.RELEASE_CHANGED, **where) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            event_emit(event_type, {"n": next(count)}, **where)

    return send
