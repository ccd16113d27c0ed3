"""The admin for release managers: the board, the verbs' confirmation pages, the timelines, the
bulk actions and who may do what.

Personas (each with what it may do):
- ``root``: a superuser; everything, except changing the audit log, which nobody may.
- ``rita`` (``release_manager``): in "Release managers"; changes releases, reads prompts, may not
  change a prompt or a version.
- ``alice`` (``author``, tests/conftest.py): in "Prompt authors"; writes prompts, no releases.

Data comes from the ``released`` fixture (tests/conftest.py): support.refund-reply with committed
versions 1, 2, 3; v2 stable in staging, v1 stable in production.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from registry.actors import Actor
from releases import services
from releases.admin.display import state_changes
from releases.admin.traffic import sentences, traffic_between
from releases.models import Release, ReleaseEvent
from releases.state import Canary, Experiment, ReleaseState, Shadow, Variant, release_state
from tests.factories import PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")


@pytest.fixture
def root(db):
    """A superuser: every permission, but the audit log stays read-only."""
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def release_manager(db):
    """In "Release managers": changes releases, reads prompts, never changes their content."""
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    return user


@pytest.fixture
def rita(client: Client, release_manager) -> Client:
    client.force_login(release_manager)
    return client


def url(name: str, *args: object, **params: object) -> str:
    path = reverse(f"admin:releases_release_{name}", args=args)
    return path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def text(response) -> str:
    """The page's visible text, spaces collapsed: assertions read like the page does."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", body.replace("&nbsp;", " ").replace("&amp;", "&"))


def staging(released) -> Release:
    return released.release("staging")


def post_change(client: Client, path: str, release: Release, **data: object):
    data.setdefault("reason", "tests")
    data.setdefault("revision", release.revision)
    return client.post(path, data)


def snapshot(release: Release) -> tuple[int, dict, int]:
    release.refresh_from_db()
    return release.revision, release_state(release).as_dict(), release.events.count()


# --- the board ----------------------------------------------------------------------------------


def board_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url("changelist", environment="staging"))
    assert response.status_code == 200
    return len(queries)


def release_prompts(count: int, environments) -> None:
    for _ in range(count):
        prompt = PromptFactory()
        make_version(prompt)
        make_version(prompt)
        services.release_deploy(
            prompt=prompt, environment=environments["staging"], version=1, actor=MANAGER
        )
        services.release_canary_start(
            prompt=prompt,
            environment=environments["staging"],
            version=2,
            percent=Decimal(10),
            actor=MANAGER,
            reason="a canary on every row",
        )


def test_the_board_costs_the_same_queries_for_2_and_12_releases(
    rita, environments, django_assert_max_num_queries
):
    release_prompts(2, environments)
    few = board_queries(rita)
    release_prompts(10, environments)
    with django_assert_max_num_queries(few):
        response = rita.get(url("changelist", environment="staging"))
    assert "12 releases" in text(response)


def test_the_board_shows_one_environment_and_defaults_to_production(rita, released):
    services.release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(5),
        actor=MANAGER,
        reason="first look at v3",
    )
    page = text(rita.get(url("changelist")))
    assert "Release board: production" in page
    assert "support.refund-reply" in page
    assert "3 @ 5 %" not in page  # the canary runs in staging, not here

    page = text(rita.get(url("changelist", environment="staging")))
    assert "Release board: staging" in page
    assert "3 @ 5 %" in page
    assert "Canary started" in page
    assert "release-manager" in page
    assert "first look at v3" in page


def test_a_prompt_never_released_is_deployed_from_the_board(rita, environments):
    prompt = PromptFactory(key="sales.recap")
    make_version(prompt)
    path = url("deploy_prompt")

    page = text(rita.get(path, {"prompt": prompt.pk, "environment": "staging", "version": 1}))
    assert "never released here" in page
    assert "100 % of subjects start getting version 1" in page
    assert not Release.objects.filter(prompt=prompt).exists()  # GET changes nothing

    response = rita.post(
        path,
        {
            "prompt": prompt.pk,
            "environment": "staging",
            "version": 1,
            "reason": "go live",
            "revision": 0,
        },
    )
    release = Release.objects.get(prompt=prompt, environment__name="staging")
    assert response.status_code == 302
    assert response["Location"] == url("change", release.pk)
    assert release_state(release).stable == 1


# --- the verbs ----------------------------------------------------------------------------------


