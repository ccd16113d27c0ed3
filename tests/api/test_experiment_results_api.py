"""``GET /releases/{environment}/{key}/experiments`` and ``.../experiment/results``.

Personas (tests/conftest.py): ``reader_client`` (prompts:read) reads them; a key without
prompts:read gets 403 insufficient-scope; a key limited to production gets 403
environment-forbidden on staging; no key gets 401.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from releases.services import release_experiment_start, release_experiment_stop
from runs.models import Call
from tests.api.helpers import assert_problem

pytestmark = pytest.mark.django_db

RESULTS = "/api/v1/releases/staging/support.refund-reply/experiment/results"
LIST = "/api/v1/releases/staging/support.refund-reply/experiments"


def start(released, manager, name="tone"):
    release_experiment_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        name=name,
        variants=[("control", 2, Decimal(50)), ("treatment", 3, Decimal(50))],
        actor=manager,
        planned_calls=100,
    )
    return released.release("staging")


def calls(released, release, variant, version, n, *, sticky=True, status=Call.Status.OK):
    Call.objects.bulk_create(
        Call(
            request_id=f"{variant}-{sticky}-{i}",
            source=Call.Source.RUN,
            created_at=timezone.now(),
            prompt=released.prompt,
            version=released.versions[version],
            environment=release.environment,
            variant=variant,
            sticky=sticky,
            release_revision=release.revision,
            status=status if i % 5 == 0 else Call.Status.OK,
            latency_ms=100.0 + i,
        )
        for i in range(n)
    )


def test_results_of_the_running_experiment(released, manager, reader_client):
    release = start(released, manager)
    calls(released, release, "control", 2, 60)
    calls(released, release, "treatment", 3, 40, status=Call.Status.ERROR)
    calls(released, release, "control", 2, 3, sticky=False)

    response = reader_client.get(RESULTS)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["experiment"]["name"] == "tone"
    assert body["experiment"]["running"] is True
    assert body["control"] == "control"
    assert [v["calls"] for v in body["variants"]] == [60, 40]
    assert body["excluded_non_sticky_calls"] == 3
    assert body["look"]["information_fraction"] == 1.0
    assert body["sample_ratio"]["mismatch"] is False
    assert body["decisions_held"] is False
    error_rate = next(c for c in body["comparisons"] if c["metric"] == "error_rate")
    assert error_rate["difference"] == pytest.approx(8 / 40)
    assert error_rate["significant"] is True
    assert body["variants"][0]["latency_ms"]["p50"] == pytest.approx(
        129, rel=0.006
    )  # nearest rank: the 30th of 100..159
    assert body["timeline"]["points"][-1]["calls"] == {"control": 60, "treatment": 40}


def test_experiments_list_and_a_past_one_by_id(released, manager, reader_client):
    release = start(released, manager, name="first")
    calls(released, release, "control", 2, 4)
    release_experiment_stop(
        prompt=released.prompt,
        environment=release.environment,
        winner="treatment",
        actor=manager,
    )
    start(released, manager, name="second")

    listed = reader_client.get(LIST)

    assert listed.status_code == 200
    first, second = listed.json()[1], listed.json()[0]
    assert (second["name"], second["running"], second["stop_event"]) == ("second", True, None)
    assert (first["name"], first["winner"], first["stopped_by"]) == (
        "first",
        "treatment",
        "experiment_stop",
    )
    past = reader_client.get(f"{RESULTS}?experiment={first['start_event']}").json()
    assert past["experiment"]["name"] == "first"
    assert [v["calls"] for v in past["variants"]] == [4, 0]


def test_no_experiment_running_is_a_404_problem(released, reader_client):
    assert_problem(reader_client.get(RESULTS), 404, "/problems/no-experiment")
    assert reader_client.get(LIST).json() == []


def test_unknown_or_foreign_experiment_ids_are_not_found(released, manager, reader_client):
    start(released, manager)
    foreign = released.release("production").events.first().pk
    for value in (foreign, 999999):
        assert_problem(
            reader_client.get(f"{RESULTS}?experiment={value}"),
            404,
            "/problems/experiment-not-found",
        )
    assert_problem(
        reader_client.get(f"{RESULTS}?experiment=first"), 400, "/problems/validation-error"
    )


def test_unknown_release_environment_or_prompt(released, reader_client):
    assert_problem(
        reader_client.get("/api/v1/releases/development/support.refund-reply/experiment/results"),
        404,
        "/problems/release-not-found",
    )
    assert_problem(
        reader_client.get("/api/v1/releases/nowhere/support.refund-reply/experiments"),
        404,
        "/problems/environment-not-found",
    )
    assert_problem(
        reader_client.get("/api/v1/releases/staging/no.such-prompt/experiments"),
        404,
        "/problems/prompt-not-found",
    )


@pytest.mark.parametrize("url", [RESULTS, LIST])
def test_personas(released, manager, make_client, anonymous_client, url):
    start(released, manager)
    assert_problem(make_client("runs:execute").get(url), 403, "/problems/insufficient-scope")
    assert_problem(
        make_client("prompts:read", environments=("production",)).get(url),
        403,
        "/problems/environment-forbidden",
    )
    assert anonymous_client.get(url).status_code == 401
    assert make_client("prompts:read", environments=("staging",)).get(url).status_code == 200
