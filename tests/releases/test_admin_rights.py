"""The release admin and the environments' release rights (releases.rights): the board offers
only what the user may do and says who may change the environment; the verbs' pages refuse the
others with that sentence and change nothing.

Staging names "Staging releasers" and nora. Personas:
- ``omar``: a release manager left out of staging: looks at it, changes production.
- ``gina``: a release manager in "Staging releasers": changes staging.
- ``root``: a superuser: edits who may change an environment.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from registry.actors import Actor
from releases import services
from releases.models import Release
from releases.state import release_state
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor(label="release-manager")
WHO = "Only members of Staging releasers, or nora, may change releases in staging."


def url(name: str, *args: object) -> str:
    return reverse(f"admin:releases_release_{name}", args=args)


def text(response) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", body.replace("&nbsp;", " ").replace("&amp;", "&"))


def verb_buttons(response) -> int:
    return response.content.decode().count('class="button release-verb')


def snapshot(release: Release) -> tuple[int, dict, int]:
    release.refresh_from_db()
    return release.revision, release_state(release).as_dict(), release.events.count()


@pytest.fixture
def people(released):
    managers = Group.objects.get(name="Release managers")
    releasers = Group.objects.create(name="Staging releasers")
    omar = UserFactory(username="omar", is_staff=True)
    omar.groups.add(managers)
    gina = UserFactory(username="gina", is_staff=True)
    gina.groups.add(managers, releasers)
    nora = UserFactory(username="nora", is_staff=True)
    nora.groups.add(managers)
    staging = released.environments["staging"]
    staging.release_groups.add(releasers)
    staging.release_users.add(nora)
    return {"omar": omar, "gina": gina, "nora": nora}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- the board ----------------------------------------------------------------------------------


def test_the_board_offers_no_verb_to_someone_left_out_and_says_who_may(released, people):
    omar = logged_in(people["omar"])

    response = omar.get(url("changelist"), {"environment": "staging"})

    assert response.status_code == 200
    page = text(response)
    assert f"{WHO} Superusers always may." in page
    assert f"You may look only: {WHO}" in page
    assert verb_buttons(response) == 0
    assert "Deploy a prompt" not in page


def test_the_board_offers_the_verbs_where_the_user_may_change(released, people):
    gina, omar = logged_in(people["gina"]), logged_in(people["omar"])

    staging = gina.get(url("changelist"), {"environment": "staging"})
    production = omar.get(url("changelist"), {"environment": "production"})

    assert "You may change releases here and roll them back." in text(staging)
    assert verb_buttons(staging) > 0
    assert "Deploy a prompt" in text(staging)
    assert "Everyone with the release permissions may change releases in production." in text(
        production
    )
    assert verb_buttons(production) > 0


def test_the_release_page_offers_no_verb_to_someone_left_out(released, people):
    release = released.release("staging")

    page = logged_in(people["omar"]).get(url("change", release.pk))

    assert page.status_code == 200
    assert f"You may look at this release only: {WHO}" in text(page)
    assert url("deploy", release.pk) not in page.content.decode()
    assert url("rollback", release.pk) not in page.content.decode()  # nor in the timeline


# --- the verbs' pages ---------------------------------------------------------------------------


VERB_PAGES = [
    ("deploy", {"version": 3}, None),
    ("canary_start", {"version": 3, "percent": 5}, None),
    ("canary_percent", {"percent": 25}, "canary"),
    ("canary_promote", {}, "canary"),
    ("canary_abort", {}, "canary"),
    ("experiment_start", {"name": "tone", "variants": "warm:2:50\nbrief:3:50"}, None),
    ("experiment_stop", {"winner": ""}, "experiment"),
    ("shadow_start", {"versions": "3", "sample_percent": 5}, None),
    ("shadow_stop", {}, "shadow"),
    ("rollback", {}, None),
]


def set_up(released, running: str | None) -> None:
    target = {"prompt": released.prompt, "environment": released.environments["staging"]}
    if running == "canary":
        services.release_canary_start(**target, version=3, percent=Decimal(10), actor=SYSTEM)
    elif running == "experiment":
        services.release_experiment_start(
            **target,
            name="tone",
            variants=[("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))],
            actor=SYSTEM,
        )
    elif running == "shadow":
        services.release_shadow_start(
            **target, versions=[3], sample_percent=Decimal(5), actor=SYSTEM
        )


@pytest.mark.parametrize(("verb", "data", "running"), VERB_PAGES)
def test_each_verb_page_refuses_someone_left_out_with_who_may(
    released, people, verb, data, running
):
    set_up(released, running)
    release = released.release("staging")
    before = snapshot(release)
    omar = logged_in(people["omar"])

    shown = omar.get(url(verb, release.pk), data)
    posted = omar.post(
        url(verb, release.pk), {**data, "reason": "mine", "revision": release.revision}
    )

    for response in (shown, posted):
        assert response.status_code == 403
        assert WHO in text(response)
        assert 'name="reason"' not in response.content.decode()  # nothing to confirm
    assert snapshot(release) == before


def test_a_member_of_the_group_applies_a_verb_from_its_page(released, people):
    release = released.release("staging")

    response = logged_in(people["gina"]).post(
        url("deploy", release.pk), {"version": 3, "reason": "ours", "revision": release.revision}
    )

    assert response.status_code == 302
    release.refresh_from_db()
    event = release.events.latest("id")
    assert (event.actor_label, event.after["stable"]) == ("gina", 3)


def test_deploying_a_prompt_to_an_environment_the_user_may_not_change_is_refused(released, people):
    from tests.factories import PromptFactory, make_version

    prompt = PromptFactory(key="sales.recap")
    make_version(prompt)
    omar = logged_in(people["omar"])
    chosen = {"prompt": prompt.pk, "environment": "staging", "version": 1}

    shown = omar.get(url("deploy_prompt"), chosen)
    posted = omar.post(url("deploy_prompt"), {**chosen, "reason": "mine", "revision": 0})

    for response in (shown, posted):
        assert response.status_code == 403
        assert WHO in text(response)
    assert not Release.objects.filter(prompt=prompt).exists()


def test_a_bulk_rollback_skips_the_releases_the_user_may_not_change(released, people):
    release = released.release("staging")
    before = snapshot(release)
    board = url("changelist") + "?environment=staging"
    data = {"action": "rollback_selected", "_selected_action": [release.pk]}
    omar = logged_in(people["omar"])

    page = text(omar.post(board, data))
    omar.post(board, {**data, "post": "yes", f"revision-{release.pk}": release.revision})

    assert f"Left as it is: {WHO}" in page
    assert snapshot(release) == before


# --- who may change an environment --------------------------------------------------------------


def test_a_superuser_names_who_may_change_an_environment(released, people):
    root = logged_in(UserFactory(username="root", is_staff=True, is_superuser=True))
    production = released.environments["production"]
    change = reverse("admin:releases_environment_change", args=[production.pk])
    oncall = Group.objects.create(name="Oncall")

    form = root.get(change)
    response = root.post(
        change,
        {
            "position": production.position,
            "requires_previous_stable": "on",
            "description": "Live.",
            "release_groups": [oncall.pk],
            "release_users": [people["omar"].pk],
            "approvals_required": 1,  # the review's fields (decision 0048), left as they were
            "change_request_hours": 72,
        },
    )

    assert "Superusers always may" in text(form)  # the fields' help text
    assert response.status_code == 302
    assert list(production.release_groups.all()) == [oncall]
    assert list(production.release_users.all()) == [people["omar"]]
    listing = text(root.get(reverse("admin:releases_environment_changelist")))
    assert "Only members of Oncall, or omar, may change releases in production." in listing
