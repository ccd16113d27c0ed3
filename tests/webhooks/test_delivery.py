"""Deliveries against a receiver that misbehaves: one that hangs (timeout), answers 500, redirects
(not followed), answers 410 (disabled at once); disabling after failures in a row; the order kept
while a delivery is retried; URLs refused at save and at send; the bounded log; redelivery; a
listener's failure never failing the change; the sweep sending what was not queued.

Sends run eagerly after each commit (``emit``); retries by the worker are in test_worker.py."""

from __future__ import annotations

import logging
import socket

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from kombu.exceptions import OperationalError

from registry.events import (
    EventType,
    event_emit,
    event_listener_register,
    event_listener_unregister,
)
from runs import egress
from tests.metrics import counting
from tests.webhooks.conftest import ADMIN
from tests.webhooks.receiver import HANG, Answer
from webhooks import sending
from webhooks.models import Delivery, DeliveryAttempt, Subscription
from webhooks.sending import backoff_seconds, sends_due_queue, subscription_send
from webhooks.services import delivery_redeliver, subscription_create

Status = Delivery.Status
Outcome = DeliveryAttempt.Outcome


@pytest.fixture
def one_attempt(settings) -> None:
    """Each delivery is tried once and the subscription waits for nothing after a failure: the
    next event's delivery goes at once (backoff is tested on its own)."""
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0


def attempts() -> list[DeliveryAttempt]:
    return list(DeliveryAttempt.objects.order_by("id"))


# --- a receiver that misbehaves -----------------------------------------------------------------


def test_a_receiver_that_hangs_times_out(subscribe, receiver, emit, one_attempt, settings):
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 0.3
    receiver.default = HANG
    subscribe()
    emit()
    [attempt] = attempts()
    assert attempt.outcome == Outcome.FAILED
    assert attempt.error.startswith("Timed out")
    assert attempt.status_code is None
    assert attempt.latency_ms is not None
    assert Delivery.objects.get().status == Status.FAILED
    assert len(receiver.received) == 1


def test_a_500_is_a_failure_and_only_the_start_of_the_answer_is_kept(
    subscribe, receiver, emit, one_attempt, settings
):
    settings.WEBHOOK_RESPONSE_EXCERPT_BYTES = 100
    receiver.default = Answer(500, b"\x00" + b"x" * 50_000)  # PostgreSQL's text refuses a NUL
    subscribe()
    emit()
    [attempt] = attempts()
    assert (attempt.outcome, attempt.status_code, attempt.error) == (
        Outcome.FAILED,
        500,
        "HTTP 500.",
    )
    assert attempt.response_excerpt == "\ufffd" + "x" * 99
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == (Status.FAILED, 500)


def test_a_redirect_is_not_followed_and_fails(subscribe, receiver, emit, one_attempt):
    receiver.default = Answer(302, headers={"Location": receiver.url("/elsewhere")})
    subscribe()
    emit()
    [attempt] = attempts()
    assert (attempt.outcome, attempt.status_code) == (Outcome.FAILED, 302)
    assert "redirects are not followed" in attempt.error
    assert receiver.paths("/elsewhere") == []


def test_410_gone_disables_the_subscription_at_once(subscribe, receiver, emit, settings):
    receiver.default = Answer(410)
    subscription, _ = subscribe()
    disabled = counting("promptregistry_webhook_subscriptions_disabled_total", reason="gone")
    emit()
    subscription.refresh_from_db()
    assert not subscription.enabled
    assert "410 Gone" in subscription.disabled_reason
    assert disabled() == 1
    emit()
    assert len(receiver.received) == 1  # nothing more is sent, nor queued
    assert Delivery.objects.count() == 1


