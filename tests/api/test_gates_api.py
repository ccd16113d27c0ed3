"""Promotion gates over the API (api/gates.py): /api/v1/environments/{environment}/gates[/{id}]
and /api/v1/prompts/{key}/versions/{n}/gates; and what a gate does to the release endpoints: a
refusal names the failed gate and lists every one, an override needs a reason and shows in the
history.

Personas (tests/conftest.py): ``reader_client`` (prompts:read) reads gates and a version's
status; ``releaser_client`` (prompts:read, releases:write) sets gates and releases;
``author_client`` writes prompts, not gates; ``staging_bot`` is release automation limited to
staging.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from evaluations.gates.services import promotion_gate_create
from evaluations.models import Case, Dataset, EvalResult, EvalRun, PromotionGate
from registry.actors import Actor
from registry.models import PromptVersion
from releases.state import release_state
from tests.api.helpers import assert_problem, error_codes

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
MANAGER = Actor(label="release-manager")


def gates_url(environment: str = "staging", gate_id: int | None = None) -> str:
    url = f"/api/v1/environments/{environment}/gates"
    return f"{url}/{gate_id}" if gate_id is not None else url


def status_url(version: int = 3, environment: str | None = "staging", key: str = KEY) -> str:
    url = f"/api/v1/prompts/{key}/versions/{version}/gates"
    return f"{url}?environment={environment}" if environment else url


def release_url(suffix: str, environment: str = "staging") -> str:
    return f"/api/v1/releases/{environment}/{KEY}/{suffix}"


@pytest.fixture
def staging_bot(make_client):
    """Release automation limited to staging: may set staging's gates, not production's."""
    return make_client("prompts:read", "releases:write", environments=("staging",), name="staging")


@pytest.fixture
def golden(released) -> Dataset:
    """support.refund-reply's golden set: four cases, c1 must pass."""
    dataset = Dataset.objects.create(prompt=released.prompt, name="golden")
    for position, key in enumerate(["c1", "c2", "c3", "c4"]):
        Case.objects.create(
            dataset=dataset,
            key=key,
            position=position,
            expectation={"scorer": "contains", "value": "refund"},
            must_pass=key == "c1",
        )
    dataset.refresh_from_db()
    return dataset


@pytest.fixture
def staging_gate(released, golden) -> PromotionGate:
    """staging: golden ≥ 90 %, must-pass cases must pass."""
    return promotion_gate_create(
        environment=released.environments["staging"],
        dataset_name="golden",
        min_pass_rate="90",
        actor=MANAGER,
    )


def gate_run(dataset: Dataset, version: int, *, failing=()) -> EvalRun:
    run = EvalRun.objects.create(
        prompt=dataset.prompt,
        version=PromptVersion.objects.get(prompt=dataset.prompt, number=version),
        dataset=dataset,
        include_holdout=True,
        status=EvalRun.Status.FINISHED,
        total_cases=dataset.cases.count(),
        dataset_updated_at=dataset.updated_at,
    )
    for case in dataset.cases.all():
        EvalResult.objects.create(
            run=run,
            case=case,
            case_key=case.key,
            must_pass=case.must_pass,
            passed=case.key not in failing,
        )
    return run


def staging_state(released) -> tuple[int, dict]:
    release = released.release("staging")
    return release.revision, release_state(release).as_dict()


# --- listing ------------------------------------------------------------------------------------


def test_a_reader_lists_an_environments_gates(reader_client, released, staging_gate):
    promotion_gate_create(
        environment=released.environments["production"],
        dataset_name="golden",
        min_pass_rate="99.5",
        prompt_key=KEY,
        actor=MANAGER,
    )

    response = reader_client.get(gates_url())

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": staging_gate.pk,
            "environment": "staging",
            "prompt": None,
            "dataset": "golden",
            "min_pass_rate": 90.0,
            "must_pass_cases": True,
            "enabled": True,
            "created_at": response.json()[0]["created_at"],
            "updated_at": response.json()[0]["updated_at"],
        }
    ]
    production = reader_client.get(gates_url("production")).json()
    assert [(g["prompt"], g["min_pass_rate"]) for g in production] == [(KEY, 99.5)]


