"""Change requests in the admin (releases.admin.requests, decision 0048): in production, which
requires review, the board's verbs propose; the queue lists the requests with their conflicts; a
request's page shows what it changes and takes a reviewer's verdict, the apply, the withdrawal.

Users: alice proposes (a release manager, not a reviewer); bob reviews (a release manager in
"Release reviewers"); ``reviewed`` (tests/conftest.py) sets production up."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from releases.models import ChangeRequest, ReleaseEvent
from tests.releases.test_admin import text, url

pytestmark = pytest.mark.django_db

State = ChangeRequest.State


@pytest.fixture
def people(reviewed):
    managers = Group.objects.get(name="Release managers")
    for user in (reviewed.alice, reviewed.bob):
        user.is_staff = True
        user.save()
        user.groups.add(managers)
    return reviewed


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def request_url(change_request: ChangeRequest) -> str:
    return reverse("admin:releases_changerequest_change", args=[change_request.pk])


def propose_canary(people, client: Client, percent: int = 10) -> ChangeRequest:
    release = people.released.release("production")
    response = client.post(
        url("canary_start", release.pk),
        {"version": 2, "percent": percent, "reason": "v2 is ready", "revision": release.revision},
    )
    change_request = ChangeRequest.objects.order_by("-id").first()
    assert response.status_code == 302, text(response)
    assert response["Location"] == request_url(change_request)
    return change_request


def test_in_a_protected_environment_the_board_proposes_and_a_second_person_applies(people):
    release = people.released.release("production")
    alice, bob = login(people.alice), login(people.bob)
    page = alice.get(url("canary_start", release.pk, version=2, percent=10))
    assert 'value="Propose: Start the canary"' in page.content.decode()
    assert "production requires review" in text(page)
    assert "Propose: Start canary" in text(alice.get(url("change", release.pk)))

    change_request = propose_canary(people, alice)
    assert change_request.proposed_by == people.alice
    release.refresh_from_db()
    assert release.canary_version is None  # proposed, not applied

    shown = text(bob.get(request_url(change_request)))
    assert "Open" in shown
    assert "v2 is ready" in shown
    assert "Version 2 against version 1, stable now" in shown
    assert "Approve" in shown

    bob.post(request_url(change_request), {"step": "approve", "comment": "fine by me"})
    change_request.refresh_from_db()
    assert change_request.state == State.APPROVED

    alice.post(request_url(change_request), {"step": "apply"})
    change_request.refresh_from_db()
    assert change_request.state == State.APPLIED
    release.refresh_from_db()
    assert release.canary_version.number == 2
    assert change_request.release_event.action == ReleaseEvent.Action.CANARY_START
    assert "fine by me" in text(alice.get(request_url(change_request)))


def test_approving_ones_own_request_is_refused_with_a_message(people):
    alice = login(people.alice)
    change_request = propose_canary(people, alice)
    assert ">Approve<" not in alice.get(request_url(change_request)).content.decode()
    response = alice.post(
        request_url(change_request), {"step": "approve", "comment": "me"}, follow=True
    )
    assert "someone else" in text(response)
    change_request.refresh_from_db()
    assert change_request.state == State.OPEN


def test_the_queue_shows_conflicting_requests_and_the_page_what_moved(people):
    alice, bob = login(people.alice), login(people.bob)
    first = propose_canary(people, alice)
    second = propose_canary(people, alice, percent=5)
    queue = text(bob.get(reverse("admin:releases_changerequest_changelist")))
    assert f"conflicts with #{first.pk}" in queue
    assert f"conflicts with #{second.pk}" in queue
    for each in (first, second):
        bob.post(request_url(each), {"step": "approve"})
    alice.post(request_url(first), {"step": "apply"})
    response = alice.post(request_url(second), {"step": "apply"}, follow=True)
    assert "The release moved since" in text(response)
    assert "canary started by alice" in text(response)
    second.refresh_from_db()
    assert second.state == State.APPROVED


def test_rollback_from_the_board_is_not_held(people):
    release = people.released.release("production")
    alice = login(people.alice)
    response = alice.post(url("rollback", release.pk), {"reason": "", "revision": release.revision})
    assert response.status_code == 302
    assert release.events.order_by("-id").first().reason.startswith("Not held for review")


def test_withdraw_from_the_request_page(people):
    alice = login(people.alice)
    change_request = propose_canary(people, alice)
    alice.post(request_url(change_request), {"step": "withdraw", "comment": "later"})
    change_request.refresh_from_db()
    assert change_request.state == State.WITHDRAWN