def test_failures_in_a_row_disable_the_subscription_and_a_success_resets_the_run(
    subscribe, receiver, emit, one_attempt, settings, caplog
):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    receiver.answers.extend([Answer(500), Answer(500), Answer(204), Answer(500), Answer(500)])
    receiver.default = Answer(503)
    subscription, _ = subscribe()
    disabled = counting("promptregistry_webhook_subscriptions_disabled_total", reason="failures")
    failed = counting(
        "promptregistry_webhook_attempts_total", event_type="release.changed", outcome="failed"
    )
    for _ in range(5):
        emit()
    subscription.refresh_from_db()
    assert subscription.enabled  # 500, 500, then a success: the run started again at 0
    assert subscription.failures_in_a_row == 2
    with caplog.at_level(logging.WARNING, logger="webhooks.sending"):
        emit()
    subscription.refresh_from_db()
    assert not subscription.enabled
    assert subscription.disabled_reason.startswith("3 failed attempts in a row")
    assert "HTTP 503." in subscription.disabled_reason
    assert (
        f"Webhook subscription disabled: subscription={subscription.pk} reason=failures"
        in caplog.text
    )
    assert (disabled(), failed()) == (1, 5)
    emit()  # disabled: nothing is queued for it
    assert Delivery.objects.count() == 6
    assert len(receiver.received) == 6


def test_while_a_delivery_is_retried_nothing_newer_overtakes_it(
    subscribe, receiver, emit, settings
):
    """Backing off after a failure holds the subscription's queue; when the wait is over, the
    failed delivery goes first, then the ones written meanwhile."""
    receiver.answers.append(Answer(500))
    subscription, _ = subscribe()
    emit()
    emit()
    emit()
    assert [r.json["data"]["n"] for r in receiver.received] == [1]
    subscription.refresh_from_db()
    assert subscription.retry_at is not None  # WEBHOOK_RETRY_BASE_SECONDS (30) from now
    assert subscription_send(subscription_id=subscription.pk) == 0  # not yet
    Subscription.objects.filter(pk=subscription.pk).update(retry_at=None)  # the wait is over
    assert subscription_send(subscription_id=subscription.pk) == 3
    assert [r.json["data"]["n"] for r in receiver.received] == [1, 1, 2, 3]
    first, *rest = Delivery.objects.order_by("id")
    assert (first.status, first.attempt_count) == (Status.DELIVERED, 2)
    assert [(d.status, d.attempt_count) for d in rest] == [(Status.DELIVERED, 1)] * 2
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert ids[0] == ids[1] != ids[2]  # a retry keeps its webhook-id


def test_the_backoff_doubles_within_its_jitter_up_to_its_maximum(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.WEBHOOK_RETRY_MAX_SECONDS = 100
    for failures, nominal in ((1, 10), (2, 20), (3, 40), (4, 80)):
        for _ in range(20):
            assert nominal * 0.8 <= backoff_seconds(failures) <= nominal * 1.2
    for failures in (5, 9, 60):  # the maximum, less its jitter
        assert 80 <= backoff_seconds(failures) <= 100
    assert backoff_seconds(1, retry_after=55) == 55  # the receiver asked for longer
    assert backoff_seconds(1, retry_after=10_000) == 100  # but never past the maximum


# --- where a webhook may go -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00::1]/hook",
        "https://127.0.0.1/hook",
        "https://2130706433/hook",  # 127.0.0.1 as one number
        "http://hooks.example.com/hook",  # plain http to a host nobody listed
        "https://user:pw@hooks.example.com/hook",
    ],
)
def test_a_url_the_policy_refuses_is_refused_at_save(db, settings, url):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    with pytest.raises(ValidationError) as refused:
        subscription_create(name="internal", url=url, event_types=["release.changed"], actor=ADMIN)
    assert "url" in refused.value.message_dict
    assert not Subscription.objects.exists()


