"""The webhooks' admin, as a superuser and as a staff member who may only look: adding a
subscription (URL checked, event types as checkboxes, the secret shown once), rotating its
secret, the notice of a subscription the sender disabled and enabling it again, the delivery log
and redelivery."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from registry.events import EventType
from tests.factories import UserFactory
from tests.webhooks.receiver import Answer
from webhooks.models import Delivery, Subscription

ADD = reverse("admin:webhooks_subscription_add")
SUBSCRIPTIONS = reverse("admin:webhooks_subscription_changelist")
DELIVERIES = reverse("admin:webhooks_delivery_changelist")


def change_url(subscription: Subscription) -> str:
    return reverse("admin:webhooks_subscription_change", args=[subscription.pk])


def rotate_url(subscription: Subscription) -> str:
    return reverse("admin:webhooks_subscription_rotate", args=[subscription.pk])


def shown_secret(page: str) -> str:
    return re.search(r'value="(whsec_[A-Za-z0-9+/=]+)"', page).group(1)


@pytest.fixture
def looker(db, client):
    """A staff member who may view subscriptions and deliveries, and change nothing."""
    user = UserFactory(username="viewer", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="webhooks", codename__in=["view_subscription", "view_delivery"]
        )
    )
    client.force_login(user)
    return client


def test_adding_a_subscription_shows_its_secret_once(admin_client, receiver):
    form = admin_client.get(ADD).content.decode()
    for event_type in EventType.values:
        assert f'type="checkbox" name="event_types" value="{event_type}"' in form
    answer = admin_client.post(
        ADD,
        {
            "name": "Release announcements",
            "url": receiver.url(),
            "event_types": ["release.changed", "release.rolled_back"],
            "enabled": "on",
        },
    )
    subscription = Subscription.objects.get()
    page = answer.content.decode()
    assert answer.status_code == 200  # the secret is in this answer, never behind a redirect
    assert "no-store" in answer["Cache-Control"]
    assert shown_secret(page) == subscription.secret
    assert subscription.event_types == ["release.changed", "release.rolled_back"]
    assert subscription.created_by_label == "admin"
    assert subscription.secret not in admin_client.get(change_url(subscription)).content.decode()


def test_a_url_the_policy_refuses_is_an_error_on_the_form(admin_client, settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    answer = admin_client.post(
        ADD,
        {
            "name": "metadata",
            "url": "https://169.254.169.254/latest/",
            "event_types": ["gate.refused"],
        },
    )
    assert answer.status_code == 200
    assert "link-local" in answer.content.decode()
    assert not Subscription.objects.exists()
    answer = admin_client.post(ADD, {"name": "nothing", "url": "https://hooks.example.com/"})
    assert "This field is required." in answer.content.decode()


def test_rotating_shows_the_new_secret_once_and_keeps_the_old_one_signing(admin_client, subscribe):
    subscription, old = subscribe()
    assert "keeps signing too" in admin_client.get(rotate_url(subscription)).content.decode()
    answer = admin_client.post(rotate_url(subscription))
    subscription.refresh_from_db()
    assert shown_secret(answer.content.decode()) == subscription.secret != old
    assert subscription.previous_secret == old
    page = admin_client.get(change_url(subscription)).content.decode()
    assert "The previous secret also signs until" in page
    assert old not in page
    assert subscription.secret not in page


def test_the_notice_of_a_disabled_subscription_and_enabling_it_again(
    admin_client, subscribe, receiver, emit, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 1
    receiver.answers.append(Answer(500))
    subscription, _ = subscribe(name="Pager")
    emit()
    subscription.refresh_from_db()
    assert not subscription.enabled
    notice = "Disabled by the sender on"
    listing = admin_client.get(SUBSCRIPTIONS).content.decode()
    assert notice in listing
    assert "1 failed attempts in a row" in listing
    assert notice in admin_client.get(change_url(subscription)).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            SUBSCRIPTIONS, {"action": "enable_selected", "_selected_action": [subscription.pk]}
        )
    subscription.refresh_from_db()
    assert (subscription.enabled, subscription.failures_in_a_row, subscription.disabled_reason) == (
        True,
        0,
        "",
    )
    # The delivery that failed waited; enabled again, it went.
    assert Delivery.objects.get().status == Delivery.Status.DELIVERED
    assert len(receiver.received) == 2
    assert notice not in admin_client.get(SUBSCRIPTIONS).content.decode()


def test_the_delivery_log_and_redelivery(
    admin_client, subscribe, receiver, emit, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    receiver.answers.append(Answer(500, b"receiver broke"))
    subscription, _ = subscribe()
    other, _ = subscribe("/other", event_types=["gate.refused"])
    emit()
    failed = Delivery.objects.get()
    listing = admin_client.get(DELIVERIES, {"subscription__id__exact": subscription.pk})
    assert failed.message_id in listing.content.decode()
    assert (
        admin_client.get(DELIVERIES, {"subscription__id__exact": other.pk})
        .context["cl"]
        .result_count
        == 0
    )
    detail = admin_client.get(reverse("admin:webhooks_delivery_change", args=[failed.pk]))
    assert "receiver broke" in detail.content.decode()  # the attempt's answer, inline
    assert "HTTP 500." in admin_client.get(change_url(subscription)).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            DELIVERIES, {"action": "redeliver_selected", "_selected_action": [failed.pk]}
        )
    again = Delivery.objects.exclude(pk=failed.pk).get()
    assert (again.status, again.message_id) == (Delivery.Status.DELIVERED, failed.message_id)


def test_who_may_only_look_cannot_rotate_redeliver_or_change(looker, subscribe, emit):
    subscription, _ = subscribe()
    emit()
    assert looker.get(change_url(subscription)).status_code == 200
    assert looker.post(rotate_url(subscription)).status_code == 403
    listing = looker.get(DELIVERIES)
    assert listing.status_code == 200
    assert "redeliver_selected" not in listing.content.decode()
    looker.post(
        DELIVERIES,
        {"action": "redeliver_selected", "_selected_action": [Delivery.objects.get().pk]},
    )
    assert Delivery.objects.count() == 1
    assert looker.get(ADD).status_code == 403
