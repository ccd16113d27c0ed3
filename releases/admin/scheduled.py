"""What the board and the release page say about a release's schedule (decision 0049): the steps
still to come in words ("25 % at 2026-03-02 14:00 UTC, then 50 % at 18:00, then promote at
19:00"), and the schedule shown on the release page (the active one, else the last, with how it
ended). The pages that schedule and cancel are ``releases.admin.schedules``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from releases.errors import ScheduleNotFound
from releases.models import Release, Schedule, ScheduledStep
from releases.selectors import schedule_shown
from releases.services.schedule import steps_text


def schedule_url(release_id: int) -> str:
    return reverse("admin:releases_release_schedule", args=[release_id])


def schedule_cancel_url(release_id: int) -> str:
    return reverse("admin:releases_release_schedule_cancel", args=[release_id])


def pending_text(schedule: Schedule | None) -> str:
    """The steps still to come, in words; '' for none (uses the prefetched steps)."""
    if schedule is None:
        return ""
    return steps_text([s for s in schedule.steps.all() if s.state == ScheduledStep.State.PENDING])


@dataclass(frozen=True, slots=True)
class SchedulePanel:
    """What the release page shows of the release's schedule: the active one, else the last."""

    schedule: Schedule
    pending: str
    can_cancel: bool


def schedule_panel(release: Release, *, can_change: bool) -> SchedulePanel | None:
    try:
        schedule = schedule_shown(prompt=release.prompt, environment=release.environment)
    except ScheduleNotFound:
        return None
    active = schedule.state == Schedule.State.ACTIVE
    return SchedulePanel(schedule, pending_text(schedule), can_cancel=can_change and active)
