"""Spend anomalies (runs.anomalies) and the admin's spend page (runs.spend; decision 0051).

The check raises an outlier once per subject and day, as an admin notice (a SpendAnomaly, shown on
the spend page), a metric and a ``spend.anomaly`` event; spend in line with its baseline raises
nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from registry.events import event_listener_register, event_listener_unregister
from runs.anomalies import spend_anomalies_check
from runs.models import Budget, SpendAnomaly
from tests.factories import UserFactory
from tests.metrics import counting
from tests.runs.test_selectors import make_call


@pytest.fixture
def heard():
    events = []

    def listen(event) -> None:
        events.append(event)

    event_listener_register(listen)
    yield events
    event_listener_unregister(listen)


def spend(released, *, today: str, usual: str, days: int = 14, **fields) -> None:
    """``usual`` cost each of the ``days`` days before, by this time of day, and ``today``'s."""
    now = timezone.now()
    for n in range(1, days + 1):
        make_call(released, created_at=now - timedelta(days=n, minutes=1), cost=Decimal(usual))
    make_call(released, created_at=now - timedelta(minutes=1), cost=Decimal(today), **fields)


def test_an_outlier_raises_a_notice_a_metric_and_an_event_once(released, heard, settings) -> None:
    settings.SPEND_ANOMALY_FACTOR = 3
    settings.SPEND_ANOMALY_MIN_COST = 1
    spend(released, today="12", usual="2")
    prompts = counting("promptregistry_spend_anomalies_total", kind="prompt")
    models = counting("promptregistry_spend_anomalies_total", kind="model")

    raised = spend_anomalies_check()

    assert sorted((a.subject, a.name) for a in raised) == [
        ("model", "local/echo-1"),
        ("prompt", "support.refund-reply"),
    ]
    prompt = SpendAnomaly.objects.get(subject="prompt")
    assert (prompt.spend, prompt.baseline) == (Decimal(12), Decimal(2))
    assert (prompts(), models()) == (1, 1)
    events = {e.data["subject"]: e for e in heard}
    assert events["prompt"].type == "spend.anomaly"
    assert events["prompt"].prompt_id == released.prompt.pk
    assert events["prompt"].data["spend"] == "12.000000"
    assert events["model"].prompt_id is None
    assert spend_anomalies_check() == []  # once a day: the next check raises nothing more
    assert (prompts(), len(heard)) == (1, 2)


def test_spend_in_line_with_its_baseline_or_below_the_minimum_raises_nothing(
    released, heard, settings
) -> None:
    settings.SPEND_ANOMALY_FACTOR = 3
    settings.SPEND_ANOMALY_MIN_COST = 5
    spend(released, today="5.5", usual="2")  # under three times its usual
    assert spend_anomalies_check() == []
    make_call(released, created_at=timezone.now(), cost=Decimal("0.5"), model="tiny")
    assert spend_anomalies_check() == []  # "tiny" is new (no baseline) but under the minimum
    assert not SpendAnomaly.objects.exists()
    assert heard == []


def test_later_hours_of_the_baseline_days_do_not_count(released, heard, settings) -> None:
    """Today by now is compared with the other days by the same time: a whole day's spend
    would make every morning look quiet and hide a morning that is not."""
    settings.SPEND_ANOMALY_FACTOR = 3
    settings.SPEND_ANOMALY_MIN_COST = 1
    now = timezone.now().replace(hour=10)
    for n in range(1, 15):
        make_call(released, created_at=now - timedelta(days=n, hours=1), cost=Decimal("1"))
        make_call(
            released, created_at=now - timedelta(days=n) + timedelta(hours=5), cost=Decimal(50)
        )
    make_call(released, created_at=now - timedelta(minutes=5), cost=Decimal(10))
    raised = spend_anomalies_check(now=now)
    assert {a.subject for a in raised} == {"prompt", "model"}


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def root(client: Client) -> Client:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_the_spend_page_charts_spend_per_day_and_shows_the_notices(released, root) -> None:
    run = make_call(released, cost=Decimal("1.5"), run_by_key_id=4, run_by_key_label="billing-svc")
    call_page = root.get(reverse("admin:runs_call_change", args=[run.pk])).content.decode()
    assert "billing-svc (key #4)" in call_page  # the key whose budget the run counted in
    make_call(released, cost=Decimal("0.5"), created_at=timezone.now() - timedelta(days=2))
    SpendAnomaly.objects.create(
        subject="prompt",
        name="support.refund-reply",
        day=timezone.now().date(),
        spend=Decimal(9),
        baseline=Decimal(1),
        found_at=timezone.now(),
    )
    page = reverse("admin:runs_budget_spend")
    response = root.get(page)
    assert response.status_code == 200
    body = response.content.decode()
    assert "<svg" in body
    assert body.count("<rect") == 2
    assert "support.refund-reply" in body
    assert "had cost 9 by" in body
    by_key = root.get(page, {"by": "key", "days": "7"}).content.decode()
    assert "billing-svc (#4)" in by_key
    assert "no key" in by_key
    by_model = root.get(page, {"by": "model", "days": "nonsense"}).content.decode()
    assert "local/echo-1" in by_model
    assert "Spend per day" in root.get(reverse("admin:runs_budget_changelist")).content.decode()


def test_without_spend_the_page_says_so(db, root) -> None:
    response = root.get(reverse("admin:runs_budget_spend"))
    assert "No call with a cost in these 30 days." in response.content.decode()


def test_a_zero_limit_is_refused_in_the_admin_with_what_to_do(released, root) -> None:
    response = root.post(
        reverse("admin:runs_budget_add"),
        {"prompt": released.prompt.pk, "tokens_per_day": "0", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "disable the API key" in response.content.decode()
    assert not Budget.objects.exists()


def test_the_spend_page_needs_view_permissions(released, client: Client) -> None:
    user = UserFactory(username="viewer", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))  # calls, but not budgets
    client.force_login(user)
    assert client.get(reverse("admin:runs_budget_spend")).status_code == 403