def test_the_canary_page_shows_the_target_and_the_traffic_it_moves(rita, released):
    release = staging(released)
    before = snapshot(release)

    response = rita.get(url("canary_start", release.pk, version=3, percent=5))

    page = text(response)
    assert response.status_code == 200
    assert "Now (revision 2)" in page
    assert "Canary none 3 @ 5 %" in page  # the side-by-side row: now, after
    assert "5 % of subjects (canary buckets 0–499) move from version 2 to version 3" in page
    assert "95 %" in page  # version 2's share after
    assert 'name="revision" value="2"' in response.content.decode()
    assert snapshot(release) == before


def test_posting_the_canary_applies_it_with_the_reason_and_the_user(rita, released):
    release = staging(released)

    response = post_change(
        rita,
        url("canary_start", release.pk),
        release,
        version=3,
        percent="5",
        reason="v3 reads better",
    )

    assert response.status_code == 302
    assert response["Location"] == url("change", release.pk)
    release.refresh_from_db()
    assert release_state(release).canary.weight == 500
    event = release.events.order_by("-id").first()
    assert event.action == ReleaseEvent.Action.CANARY_START
    assert (event.reason, event.actor_label) == ("v3 reads better", "rita")
    assert event.actor.username == "rita"


def test_a_release_manager_ramps_the_canary_and_promotes_it(rita, released):
    release = staging(released)
    post_change(rita, url("canary_start", release.pk), release, version=3, percent="5")
    for percent in (25, 50):
        release.refresh_from_db()
        page = text(rita.get(url("canary_percent", release.pk, percent=percent)))
        assert f"3 @ {percent} %" in page
        response = post_change(rita, url("canary_percent", release.pk), release, percent=percent)
        assert response.status_code == 302

    release.refresh_from_db()
    page = text(rita.get(url("canary_promote", release.pk)))
    assert "50 % of subjects (canary buckets 5000–9999) move from version 2 to version 3" in page
    post_change(rita, url("canary_promote", release.pk), release, reason="all good")

    release.refresh_from_db()
    assert release_state(release) == ReleaseState(stable=3)
    actions = list(release.events.order_by("id").values_list("action", flat=True))[-4:]
    assert actions == ["canary_start", "canary_percent", "canary_percent", "canary_promote"]


def test_rollback_shows_its_target_then_applies_it(rita, released):
    release = staging(released)
    post_change(rita, url("canary_start", release.pk), release, version=3, percent="25")
    release.refresh_from_db()
    post_change(rita, url("canary_percent", release.pk), release, percent="50")
    release.refresh_from_db()

    page = text(rita.get(url("rollback", release.pk)))
    assert "restores the state before revision 4" in page
    assert "Canary 3 @ 50 % 3 @ 25 %" in page
    assert "25 % of subjects (canary buckets 2500–4999) return from version 3 to version 2" in page

    response = post_change(rita, url("rollback", release.pk), release, reason="")
    assert response.status_code == 302  # the way back needs no reason
    release.refresh_from_db()
    assert release_state(release).canary.weight == 2500
    assert release.events.order_by("-id").first().action == ReleaseEvent.Action.ROLLBACK


def test_rollback_to_a_chosen_event_from_the_timeline(rita, released):
    release = staging(released)
    first = release.events.order_by("id").first()  # deploy of v1
    post_change(rita, url("canary_start", release.pk), release, version=3, percent="5")
    release.refresh_from_db()

    page = text(rita.get(url("rollback", release.pk, to_event=first.pk)))
    assert "restores the state before revision 1" in page
    assert "stop getting version 2" in page
    assert "stop getting version 3" in page

    response = post_change(rita, url("rollback", release.pk), release, to_event=first.pk)
    assert response.status_code == 302
    release.refresh_from_db()
    assert release_state(release) == ReleaseState()


def test_a_stale_revision_shows_the_conflict_and_changes_nothing(rita, released):
    release = staging(released)
    seen = release.revision
    services.release_canary_start(  # someone else, meanwhile
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(5),
        actor=MANAGER,
        reason="meanwhile",
    )
    before = snapshot(release)

    response = post_change(
        rita, url("canary_percent", release.pk), release, percent="50", revision=seen
    )

    page = text(response)
    assert response.status_code == 200
    assert "Someone changed this release meanwhile: it is at revision 3 now" in page
    assert "Now (revision 3)" in page
    assert "3 @ 5 %" in page
    assert 'name="revision" value="3"' in response.content.decode()
    assert snapshot(release) == before


