"""Scheduled changes in the admin (decision 0049): a release manager schedules a canary's ramp
from the release page, sees the next step and its time on the board and the release page, and
any release manager cancels it; refusals are shown on the page and change nothing."""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from registry.actors import Actor
from releases.models import ChangeRequest, Release, Schedule, ScheduledStep
from releases.services import (
    release_canary_promote,
    release_canary_start,
    release_deploy,
    schedule_create,
    schedules_apply,
)
from releases.services.schedule import planned_step
from tests.factories import PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")


def manager_client(client: Client, username: str) -> Client:
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(user)
    return client


@pytest.fixture
def rita(client: Client) -> Client:
    return manager_client(client, "rita")


def url(name: str, *args: object) -> str:
    return reverse(f"admin:releases_release_{name}", args=args)


def text(response) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", body.replace("&nbsp;", " ").replace("&amp;", "&"))


@pytest.fixture
def canary(released) -> Release:
    return release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(10),
        actor=MANAGER,
    )


def when(hours: float) -> str:
    return (timezone.now() + timedelta(hours=hours)).astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def form(release: Release, steps: list[tuple[str, str, str, str]], reason: str = "") -> dict:
    data = {
        "revision": release.revision,
        "reason": reason,
        "step-TOTAL_FORMS": "6",
        "step-INITIAL_FORMS": "0",
        "step-MIN_NUM_FORMS": "0",
        "step-MAX_NUM_FORMS": "6",
    }
    for i, (at, action, version, percent) in enumerate(steps):
        data |= {
            f"step-{i}-at": at,
            f"step-{i}-action": action,
            f"step-{i}-version": version,
            f"step-{i}-percent": percent,
        }
    return data


def test_a_ramp_is_scheduled_shown_with_its_next_step_and_cancelled(rita, released, canary):
    page = text(rita.get(url("change", canary.pk)))
    assert "Schedule changes" in page
    assert rita.get(url("schedule", canary.pk)).status_code == 200

    steps = [
        (when(1), "canary_percent", "", "25"),
        (when(2), "canary_percent", "", "50"),
        (when(3), "canary_promote", "", ""),
    ]
    response = rita.post(url("schedule", canary.pk), form(canary, steps, reason="overnight"))
    assert response.status_code == 302, text(response)
    schedule = Schedule.objects.get()
    assert schedule.created_by_label == "rita"
    assert schedule.steps.count() == 3

    page = text(rita.get(url("change", canary.pk)))
    assert f"Schedule #{schedule.pk}: active" in page
    assert re.search(r"Next: 25 % at \d{4}-\d\d-\d\d \d\d:\d\d UTC, then 50 % at ", page)
    assert "Schedule changes" not in page  # one at a time
    board = text(rita.get(url("changelist") + "?environment=staging"))
    assert re.search(r"25 % at [^,]+ UTC, then 50 % at ", board)

    # Another release manager cancels it.
    other = manager_client(Client(), "sam")
    response = other.post(url("schedule_cancel", canary.pk), {"reason": "launch moved"})
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.state == Schedule.State.CANCELLED
    assert schedule.end_reason == "Cancelled by sam: launch moved"
    page = text(rita.get(url("change", canary.pk)))
    assert "cancelled" in page
    assert "Cancelled by sam: launch moved" in page


def test_refusals_are_shown_on_the_page_and_change_nothing(rita, released, canary):
    past = [(when(-1), "canary_percent", "", "25")]
    page = text(rita.post(url("schedule", canary.pk), form(canary, past)))
    assert "Step 1 (25 %) is due at" in page
    assert "which has passed" in page
    missing = [(when(1), "canary_percent", "", "")]
    assert "canary_percent needs a percent." in text(
        rita.post(url("schedule", canary.pk), form(canary, missing))
    )
    assert not Schedule.objects.exists()

    schedule_create(
        prompt=released.prompt,
        environment=released.environments["staging"],
        steps=[planned_step(at=timezone.now() + timedelta(hours=1), action="canary_promote")],
        actor=MANAGER,
    )
    second = [(when(2), "canary_promote", "", "")]
    page = text(rita.post(url("schedule", canary.pk), form(canary, second)))
    assert "The release has an active schedule already" in page
    assert Schedule.objects.count() == 1


def test_a_skipped_step_is_shown_with_its_reason(rita, released, canary):
    schedule = schedule_create(
        prompt=released.prompt,
        environment=released.environments["staging"],
        steps=[
            planned_step(
                at=timezone.now() + timedelta(hours=1), action="canary_percent", percent=25
            )
        ],
        actor=MANAGER,
    )
    # The release moves: a person promotes the canary by hand.
    release_canary_promote(
        prompt=released.prompt, environment=released.environments["staging"], actor=MANAGER
    )
    schedules_apply(now=timezone.now() + timedelta(hours=2))
    page = text(rita.get(url("change", canary.pk)))
    assert f"Schedule #{schedule.pk}: stopped" in page
    assert "The release moved: revision" in page
    assert ScheduledStep.objects.get().state == ScheduledStep.State.SKIPPED


def test_scheduling_and_cancelling_need_the_deploy_permission(client, released, canary):
    viewer = UserFactory(username="vera", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename="view_release"))
    client.force_login(viewer)
    assert client.get(url("schedule", canary.pk)).status_code == 403
    assert client.post(url("schedule_cancel", canary.pk)).status_code == 403


def test_the_board_costs_the_same_queries_with_schedules_on_2_or_8_rows(rita, environments):
    def rows(count: int) -> None:
        for _ in range(count):
            prompt = PromptFactory()
            make_version(prompt)
            make_version(prompt)
            release_deploy(
                prompt=prompt, environment=environments["staging"], version=1, actor=MANAGER
            )
            release_canary_start(
                prompt=prompt,
                environment=environments["staging"],
                version=2,
                percent=Decimal(10),
                actor=MANAGER,
            )
            schedule_create(
                prompt=prompt,
                environment=environments["staging"],
                steps=[
                    planned_step(
                        at=timezone.now() + timedelta(hours=1), action="canary_percent", percent=20
                    )
                ],
                actor=MANAGER,
            )

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert rita.get(url("changelist") + "?environment=staging").status_code == 200
        return len(captured)

    rows(2)
    few = queries()
    rows(6)
    assert queries() == few


def test_in_a_protected_environment_the_form_proposes_the_schedule(client, reviewed):
    """Decision 0048: the schedule itself is what is reviewed; the request page lists its steps."""
    alice = reviewed.alice
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    production = reviewed.released.release("production")
    page = text(client.get(url("schedule", production.pk)))
    assert "requires review: the schedule is proposed as a change request" in page
    steps = [(when(1), "canary_start", "2", "10"), (when(2), "canary_promote", "", "")]
    response = client.post(url("schedule", production.pk), form(production, steps, "ramp v2"))
    assert response.status_code == 302, text(response)
    assert not Schedule.objects.exists()
    proposed = ChangeRequest.objects.get()
    assert response["Location"] == reverse(
        "admin:releases_changerequest_change", args=[proposed.pk]
    )
    assert len(proposed.steps) == 2
    page = text(client.get(response["Location"]))
    assert re.search(r"canary v2 at 10 % at \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    assert re.search(r"promote at \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