def test_a_key_limited_to_staging_sees_only_stagings_gates(staging_bot, released, staging_gate):
    assert staging_bot.get(gates_url()).status_code == 200
    assert_problem(staging_bot.get(gates_url("production")), 403, "/problems/environment-forbidden")


def test_listing_an_unknown_environment_is_not_found(reader_client, environments):
    assert_problem(reader_client.get(gates_url("moon")), 404, "/problems/environment-not-found")


def test_listing_needs_a_key(anonymous_client, environments):
    assert_problem(anonymous_client.get(gates_url()), 401, "/problems/unauthenticated")


# --- creating -----------------------------------------------------------------------------------


def test_a_releaser_adds_a_gate(releaser_client, released):
    response = releaser_client.post(
        gates_url(),
        {"dataset": "golden", "min_pass_rate": "92.5", "prompt": KEY, "must_pass_cases": False},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["prompt"], body["dataset"], body["min_pass_rate"], body["must_pass_cases"]) == (
        KEY,
        "golden",
        92.5,
        False,
    )
    assert PromotionGate.objects.get(pk=body["id"]).environment.name == "staging"


def test_adding_a_gate_needs_the_releases_write_scope(reader_client, author_client, released):
    for client in (reader_client, author_client):
        response = client.post(
            gates_url(), {"dataset": "golden", "min_pass_rate": 90}, format="json"
        )
        body = assert_problem(response, 403, "/problems/insufficient-scope")
        assert body["required_scope"] == "releases:write"
    assert not PromotionGate.objects.exists()


def test_a_key_limited_to_staging_cannot_add_a_production_gate(staging_bot, released):
    response = staging_bot.post(
        gates_url("production"), {"dataset": "golden", "min_pass_rate": 90}, format="json"
    )

    assert_problem(response, 403, "/problems/environment-forbidden")
    assert not PromotionGate.objects.exists()


