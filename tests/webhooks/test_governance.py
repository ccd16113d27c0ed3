"""Issue 18's "done when", end to end on the demo registry with a real Celery worker, a real beat
and Redis: in production (which the demo protects with review), a canary is proposed by the admin,
approved by the printed reviewer and applied; then its ramp is proposed as a schedule, approved,
applied, and beat ramps and promotes it when the steps fall due. A webhook receiver, down when the
first events are sent, gets every one of them once back: signed, once each, in the order they
happened."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from registry.actors import Actor
from releases.models import ChangeRequest, Environment, Release, Schedule
from releases.services import CanaryPercent, CanaryPromote, CanaryStart, PlannedStep
from releases.services.change_requests import (
    change_request_apply,
    change_request_propose,
    change_request_review,
)
from tests.celery_worker import ROOT, wait_for, worker_on_own_queue
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

KEY = "marketing.product-description"


def test_in_the_demo_production_a_reviewed_canary_is_ramped_by_beat_and_every_event_arrives(
    settings, needs_redis, tmp_path, receiver, subscribe, environments
):
    # ``environments``: written again if another transactional test's flush removed them.
    with override_settings(VAR_DIR=tmp_path):
        call_command("demo", stdout=StringIO())
    users = get_user_model().objects
    admin = Actor.for_user(users.get(username="admin"))
    reviewer = Actor.for_user(users.get(username="reviewer"))
    production = Environment.objects.get(name="production")
    assert production.requires_review
    release = Release.objects.get(prompt__key=KEY, environment=production)
    prompt = release.prompt
    _, secret = subscribe(
        "/governance",
        event_types=["change_request.opened", "change_request.decided", "release.changed"],
        prompt=prompt,
    )
    receiver.stop()  # down: the first sends are refused, and wait

    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="governance") as worker:
        worker.env |= {
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "WEBHOOK_RETRY_BASE_SECONDS": "1",
            "RELEASE_SCHEDULE_TICK_SECONDS": "1",
        }
        worker.start()
        beat = _beat(worker.env, tmp_path)
        try:
            canary = change_request_propose(
                prompt=prompt,
                environment=production,
                change=CanaryStart(version=2, percent=Decimal(5)),
                actor=admin,
                reason="Try v2 on 5 %.",
            )
            change_request_review(
                change_request_id=canary.pk, actor=reviewer, verdict="approve", comment="Go."
            )
            change_request_apply(change_request_id=canary.pk, actor=admin)
            wait_for(
                lambda: DeliveryAttempt.objects.filter(
                    outcome=DeliveryAttempt.Outcome.FAILED
                ).exists(),
                "a delivery to fail while the receiver is down",
            )
            receiver.start()

            soon = timezone.now() + timedelta(seconds=3)
            ramp = change_request_propose(
                prompt=prompt,
                environment=production,
                steps=[
                    PlannedStep(at=soon, change=CanaryPercent(percent=Decimal(25))),
                    PlannedStep(at=soon + timedelta(seconds=2), change=CanaryPromote()),
                ],
                actor=admin,
                reason="Ramp v2, then promote.",
            )
            change_request_review(
                change_request_id=ramp.pk, actor=reviewer, verdict="approve", comment="Ramp it."
            )
            change_request_apply(change_request_id=ramp.pk, actor=admin)
            ramp.refresh_from_db()
            assert ramp.state == ChangeRequest.State.APPLIED

            wait_for(
                lambda: Schedule.objects.get(pk=ramp.schedule_id).state == Schedule.State.DONE,
                "beat to apply the ramp's steps",
            )
            wait_for(
                lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == 9,
                "every delivery",
            )
        finally:
            beat.terminate()
            beat.wait(timeout=10)

    release.refresh_from_db()
    assert (release.stable_version.number, release.canary_version_id) == (2, None)
    received = receiver.paths("/governance")
    assert all(r.verified_by(secret) for r in received)
    assert len({r.headers["webhook-id"] for r in received}) == len(received)  # once each
    story = [
        (r.type, r.json["data"].get("state") or r.json["data"].get("action")) for r in received
    ]
    assert story == [
        ("change_request.opened", "open"),
        ("change_request.decided", "approved"),
        ("release.changed", "canary_start"),
        ("change_request.decided", "applied"),
        ("change_request.opened", "open"),
        ("change_request.decided", "approved"),
        ("change_request.decided", "applied"),
        ("release.changed", "canary_percent"),  # beat, when the first step was due
        ("release.changed", "canary_promote"),
    ]
    ramped, promoted = (r.json["data"] for r in received[-2:])
    assert ramped["actor"].startswith(f"schedule #{ramp.schedule_id}")
    assert promoted["after"]["stable"] == 2


def _beat(env: dict[str, str], tmp_path) -> subprocess.Popen[bytes]:
    """``celery beat`` on the worker's queue, ticking every second for schedules."""
    log = (tmp_path / "beat.log").open("ab")
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"),
            *("--schedule", str(tmp_path / "beat-schedule")),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