def test_a_planned_sample_too_small_for_the_variants_is_refused_next_to_its_field(rita, released):
    release = staging(released)
    before = snapshot(release)

    response = post_change(
        rita,
        url("experiment_start", release.pk),
        release,
        name="tone",
        variants="control 2 50\ncandidate 3 50",
        planned_calls="40",
    )

    assert response.status_code == 200
    assert "Plan from 30 sticky calls per variant" in text(response)
    assert snapshot(release) == before


def test_an_experiment_and_shadows_go_through_their_pages(rita, released):
    release = staging(released)
    page = text(rita.get(url("experiment_start", release.pk)))
    assert "This field is required." not in page  # a form to fill in, proposed variants
    assert "control 2 50" in page

    variants = "control 2 50\ncandidate 3 50"
    page = text(
        rita.get(url("experiment_start", release.pk), {"name": "tone", "variants": variants})
    )
    assert (
        "50 % of subjects (experiment buckets 5000–9999) move from version 2 to version 3" in page
    )
    post_change(
        rita,
        url("experiment_start", release.pk),
        release,
        name="tone",
        variants=variants,
        planned_calls="2000",
    )
    release.refresh_from_db()
    assert release_state(release).experiment.name == "tone"
    assert release_state(release).experiment.planned_calls == 2000
    assert "(planned: 2,000 sticky calls)" in text(rita.get(url("change", release.pk)))

    page = text(rita.get(url("experiment_stop", release.pk), {"winner": "candidate"}))
    assert "50 % of subjects (experiment buckets 0–4999) move from version 2 to version 3" in page
    post_change(rita, url("experiment_stop", release.pk), release, winner="candidate")
    release.refresh_from_db()
    assert release_state(release) == ReleaseState(stable=3)

    page = text(rita.get(url("shadow_start", release.pk), {"versions": "1", "sample_percent": 10}))
    assert "No subject changes version." in page
    post_change(rita, url("shadow_start", release.pk), release, versions="1", sample_percent=10)
    release.refresh_from_db()
    assert release_state(release).shadow.versions == (1,)
    post_change(rita, url("shadow_stop", release.pk), release)
    release.refresh_from_db()
    assert release_state(release).shadow is None


def field_value(response, name: str) -> str | None:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*>', response.content.decode())
    value = re.search(r'value="([^"]*)"', match.group(0)) if match else None
    return value.group(1) if value else None


@override_settings(SHADOW_BUDGET_PER_HOUR=600)
def test_shadows_take_a_budget_and_change_it_on_the_same_page(rita, released):
    release = staging(released)
    page = text(rita.get(url("shadow_start", release.pk)))
    assert "empty: the server default (600)" in page

    params = {"versions": "3", "sample_percent": 10, "budget_per_hour": 120}
    page = text(rita.get(url("shadow_start", release.pk), params))
    assert "also runs version 3, out of users" in page
    assert "within 120 runs/hour; no subject changes version" in page
    post_change(rita, url("shadow_start", release.pk), release, **params)
    release.refresh_from_db()
    first = release_state(release).shadow
    assert (first.versions, first.sample, first.budget_per_hour) == ((3,), 1000, 120)

    page = text(rita.get(url("change", release.pk)))
    assert "Change shadows" in page
    assert "Stop shadows" in page

    # The page opens with what runs; only the budget is typed anew.
    response = rita.get(url("shadow_start", release.pk))
    assert (field_value(response, "versions"), field_value(response, "budget_per_hour")) == (
        "3",
        "120",
    )
    assert Decimal(field_value(response, "sample_percent")) == 10
    page = text(rita.get(url("shadow_start", release.pk), {**params, "budget_per_hour": 30}))
    assert (
        "the same calls stay sampled; their budget goes from 120 runs/hour to 30 runs/hour" in page
    )
    assert "(new draw)" not in page
    post_change(rita, url("shadow_start", release.pk), release, **{**params, "budget_per_hour": 30})
    release.refresh_from_db()
    shadow = release_state(release).shadow
    assert (shadow.salt, shadow.budget_per_hour) == (first.salt, 30)

    assert "30 runs/hour" in text(rita.get(url("changelist", environment="staging")))

    # Emptied: back to the server default, still the same sample.
    post_change(rita, url("shadow_start", release.pk), release, versions="3", sample_percent=10)
    release.refresh_from_db()
    shadow = release_state(release).shadow
    assert (shadow.salt, shadow.budget_per_hour) == (first.salt, None)
    assert "600 runs/hour (default)" in text(rita.get(url("changelist", environment="staging")))