@pytest.mark.parametrize(
    ("body", "pointer", "code"),
    [
        ({"dataset": "golden", "min_pass_rate": 100.5}, "/min_pass_rate", "invalid_pass_rate"),
        ({"dataset": "golden", "min_pass_rate": "90.125"}, "/min_pass_rate", "invalid_pass_rate"),
        ({"dataset": "golden", "min_pass_rate": -3}, "/min_pass_rate", "invalid_pass_rate"),
        ({"dataset": "golden", "min_pass_rate": "lots"}, "/min_pass_rate", "invalid"),
        ({"dataset": "golden"}, "/min_pass_rate", "required"),
        ({"dataset": "Gold Set", "min_pass_rate": 90}, "/dataset", "invalid_dataset"),
        (
            {"dataset": "golden", "min_pass_rate": 90, "prompt": "no.such"},
            "/prompt",
            "unknown_prompt",
        ),
    ],
)
def test_a_bad_gate_is_refused_and_nothing_stored(releaser_client, released, body, pointer, code):
    response = releaser_client.post(gates_url(), body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == [(pointer, code)]
    assert not PromotionGate.objects.exists()


def test_a_duplicate_gate_is_a_conflict(releaser_client, staging_gate):
    response = releaser_client.post(
        gates_url(), {"dataset": "golden", "min_pass_rate": 50}, format="json"
    )

    body = assert_problem(response, 409, "/problems/gate-exists")
    assert "already" in body["detail"]
    assert PromotionGate.objects.count() == 1


def test_adding_a_gate_to_an_unknown_environment_is_not_found(releaser_client, environments):
    response = releaser_client.post(
        gates_url("moon"), {"dataset": "golden", "min_pass_rate": 50}, format="json"
    )

    assert_problem(response, 404, "/problems/environment-not-found")


# --- changing and deleting ----------------------------------------------------------------------


def test_a_releaser_changes_only_the_fields_sent(releaser_client, staging_gate):
    response = releaser_client.patch(
        gates_url(gate_id=staging_gate.pk), {"min_pass_rate": 80, "enabled": False}, format="json"
    )

    assert response.status_code == 200
    staging_gate.refresh_from_db()
    assert (staging_gate.min_pass_rate, staging_gate.enabled, staging_gate.must_pass_cases) == (
        Decimal(80),
        False,
        True,
    )


def test_a_bad_change_is_refused_and_changes_nothing(releaser_client, staging_gate):
    response = releaser_client.patch(
        gates_url(gate_id=staging_gate.pk), {"min_pass_rate": 101, "enabled": False}, format="json"
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert error_codes(body) == ["invalid_pass_rate"]
    staging_gate.refresh_from_db()
    assert (staging_gate.min_pass_rate, staging_gate.enabled) == (Decimal(90), True)


def test_a_gate_is_found_only_in_its_own_environment(releaser_client, staging_gate):
    for response in (
        releaser_client.patch(gates_url("production", staging_gate.pk), {}, format="json"),
        releaser_client.delete(gates_url("production", staging_gate.pk)),
        releaser_client.get(gates_url(gate_id=staging_gate.pk + 100)),
    ):
        assert_problem(response, 404, "/problems/gate-not-found")
    assert PromotionGate.objects.count() == 1


def test_changing_and_deleting_need_the_scope_and_the_environment(
    reader_client, staging_bot, releaser_client, released, staging_gate
):
    production_gate = promotion_gate_create(
        environment=released.environments["production"],
        dataset_name="golden",
        min_pass_rate="95",
        actor=MANAGER,
    )
    assert reader_client.get(gates_url(gate_id=staging_gate.pk)).status_code == 200
    assert_problem(
        reader_client.patch(gates_url(gate_id=staging_gate.pk), {"enabled": False}, format="json"),
        403,
        "/problems/insufficient-scope",
    )
    assert_problem(
        reader_client.delete(gates_url(gate_id=staging_gate.pk)),
        403,
        "/problems/insufficient-scope",
    )
    assert_problem(
        staging_bot.delete(gates_url("production", production_gate.pk)),
        403,
        "/problems/environment-forbidden",
    )
    assert PromotionGate.objects.count() == 2

    deleted = releaser_client.delete(gates_url(gate_id=staging_gate.pk))
    assert deleted.status_code == 204
    assert "Content-Length" not in deleted  # never on a 204 (RFC 9110 8.6)
    assert list(PromotionGate.objects.all()) == [production_gate]


def test_other_methods_are_not_allowed(releaser_client, staging_gate):
    assert_problem(releaser_client.put(gates_url(), {}), 405, "/problems/method-not-allowed")
    assert_problem(
        releaser_client.post(gates_url(gate_id=staging_gate.pk), {}),
        405,
        "/problems/method-not-allowed",
    )
    assert_problem(releaser_client.post(status_url(), {}), 405, "/problems/method-not-allowed")


# --- a version's status -------------------------------------------------------------------------


def test_an_author_sees_what_would_block_a_version(reader_client, golden, staging_gate):
    run = gate_run(golden, 3, failing={"c1"})

    response = reader_client.get(status_url())

    assert response.status_code == 200
    body = response.json()
    assert (body["prompt"], body["version"], body["environment"], body["passed"]) == (
        KEY,
        3,
        "staging",
        False,
    )
    [status] = body["gates"]
    assert status["gate"]["id"] == staging_gate.pk
    assert status["run"]["id"] == run.pk
    assert status["run"]["pass_rate"] == 75.0
    assert status["failed_must_pass"] == ["c1"]
    assert [(c["gate"], c["passed"]) for c in status["checks"]] == [
        ("golden-pass-rate", False),
        ("golden-must-pass", False),
    ]


def test_a_version_with_no_gates_passes(reader_client, released):
    body = reader_client.get(status_url()).json()

    assert (body["passed"], body["gates"]) == (True, [])


def test_the_status_needs_a_known_environment_and_version(reader_client, staging_bot, released):
    assert_problem(
        reader_client.get(status_url(environment=None)), 400, "/problems/validation-error"
    )
    assert_problem(
        reader_client.get(status_url(environment="moon")), 404, "/problems/environment-not-found"
    )
    assert_problem(reader_client.get(status_url(version=9)), 404, "/problems/version-not-found")
    assert_problem(reader_client.get(status_url(key="no.such")), 404, "/problems/prompt-not-found")
    assert_problem(
        staging_bot.get(status_url(environment="production")),
        403,
        "/problems/environment-forbidden",
    )


# --- the release endpoints refuse, and an override is audited ---------------------------------


@pytest.mark.parametrize(
    ("suffix", "body"),
    [("deploy", {"version": 3}), ("canary", {"version": 3, "percent": 5})],
)
def test_a_release_past_a_failing_gate_is_refused_naming_it(
    releaser_client, released, golden, staging_gate, suffix, body
):
    gate_run(golden, 3, failing={"c1", "c2"})
    before = staging_state(released)

    response = releaser_client.post(release_url(suffix), body, format="json")

    problem = assert_problem(response, 409, "/problems/promotion-blocked")
    assert problem["gate"] == "golden-pass-rate"
    assert problem["detail"] == problem["failed_gates"][0]["detail"]
    assert "50 % of cases pass" in problem["detail"]
    assert [g["gate"] for g in problem["failed_gates"]] == ["golden-pass-rate", "golden-must-pass"]
    assert "c1" in problem["failed_gates"][1]["detail"]
    assert staging_state(released) == before


def test_an_experiment_start_is_refused_by_a_gate(releaser_client, released, staging_gate):
    body = {
        "name": "tone",
        "variants": [
            {"name": "warm", "version": 2, "percent": 50},
            {"name": "brief", "version": 3, "percent": 50},
        ],
    }

    response = releaser_client.post(release_url("experiment"), body, format="json")

    assert assert_problem(response, 409, "/problems/promotion-blocked")["gate"] == "golden-run"


def test_an_override_with_a_reason_is_kept_in_the_history(releaser_client, released, staging_gate):
    response = releaser_client.post(
        release_url("deploy"),
        {"version": 3, "override_gates": True, "reason": "The fix cannot wait for the run."},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["stable"] == 3
    [latest, *_] = releaser_client.get(release_url("history")).json()["results"]
    assert latest["reason"] == "The fix cannot wait for the run."
    assert [(g["gate"], g["version"]) for g in latest["overridden_gates"]] == [("golden-run", 3)]
    assert "start one" in latest["overridden_gates"][0]["detail"]


def test_an_override_without_a_reason_is_refused(releaser_client, released, staging_gate):
    before = staging_state(released)

    response = releaser_client.post(
        release_url("canary"), {"version": 3, "percent": 5, "override_gates": True}, format="json"
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert error_codes(body) == ["reason_required"]
    assert staging_state(released) == before


def test_a_rollback_is_not_gated(releaser_client, released, staging_gate):
    response = releaser_client.post(release_url("rollback"), {}, format="json")

    assert response.status_code == 200
    assert response.json()["stable"] == 1  # v2 was deployed over v1 in setup


def test_a_canary_is_promoted_only_once_its_gate_run_passes(
    releaser_client, released, golden, staging_gate
):
    """The release manager's path: a canary started past the gate (overridden, with a reason)
    is not promoted on a hunch: refused while there is no gate run, then while the run falls
    short, then promoted once a passing run is in."""
    started = releaser_client.post(
        release_url("canary"),
        {"version": 3, "percent": 10, "override_gates": True, "reason": "Smoke test first."},
        format="json",
    )
    assert started.status_code == 200, started.content
    before = staging_state(released)

    no_run = releaser_client.post(release_url("canary/promote"), {}, format="json")
    assert assert_problem(no_run, 409, "/problems/promotion-blocked")["gate"] == "golden-run"
    gate_run(golden, 3, failing={"c2"})  # 75 %, below 90 %
    short = releaser_client.post(release_url("canary/promote"), {}, format="json")
    assert assert_problem(short, 409, "/problems/promotion-blocked")["gate"] == "golden-pass-rate"
    assert staging_state(released) == before

    gate_run(golden, 3)
    promoted = releaser_client.post(release_url("canary/promote"), {}, format="json")
    assert promoted.status_code == 200, promoted.content
    assert (promoted.json()["stable"], promoted.json()["canary"]) == (3, None)
    [latest, *_] = releaser_client.get(release_url("history")).json()["results"]
    assert (latest["action"], latest["overridden_gates"]) == ("canary_promote", [])
