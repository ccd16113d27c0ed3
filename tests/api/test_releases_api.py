"""The release API for automation (api/releases.py): /api/v1/environments and
/api/v1/releases/{environment}/{key}[/...]. Changes need ``releases:write``; keys limited to
environments cannot touch another; ``If-Match`` carries the revision read; every refusal is a
problem document and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from registry.actors import Actor
from releases import services
from releases.models import Release, ReleaseEvent
from tests.api.helpers import assert_problem
from tests.factories import make_version

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
MANAGER = Actor(label="release-manager")


def url(environment: str = "staging", suffix: str = "", key: str = KEY) -> str:
    return f"/api/v1/releases/{environment}/{key}" + (f"/{suffix}" if suffix else "")


def on(released, service, environment: str = "staging", **kwargs) -> Release:
    return service(
        prompt=released.prompt,
        environment=released.environments[environment],
        actor=MANAGER,
        **kwargs,
    )


def canary(released) -> None:
    on(released, services.release_canary_start, version=3, percent=Decimal(10))


def experiment(released) -> None:
    on(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))],
    )


def shadow(released) -> None:
    on(released, services.release_shadow_start, versions=[3], sample_percent=Decimal(5))


def nothing(released) -> None:
    pass


# Every change endpoint: the state it needs, a body that works, and what it leaves.
ENDPOINTS: dict[str, tuple[Callable[[Any], None], dict[str, Any], Callable[[dict], bool]]] = {
    "deploy": (nothing, {"version": 3}, lambda r: r["stable"] == 3),
    "canary": (
        nothing,
        {"version": 3, "percent": "12.5"},
        lambda r: r["canary"]["version"] == 3 and r["canary"]["percent"] == 12.5,
    ),
    "canary/percent": (canary, {"percent": 25}, lambda r: r["canary"]["percent"] == 25),
    "canary/promote": (canary, {}, lambda r: r["stable"] == 3 and r["canary"] is None),
    "canary/abort": (canary, {}, lambda r: r["stable"] == 2 and r["canary"] is None),
    "experiment": (
        nothing,
        {
            "name": "tone",
            "variants": [
                {"name": "warm", "version": 2, "percent": 30},
                {"name": "brief", "version": 3, "percent": "20.5"},
            ],
        },
        lambda r: [v["percent"] for v in r["experiment"]["variants"]] == [30, 20.5],
    ),
    "experiment/stop": (
        experiment,
        {"winner": "brief"},
        lambda r: r["stable"] == 3 and r["experiment"] is None,
    ),
    "shadow": (
        nothing,
        {"versions": [3], "sample_percent": 5},
        lambda r: r["shadow"]["versions"] == [3] and r["shadow"]["sample_percent"] == 5,
    ),
    "shadow/stop": (shadow, {}, lambda r: r["shadow"] is None),
    "rollback": (nothing, {}, lambda r: r["stable"] == 1),
}


@pytest.fixture
def staging_bot(make_client):
    """Release automation limited to staging: may change staging, may not touch production."""
    return make_client("prompts:read", "releases:write", environments=("staging",), name="staging")


def state_of(released, environment: str) -> tuple[int, int]:
    """What must not move when a change is refused: the revision and the number of events."""
    release = Release.objects.filter(prompt=released.prompt, environment__name=environment).first()
    if release is None:
        return (0, 0)
    return release.revision, release.events.count()


# --- every change endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_works_and_answers_the_release(releaser_client, released, endpoint):
    setup, body, expected = ENDPOINTS[endpoint]
    setup(released)
    revision = released.release("staging").revision

    response = releaser_client.post(
        url(suffix=endpoint), {**body, "reason": "Ticket 42."}, format="json"
    )

    assert response.status_code == 200, response.content
    answer = response.json()
    assert expected(answer), answer
    assert (answer["prompt"], answer["environment"]) == (KEY, "staging")
    assert answer["revision"] == revision + 1
    assert response["ETag"] == f'"{revision + 1}"'
    event = ReleaseEvent.objects.filter(release__environment__name="staging").latest("id")
    assert (event.actor_label, event.reason, event.revision) == (
        f"key:release-bot#{releaser_client.key.pk}",
        "Ticket 42.",
        revision + 1,
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_applies_with_the_current_revision_in_if_match(
    releaser_client, released, endpoint
):
    setup, body, _ = ENDPOINTS[endpoint]
    setup(released)
    revision = released.release("staging").revision

    response = releaser_client.post(
        url(suffix=endpoint), body, format="json", HTTP_IF_MATCH=f'"{revision}"'
    )

    assert response.status_code == 200, response.content


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_refuses_a_stale_revision_with_the_current_one(
    releaser_client, released, endpoint
):
    setup, body, _ = ENDPOINTS[endpoint]
    setup(released)
    before = state_of(released, "staging")

    response = releaser_client.post(
        url(suffix=endpoint), body, format="json", HTTP_IF_MATCH=str(before[0] - 1)
    )

    problem = assert_problem(response, 409, "/problems/stale-revision")
    assert problem["current_revision"] == before[0]
    assert state_of(released, "staging") == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_needs_the_releases_write_scope(reader_client, released, endpoint):
    setup, body, _ = ENDPOINTS[endpoint]
    setup(released)
    before = state_of(released, "staging")

    response = reader_client.post(url(suffix=endpoint), body, format="json")

    problem = assert_problem(response, 403, "/problems/insufficient-scope")
    assert problem["required_scope"] == "releases:write"
    assert state_of(released, "staging") == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_key_limited_to_staging_cannot_touch_production(staging_bot, released, endpoint):
    _, body, _ = ENDPOINTS[endpoint]
    before = state_of(released, "production")

    response = staging_bot.post(url("production", endpoint), body, format="json")

    problem = assert_problem(response, 403, "/problems/environment-forbidden")
    assert problem["environment"] == "production"
    assert state_of(released, "production") == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_key_limited_to_staging_may_use_every_verb_on_staging(staging_bot, released, endpoint):
    setup, body, expected = ENDPOINTS[endpoint]
    setup(released)

    response = staging_bot.post(url(suffix=endpoint), body, format="json")

    assert response.status_code == 200, response.content
    assert expected(response.json())
    event = ReleaseEvent.objects.filter(release__environment__name="staging").latest("id")
    assert event.actor_label == f"key:staging#{staging_bot.key.pk}"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_key_limited_to_production_cannot_use_any_verb_on_staging(
    make_client, released, endpoint
):
    """The persona of tests/releases/test_rights.py's ``prod-bot``, through the API: refused at
    the door, before the service is asked, and nothing moves."""
    prod_bot = make_client("releases:write", environments=("production",), name="prod-bot")
    setup, body, _ = ENDPOINTS[endpoint]
    setup(released)
    before = state_of(released, "staging")

    response = prod_bot.post(url(suffix=endpoint), body, format="json")

    problem = assert_problem(response, 403, "/problems/environment-forbidden")
    assert problem["detail"] == "The key is limited to production; it may not touch staging."
    assert state_of(released, "staging") == before


def test_the_people_an_environment_names_do_not_limit_keys(releaser_client, released):
    """Staging names a group and a person; a key without environment limits still changes it
    (keys are limited by their own environments, decision 0047)."""
    from django.contrib.auth.models import Group

    staging = released.environments["staging"]
    staging.release_groups.add(Group.objects.create(name="Staging releasers"))

    response = releaser_client.post(url(suffix="deploy"), {"version": 3}, format="json")

    assert response.status_code == 200, response.content


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_needs_a_key(anonymous_client, released, endpoint):
    response = anonymous_client.post(url(suffix=endpoint), {}, format="json")

    assert_problem(response, 401, "/problems/unauthenticated")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_404s_on_an_unknown_prompt(releaser_client, released, endpoint):
    _, body, _ = ENDPOINTS[endpoint]

    response = releaser_client.post(url(suffix=endpoint, key="no.such-prompt"), body, format="json")

    assert_problem(response, 404, "/problems/prompt-not-found")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_change_404s_on_an_unknown_environment(releaser_client, released, endpoint):
    _, body, _ = ENDPOINTS[endpoint]

    response = releaser_client.post(url("nowhere", endpoint), body, format="json")

    body = assert_problem(response, 404, "/problems/environment-not-found")
    assert "staging" in body["detail"]  # it names the environments there are


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_each_change_answers_405_to_other_methods(releaser_client, released, endpoint, method):
    before = state_of(released, "staging")

    response = getattr(releaser_client, method)(url(suffix=endpoint))

    assert_problem(response, 405, "/problems/method-not-allowed")
    assert state_of(released, "staging") == before


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "setup", "body", "pointer"),
    [
        ("canary", nothing, {"version": 3, "percent": 101}, "/percent"),
        ("canary", nothing, {"version": 3, "percent": -1}, "/percent"),
        ("canary", nothing, {"version": 3, "percent": "12.345"}, "/percent"),
        ("canary", nothing, {"version": 3, "percent": "abc"}, "/percent"),
        ("canary", nothing, {"percent": 10}, "/version"),
        ("canary/percent", canary, {"percent": 100.01}, "/percent"),
        ("deploy", nothing, {}, "/version"),
        ("deploy", nothing, {"version": "three"}, "/version"),
        ("deploy", nothing, {"version": 0}, "/version"),
        ("shadow", nothing, {"versions": [3], "sample_percent": 150}, "/sample_percent"),
        ("shadow", nothing, {"versions": [], "sample_percent": 5}, "/versions"),
        *(
            ("shadow", nothing, {"versions": [3], "sample_percent": 5, "budget_per_hour": b}, p)
            for b, p in [
                (0, "/budget_per_hour"),
                (-5, "/budget_per_hour"),
                (100_001, "/budget_per_hour"),
                ("lots", "/budget_per_hour"),
                (1.5, "/budget_per_hour"),
                (True, "/budget_per_hour"),
            ]
        ),
        ("experiment", nothing, {"name": "tone", "variants": []}, "/variants"),
        (
            "experiment",
            nothing,
            {"name": "tone", "variants": [{"name": "a", "version": 2, "percent": 50}]},
            "/variants",
        ),
        (
            "experiment",
            nothing,
            {
                "name": "tone",
                "variants": [
                    {"name": "a", "version": 2, "percent": 50},
                    {"name": "b", "version": 3, "percent": "0.001"},
                ],
            },
            "/variants/1/percent",
        ),
        (
            "experiment",
            nothing,
            {
                "name": "tone",
                "planned_calls": 10,
                "variants": [
                    {"name": "a", "version": 2, "percent": 50},
                    {"name": "b", "version": 3, "percent": 50},
                ],
            },
            "/planned_calls",
        ),
        ("deploy", nothing, {"version": 3, "override_gates": "maybe"}, "/override_gates"),
        ("rollback", nothing, {"to_event": "last"}, "/to_event"),
    ],
)
def test_bad_input_is_a_400_pointing_at_the_field(
    releaser_client, released, endpoint, setup, body, pointer
):
    setup(released)
    before = state_of(released, "staging")

    response = releaser_client.post(url(suffix=endpoint), body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert pointer in {e["pointer"] for e in problem["errors"]}, problem
    assert state_of(released, "staging") == before


def test_experiment_weights_over_100_percent_are_a_400(releaser_client, released):
    body = {
        "name": "tone",
        "variants": [
            {"name": "warm", "version": 2, "percent": 60},
            {"name": "brief", "version": 3, "percent": 41},
        ],
    }

    response = releaser_client.post(url(suffix="experiment"), body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        ("weights_over_100", "/variants")
    ]
    assert released.release("staging").experiment_name == ""


def test_duplicate_variant_names_are_a_400(releaser_client, released):
    body = {
        "name": "tone",
        "variants": [
            {"name": "warm", "version": 2, "percent": 10},
            {"name": "warm", "version": 3, "percent": 10},
        ],
    }

    response = releaser_client.post(url(suffix="experiment"), body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert "duplicate_variant" in {e["code"] for e in problem["errors"]}


def test_a_running_experiment_cannot_be_restarted(releaser_client, released):
    experiment(released)
    body = ENDPOINTS["experiment"][1]

    response = releaser_client.post(url(suffix="experiment"), body, format="json")

    assert_problem(response, 409, "/problems/release-state")


def test_a_malformed_if_match_is_a_400(releaser_client, released):
    response = releaser_client.post(
        url(suffix="deploy"), {"version": 3}, format="json", HTTP_IF_MATCH="yesterday"
    )

    assert_problem(response, 400, "/problems/validation-error")
    assert released.release("staging").stable_version.number == 2


@pytest.mark.parametrize("if_match", ['W/"{}"', "{}", "*"])
def test_if_match_may_be_quoted_weak_or_a_star(releaser_client, released, if_match):
    revision = released.release("staging").revision

    response = releaser_client.post(
        url(suffix="deploy"),
        {"version": 3},
        format="json",
        HTTP_IF_MATCH=if_match.format(revision),
    )

    assert response.status_code == 200


def test_a_draft_is_a_409_version_not_releasable(releaser_client, released):
    draft = make_version(released.prompt, commit=False)

    response = releaser_client.post(url(suffix="deploy"), {"version": draft.number}, format="json")

    problem = assert_problem(response, 409, "/problems/version-not-releasable")
    assert "draft" in problem["detail"]


def test_an_unknown_version_is_a_404(releaser_client, released):
    response = releaser_client.post(
        url(suffix="canary"), {"version": 9, "percent": 5}, format="json"
    )

    problem = assert_problem(response, 404, "/problems/version-not-found")
    assert "9" in problem["detail"]


def test_production_refuses_a_version_never_stable_in_staging(releaser_client, released):
    response = releaser_client.post(url("production", "deploy"), {"version": 3}, format="json")

    problem = assert_problem(response, 409, "/problems/promotion-blocked")
    assert problem["gate"] == "environment-order"
    assert [g["gate"] for g in problem["failed_gates"]] == ["environment-order"]
    assert released.release("production").stable_version.number == 1


def test_an_override_needs_a_reason(releaser_client, released):
    body = {"version": 3, "override_gates": True}

    response = releaser_client.post(url("production", "deploy"), body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        ("reason_required", "/reason")
    ]
    assert released.release("production").stable_version.number == 1


def test_an_override_with_a_reason_is_applied_and_shown_in_the_history(releaser_client, released):
    body = {"version": 3, "override_gates": True, "reason": "Staging is down; CVE fix."}

    response = releaser_client.post(url("production", "deploy"), body, format="json")
    history = releaser_client.get(url("production", "history")).json()["results"]

    assert response.status_code == 200, response.json()
    assert response.json()["stable"] == 3
    [latest, *_] = history
    assert latest["reason"] == "Staging is down; CVE fix."
    assert [g["gate"] for g in latest["overridden_gates"]] == ["environment-order"]
    assert all(event["overridden_gates"] == [] for event in history[1:])


def test_an_experiment_answers_its_planned_sample(releaser_client, released):
    body = {**ENDPOINTS["experiment"][1], "planned_calls": 5000}

    response = releaser_client.post(url(suffix="experiment"), body, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["experiment"]["planned_calls"] == 5000


def test_a_rollback_with_nothing_left_is_a_409(releaser_client, released):
    response = releaser_client.post(url("development", "rollback"), {}, format="json")

    assert_problem(response, 409, "/problems/nothing-to-roll-back")


def test_a_rollback_to_an_earlier_event(releaser_client, released):
    first = ReleaseEvent.objects.filter(release__environment__name="staging").earliest("id")

    response = releaser_client.post(url(suffix="rollback"), {"to_event": first.pk}, format="json")

    assert response.status_code == 200
    assert response.json()["stable"] is None


def test_a_change_that_does_not_apply_is_a_409(releaser_client, released):
    response = releaser_client.post(url(suffix="canary/abort"), {}, format="json")

    problem = assert_problem(response, 409, "/problems/release-state")
    assert "No canary" in problem["detail"]


# --- reading: the release, its history, the environments ----------------------------------------


def test_a_release_reads_with_its_revision_as_etag(reader_client, released):
    canary(released)
    release = released.release("staging")

    response = reader_client.get(url())

    assert response.status_code == 200
    assert response["ETag"] == f'"{release.revision}"'
    body = response.json()
    assert body["stable"] == 2
    assert body["canary"] == {"version": 3, "percent": 10.0, "salt": release.canary_salt}
    assert (body["experiment"], body["shadow"]) == (None, None)


def test_a_release_never_made_is_a_404(reader_client, released):
    assert_problem(reader_client.get(url("development")), 404, "/problems/release-not-found")


def test_reading_a_release_respects_environment_limits(make_client, released):
    staging_reader = make_client("prompts:read", environments=("staging",))

    assert staging_reader.get(url()).status_code == 200
    assert_problem(staging_reader.get(url("production")), 403, "/problems/environment-forbidden")
    assert_problem(
        staging_reader.get(url("production", "history")), 403, "/problems/environment-forbidden"
    )


def test_reading_a_release_of_an_unknown_prompt_is_a_404(reader_client, released):
    assert_problem(reader_client.get(url(key="no.such-prompt")), 404, "/problems/prompt-not-found")


def test_the_release_detail_takes_no_post(releaser_client, released):
    assert_problem(releaser_client.post(url(), {}), 405, "/problems/method-not-allowed")


def test_history_is_newest_first_and_paginated(reader_client, released):
    canary(released)
    for percent in (20, 30, 40):
        on(released, services.release_canary_set_percent, percent=Decimal(percent))
    on(released, services.release_rollback, reason="Too fast.")

    page = reader_client.get(url(suffix="history"), {"page_size": 3})

    assert page.status_code == 200
    body = page.json()
    assert body["count"] == 7
    actions = [e["action"] for e in body["results"]]
    assert actions == ["rollback", "canary_percent", "canary_percent"]
    rollback = body["results"][0]
    assert rollback["revision"] == 7
    assert rollback["actor"] == "release-manager"
    assert rollback["reason"] == "Too fast."
    assert rollback["restores"] == body["results"][1]["id"]
    assert rollback["after"] == body["results"][1]["before"]
    assert set(rollback) == {
        "id",
        "action",
        "revision",
        "actor",
        "reason",
        "before",
        "after",
        "restores",
        "overridden_gates",
        "created_at",
    }
    last = reader_client.get(url(suffix="history"), {"page_size": 3, "page": 3}).json()
    assert [e["action"] for e in last["results"]] == ["deploy"]


def test_history_reads_a_fixed_number_of_queries_whatever_its_length(reader_client, released):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert reader_client.get(url(suffix="history")).status_code == 200
        return len(queries)

    count()  # the key's first use of the minute records it (one UPDATE)
    few = count()
    canary(released)
    for percent in range(11, 30):
        on(released, services.release_canary_set_percent, percent=Decimal(percent))

    assert count() == few


def test_the_environments_are_listed_in_promotion_order(reader_client, released):
    response = reader_client.get("/api/v1/environments")

    assert response.status_code == 200
    assert [e["name"] for e in response.json()] == ["development", "staging", "production"]
    production = response.json()[2]
    assert production["requires_previous_stable"] is True


def test_a_key_limited_to_environments_lists_only_those(make_client, released):
    staging_reader = make_client("prompts:read", environments=("staging",))

    assert [e["name"] for e in staging_reader.get("/api/v1/environments").json()] == ["staging"]


def test_the_environments_need_a_key(anonymous_client, released):
    assert_problem(anonymous_client.get("/api/v1/environments"), 401, "/problems/unauthenticated")


# --- shadow budgets ------------------------------------------------------------------------------


def start_shadow(client, **body: Any):
    return client.post(
        url(suffix="shadow"), {"versions": [3], "sample_percent": 5, **body}, format="json"
    )


def test_a_shadow_takes_its_own_budget_and_says_which_is_in_force(releaser_client, released):
    response = start_shadow(releaser_client, budget_per_hour=120)

    assert response.status_code == 200, response.content
    shadow = response.json()["shadow"]
    assert (shadow["budget_per_hour"], shadow["effective_budget_per_hour"]) == (120, 120)
    assert released.release("staging").shadow_budget_per_hour == 120


@pytest.mark.parametrize("body", [{}, {"budget_per_hour": None}], ids=["absent", "null"])
@override_settings(SHADOW_BUDGET_PER_HOUR=250)
def test_a_shadow_without_a_budget_shows_the_server_default(releaser_client, released, body):
    response = start_shadow(releaser_client, **body)

    assert response.status_code == 200, response.content
    shadow = response.json()["shadow"]
    assert (shadow["budget_per_hour"], shadow["effective_budget_per_hour"]) == (None, 250)


def test_reading_a_release_shows_its_shadow_budget(reader_client, released):
    on(
        released,
        services.release_shadow_start,
        versions=[3],
        sample_percent=Decimal(5),
        budget_per_hour=40,
    )
    release = released.release("staging")

    body = reader_client.get(url()).json()

    assert body["shadow"] == {
        "versions": [3],
        "sample_percent": 5.0,
        "salt": release.shadow_salt,
        "budget_per_hour": 40,
        "effective_budget_per_hour": 40,
    }


def test_resending_a_running_shadow_with_another_budget_changes_only_the_budget(
    releaser_client, released
):
    first = start_shadow(releaser_client, budget_per_hour=120).json()

    response = releaser_client.post(
        url(suffix="shadow"),
        {"versions": [3], "sample_percent": 5, "budget_per_hour": 30},
        format="json",
        HTTP_IF_MATCH=f'"{first["revision"]}"',
    )

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["revision"] == first["revision"] + 1
    assert answer["shadow"]["salt"] == first["shadow"]["salt"]  # the same calls stay sampled
    assert answer["shadow"]["budget_per_hour"] == 30


def test_resending_a_running_shadow_unchanged_is_a_409(releaser_client, released):
    start_shadow(releaser_client, budget_per_hour=120)
    before = state_of(released, "staging")

    response = start_shadow(releaser_client, budget_per_hour=120)

    problem = assert_problem(response, 409, "/problems/release-state")
    assert "already" in problem["detail"]
    assert state_of(released, "staging") == before


def test_every_bad_shadow_field_is_listed_at_once(releaser_client, released):
    response = releaser_client.post(
        url(suffix="shadow"),
        {"versions": [3], "sample_percent": 150, "budget_per_hour": 0},
        format="json",
    )

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert {"/sample_percent", "/budget_per_hour"} <= {e["pointer"] for e in problem["errors"]}
    assert released.release("staging").shadow_versions == []


def test_two_keys_with_the_same_name_are_told_apart_in_the_history(make_client, released):
    first = make_client("prompts:read", "releases:write", name="ci-bot")
    second = make_client("prompts:read", "releases:write", name="ci-bot")

    first.post(url(suffix="deploy"), {"version": 1, "reason": "First."}, format="json")
    second.post(url(suffix="deploy"), {"version": 2, "reason": "Second."}, format="json")

    events = ReleaseEvent.objects.filter(release__environment__name="staging").order_by("-id")[:2]
    labels = [e.actor_label for e in reversed(events)]
    assert labels == [f"key:ci-bot#{first.key.pk}", f"key:ci-bot#{second.key.pk}"]
    assert first.key.pk != second.key.pk
    history = first.get(url(suffix="history")).json()
    assert [e["actor"] for e in history["results"][:2]] == labels[::-1]