@pytest.mark.parametrize("budget", ["0", "100001", "-3"])
def test_a_bad_shadow_budget_is_shown_on_the_page_and_changes_nothing(rita, released, budget):
    release = staging(released)
    before = snapshot(release)

    response = post_change(
        rita,
        url("shadow_start", release.pk),
        release,
        versions="3",
        sample_percent=10,
        budget_per_hour=budget,
    )

    assert response.status_code == 200
    assert "Give shadow runs per hour as a whole number from 1 to 100,000" in text(response)
    assert snapshot(release) == before


def test_errors_are_shown_on_the_page_and_change_nothing(rita, released):
    release = staging(released)
    make_version(released.prompt, commit=False)  # version 4, a draft
    before = snapshot(release)

    response = post_change(rita, url("canary_start", release.pk), release, version=4, percent="5")
    assert response.status_code == 200
    assert "is a draft; commit it before releasing it" in text(response)

    response = rita.get(url("canary_start", release.pk, version=3, percent=101))
    assert response.status_code == 200
    assert "Give a percentage from 0 to 100." in text(response)

    response = post_change(rita, url("canary_promote", release.pk), release)
    assert response.status_code == 200
    assert "No canary is running." in text(response)

    response = post_change(rita, url("deploy", release.pk), release, version=99)
    assert "has no version 99" in text(response)
    assert snapshot(release) == before


def test_a_promotion_gate_is_shown_with_its_name(rita, released):
    release = released.release("production")  # takes only what has been stable in staging

    response = post_change(rita, url("canary_start", release.pk), release, version=3, percent="5")

    assert response.status_code == 200
    assert "gate: environment-order" in text(response)


def test_a_change_needs_a_reason_but_the_way_back_does_not(rita, released):
    release = staging(released)
    response = post_change(rita, url("deploy", release.pk), release, version=3, reason="")
    assert response.status_code == 200
    assert "This field is required." in text(response)
    assert post_change(rita, url("rollback", release.pk), release, reason="").status_code == 302


def test_changes_are_csrf_protected(release_manager, released):
    client = Client(enforce_csrf_checks=True)
    client.force_login(release_manager)
    release = staging(released)
    response = post_change(client, url("deploy", release.pk), release, version=3)
    assert response.status_code == 403


# --- who may do what ----------------------------------------------------------------------------


def test_a_release_manager_cannot_change_prompt_content(rita, released):
    prompt, version = released.prompt, released.versions[3]
    assert rita.get(reverse("admin:registry_prompt_change", args=[prompt.pk])).status_code == 200
    response = rita.post(
        reverse("admin:registry_prompt_change", args=[prompt.pk]),
        {"description": "changed by a release manager", "tags": "[]"},
    )
    assert response.status_code == 403
    assert rita.get(reverse("admin:registry_promptversion_add")).status_code == 403
    assert rita.get(reverse("admin:registry_prompt_add")).status_code == 403
    prompt.refresh_from_db()
    assert prompt.description != "changed by a release manager"
    assert version.is_committed


def test_an_author_may_not_see_or_change_releases(client, author, released):
    client.force_login(author)
    release = staging(released)
    before = snapshot(release)
    assert client.get(url("changelist")).status_code == 403
    assert client.get(url("change", release.pk)).status_code == 403
    for verb, data in [
        ("canary_start", {"version": 3, "percent": 5}),
        ("rollback", {}),
        ("deploy", {"version": 3}),
    ]:
        assert client.get(url(verb, release.pk)).status_code == 403
        assert post_change(client, url(verb, release.pk), release, **data).status_code == 403
    assert client.get(url("deploy_prompt")).status_code == 403
    assert snapshot(release) == before