def test_a_listed_host_may_be_private(db, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["10.0.0.5"]
    subscription_create(
        name="intranet", url="http://10.0.0.5/hook", event_types=["release.changed"], actor=ADMIN
    )


def test_loopback_refused_at_send_when_the_setting_changed_since_the_save(
    subscribe, receiver, emit, settings, one_attempt
):
    subscribe()  # saved while loopback was allowed
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    refused = counting(
        "promptregistry_webhook_attempts_total", event_type="release.changed", outcome="refused"
    )
    emit()
    [attempt] = attempts()
    assert attempt.outcome == Outcome.REFUSED
    assert "127.0.0.1" in attempt.error
    assert attempt.latency_ms is None
    assert receiver.received == []  # nothing was sent
    assert refused() == 1


def test_a_name_is_resolved_at_send_and_refused_on_a_private_address(
    db, emit, monkeypatch, one_attempt
):
    """The name says nothing at save; before the attempt it resolves to 10.1.2.3."""

    def resolver(host, port, *args, **kwargs):
        assert host == "hooks.intranet.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    subscription_create(
        name="intranet",
        url="https://hooks.intranet.example/hook",
        event_types=["release.changed"],
        actor=ADMIN,
    )
    monkeypatch.setattr(egress.socket, "getaddrinfo", resolver)
    emit()
    [attempt] = attempts()
    assert attempt.outcome == Outcome.REFUSED
    assert "private" in attempt.error
    assert "10.1.2.3" in attempt.error


# --- the log, redelivery --------------------------------------------------------------------------


def test_the_log_keeps_the_most_recent_finished_deliveries(subscribe, receiver, emit, settings):
    settings.WEBHOOK_DELIVERIES_KEPT = 2
    subscribe()
    for _ in range(4):
        emit()
    assert len(receiver.received) == 4
    kept = Delivery.objects.order_by("id")
    assert [d.body for d in kept] == [r.body.decode() for r in receiver.received[2:]]
    assert DeliveryAttempt.objects.count() == 2


def test_a_redelivery_sends_the_same_message_again(
    subscribe, receiver, emit, one_attempt, django_capture_on_commit_callbacks
):
    receiver.answers.append(Answer(500))
    subscribe()
    emit()
    failed = Delivery.objects.get()
    assert failed.status == Status.FAILED
    with django_capture_on_commit_callbacks(execute=True):
        again = delivery_redeliver(delivery_id=failed.pk, actor=ADMIN)
    again.refresh_from_db()
    assert (again.status, again.redelivery_of_id, again.message_id) == (
        Status.DELIVERED,
        failed.pk,
        failed.message_id,
    )
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


# --- events and transactions ----------------------------------------------------------------------


def test_a_change_rolled_back_sends_nothing(
    subscribe, receiver, eager, django_capture_on_commit_callbacks
):
    subscribe()

    def change() -> None:
        with transaction.atomic():
            event_emit(EventType.RELEASE_CHANGED, {"n": 1})
            raise RuntimeError("the change failed after its event")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        change()
    assert not Delivery.objects.exists()
    assert receiver.received == []


def test_a_failing_listener_never_fails_the_change(subscribe, receiver, emit):
    def broken(event) -> None:
        Subscription.objects.raw("SELECT no_such_column FROM webhooks_subscription")[0]

    subscribe()
    failures = counting(
        "promptregistry_event_listener_failures_total", event_type="release.changed"
    )
    event_listener_register(broken)
    try:
        with transaction.atomic():
            emit()
            # The broken listener's query failed in its savepoint: the change's transaction goes on.
            assert Subscription.objects.count() == 1
    finally:
        event_listener_unregister(broken)
    assert failures() == 1
    assert len(receiver.received) == 1  # the other listener (webhooks) still delivered


def test_a_send_the_broker_lost_is_sent_by_the_sweep(
    subscribe, receiver, emit, settings, monkeypatch, caplog
):
    _subscription, _ = subscribe()

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patched:
        patched.setattr(sending.subscription_send_task, "apply_async", broker_down)
        emit()
    assert receiver.received == []
    assert "the sweep sends it" in caplog.text
    assert sends_due_queue() == 0  # younger than the sweep's interval: its own send may be coming
    settings.WEBHOOK_SWEEP_SECONDS = 0
    assert sends_due_queue() == 1
    assert len(receiver.received) == 1
    assert Delivery.objects.get().status == Status.DELIVERED
    assert sends_due_queue() == 0