def test_rollback_needs_its_own_permission(client, released):
    """A user who may deploy but not roll back gets the verbs without the way back."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="dora", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_release", "deploy_release"])
    )
    client.force_login(user)
    release = staging(released)
    assert client.get(url("canary_start", release.pk)).status_code == 200
    assert client.get(url("rollback", release.pk)).status_code == 403
    assert "Roll back" not in text(client.get(url("change", release.pk)))


# --- the release page and timelines --------------------------------------------------------------


def ramp_back_and_forth(released, times: int) -> None:
    environment = released.environments["staging"]
    services.release_canary_start(
        prompt=released.prompt,
        environment=environment,
        version=3,
        percent=Decimal(5),
        actor=MANAGER,
        reason="start",
    )
    for i in range(times):
        services.release_canary_set_percent(
            prompt=released.prompt,
            environment=environment,
            percent=Decimal(10 + i % 2),
            actor=MANAGER,
            reason=f"ramp {i}",
        )


def test_the_timeline_is_paginated_newest_first_with_before_and_after(rita, released):
    ramp_back_and_forth(released, 23)  # 2 deploys + start + 23 ramps = 26 events
    release = staging(released)

    response = rita.get(url("change", release.pk))
    page = text(response)
    assert page.count("Roll back to before this") == 20
    assert page.index("ramp 22") < page.index("ramp 21")  # newest first
    assert "canary 3 @ 11 % → 10 %" in page
    older = re.search(r'href="\?before=(\d+)"', response.content.decode())
    assert older is not None

    page = text(rita.get(url("change", release.pk), {"before": older[1]}))
    assert page.count("Roll back to before this") == 6
    assert "stable none → 1" in page
    assert "stable 1 → 2" in page
    assert "Older changes" not in page


def test_the_release_page_costs_the_same_queries_for_any_history(rita, released):
    release = staging(released)
    with CaptureQueriesContext(connection) as short:
        rita.get(url("change", release.pk))
    ramp_back_and_forth(released, 30)
    with CaptureQueriesContext(connection) as long:
        assert rita.get(url("change", release.pk)).status_code == 200
    assert len(long) == len(short)


def test_the_prompt_history_covers_every_environment(rita, released):
    page = text(rita.get(url("prompt_history", released.prompt.pk)))
    assert "Release history of support.refund-reply" in page
    assert "staging stable 2" in page
    assert "production stable 1" in page
    assert "development never released" in page
    assert page.count("Roll back to before this") == 3  # 2 staging + 1 production deploys

    page = text(rita.get(url("prompt_history", released.prompt.pk), {"environment": "production"}))
    assert page.count("Roll back to before this") == 1


def test_release_events_are_read_only_for_everyone(client, root, released):
    client.force_login(root)
    event = ReleaseEvent.objects.first()
    change = reverse("admin:releases_releaseevent_change", args=[event.pk])
    response = client.get(change)
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert client.post(change, {"reason": "rewritten"}).status_code == 403
    assert client.get(reverse("admin:releases_releaseevent_add")).status_code == 403
    delete = reverse("admin:releases_releaseevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    changelist = client.get(reverse("admin:releases_releaseevent_changelist"))
    assert "delete_selected" not in changelist.content.decode()
    event.refresh_from_db()
    assert event.reason == "setup"


def test_environments_are_edited_by_superusers_and_read_by_release_managers(
    client, root, rita, released
):
    production = released.environments["production"]
    change = reverse("admin:releases_environment_change", args=[production.pk])
    assert rita.get(change).status_code == 200
    assert rita.post(change, {"position": 99}).status_code == 403

    client.force_login(root)
    fields = {"position": 30, "approvals_required": 1, "change_request_hours": 72}
    response = client.post(
        change, {**fields, "requires_previous_stable": "on", "description": "Live."}
    )
    assert response.status_code == 302
    production.refresh_from_db()
    assert (production.name, production.description) == ("production", "Live.")
    # Review needs reviewers (decision 0048): refused without a group, in the form's words.
    refused = client.post(change, {**fields, "requires_review": "on"})
    assert "An environment that requires review needs a review group." in text(refused)
    production.refresh_from_db()
    assert not production.requires_review


# --- bulk actions -------------------------------------------------------------------------------


def test_rolling_back_selected_releases_confirms_each_target_first(rita, released):
    release_prompts(1, released.environments)  # another prompt, with a canary of v2 at 10 %
    refund, other = Release.objects.filter(environment__name="staging").order_by("prompt__key")
    board = url("changelist", environment="staging")  # actions apply to the board's environment
    data = {"action": "rollback_selected", "_selected_action": [refund.pk, other.pk]}

    page = text(rita.post(board, data))
    assert "restores the state before revision 2" in page  # refund-reply: back to v1
    assert "100 % of subjects move from version 2 to version 1" in page
    assert "10 % of subjects (canary buckets 0–999) return from version 2 to version 1" in page
    assert ReleaseEvent.objects.filter(action="rollback").count() == 0  # nothing applied yet

    response = rita.post(
        board,
        {
            **data,
            "post": "yes",
            "reason": "bad day",
            f"revision-{refund.pk}": 2,
            f"revision-{other.pk}": 2,
        },
    )
    assert response.status_code == 302
    assert release_state(Release.objects.get(pk=refund.pk)) == ReleaseState(stable=1)
    assert release_state(Release.objects.get(pk=other.pk)) == ReleaseState(stable=1)
    assert ReleaseEvent.objects.filter(action="rollback", reason="bad day").count() == 2


def test_a_bulk_change_skips_a_release_changed_meanwhile(rita, released):
    release = staging(released)
    response = rita.post(
        url("changelist", environment="staging"),
        {
            "action": "rollback_selected",
            "_selected_action": [release.pk],
            "post": "yes",
            f"revision-{release.pk}": 1,  # the page showed revision 1; it is at 2
        },
        follow=True,
    )
    assert "changed meanwhile" in text(response)
    assert release_state(Release.objects.get(pk=release.pk)).stable == 2


def test_aborting_selected_canaries(rita, released):
    release = staging(released)
    services.release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(20),
        actor=MANAGER,
    )
    release_prompts(1, released.environments)  # another prompt, with a canary of v2 at 10 %
    other = Release.objects.exclude(prompt=released.prompt).get()
    services.release_canary_abort(prompt=other.prompt, environment=other.environment, actor=MANAGER)
    board = url("changelist", environment="staging")
    data = {"action": "abort_selected_canaries", "_selected_action": [release.pk, other.pk]}

    page = text(rita.post(board, data))
    assert "20 % of subjects (canary buckets 0–1999) return from version 3 to version 2" in page
    assert "Left as it is: No canary is running." in page

    rita.post(board, {**data, "post": "yes", f"revision-{release.pk}": 3})
    assert release_state(Release.objects.get(pk=release.pk)).canary is None


# --- the pure parts: state diff and traffic ---------------------------------------------------


def test_the_state_diff_names_only_what_changed():
    before = ReleaseState(stable=7, canary=Canary(8, 500, "s"))
    assert [
        (c.part, c.before, c.after)
        for c in state_changes(before, ReleaseState(stable=7, canary=Canary(8, 2500, "s")))
    ] == [("canary", "8 @ 5 %", "25 %")]
    assert [(c.part, c.before, c.after) for c in state_changes(before, ReleaseState(stable=8))] == [
        ("stable", "7", "8"),
        ("canary", "8 @ 5 %", "none"),
    ]
    restarted = ReleaseState(stable=7, canary=Canary(8, 500, "t"))
    assert state_changes(before, restarted)[0].after == "8 @ 5 % (new draw)"


def test_traffic_counts_a_canary_under_an_experiment_once():
    experiment = Experiment("tone", (Variant("a", 7, 5000), Variant("b", 8, 5000)), "e")
    before = ReleaseState(stable=7, experiment=experiment)
    after = ReleaseState(stable=7, canary=Canary(8, 1000, "c"), experiment=experiment)

    result = traffic_between(before, after)

    # 10 % of subjects go to the canary; half of them had version 8 already through variant b.
    assert [(m.source, m.target, m.share) for m in result.moves] == [(7, 8, Fraction(1, 20))]
    assert result.after == {8: Fraction(11, 20), 7: Fraction(9, 20)}


@override_settings(SHADOW_BUDGET_PER_HOUR=600)
def test_a_budget_change_reads_as_the_budget_alone():
    before = ReleaseState(stable=7, shadow=Shadow((9,), 1000, "x"))
    after = ReleaseState(stable=7, shadow=Shadow((9,), 1000, "x", 100))

    assert [(c.part, c.before, c.after) for c in state_changes(before, after)] == [
        ("shadows", "9 @ 10 % of calls, 600 runs/hour (default)", "100 runs/hour")
    ]
    _, lines = sentences(before, after)
    assert lines == [
        "No subject changes version.",
        "Shadows: the same calls stay sampled; their budget goes from 600 runs/hour (default) "
        "to 100 runs/hour.",
    ]


def test_shadows_move_no_subject():
    before = ReleaseState(stable=7)
    _, lines = sentences(before, ReleaseState(stable=7, shadow=Shadow((9,), 1000, "x")))
    assert lines[0] == "No subject changes version."
    assert "10 % of calls also runs version 9" in lines[1]
