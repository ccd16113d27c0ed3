"""Every problem type is documented, and real refusals are what their types document.

The registry is ``api.problems.PROBLEM_TYPES``; every ``ProblemType`` any module of the API holds
(a module constant, a ``DOMAIN_PROBLEMS`` entry) must be in it, and each is a component of the
served schema (``Problem<Type>``) whose ``type`` and ``status`` are the type's own. Then refusals
of each kind the views answer (DRF views and the runtime path's plain views alike) are sent for
real and validated against their component and against the operation's documented response.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

import api
from api import problems
from api.schema import problem_component_name
from releases.errors import ReleaseChangeForbidden
from tests.api.openapi import component, documented, served_openapi, strict

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.fixture(scope="module")
def openapi(django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        return strict(served_openapi())


def _problem_types_held_by_the_api() -> set[problems.ProblemType]:
    found = set(problems.DOMAIN_PROBLEMS.values())
    for module_info in pkgutil.iter_modules(api.__path__):
        module = importlib.import_module(f"api.{module_info.name}")
        found |= {v for v in vars(module).values() if isinstance(v, problems.ProblemType)}
    return found


def test_every_problem_type_the_api_holds_is_registered():
    held = _problem_types_held_by_the_api()

    assert held <= set(problems.PROBLEM_TYPES.values())
    assert len(held) > 40  # the scan saw the whole table


def test_slugs_are_unique():
    """Two types with one slug would be one component describing two titles or statuses."""
    every = _problem_types_held_by_the_api()

    assert len({p.slug for p in every}) == len(every)


@pytest.mark.parametrize("slug", sorted(problems.PROBLEM_TYPES))
def test_each_problem_type_is_a_component_with_its_uri(openapi, slug):
    problem = problems.PROBLEM_TYPES[slug]
    schema = openapi["components"]["schemas"][problem_component_name(problem)]

    assert schema["properties"]["type"]["enum"] == [f"/problems/{slug}"]
    assert schema["properties"]["status"]["enum"] == [problem.status]
    assert {"type", "title", "status", "detail"} <= set(schema["required"])


@pytest.mark.parametrize("slug", sorted(problems.PROBLEM_TYPES))
def test_each_problem_type_is_listed_in_the_docs(slug):
    assert f"`/problems/{slug}`" in API_DOC.read_text()


def test_the_extra_members_of_a_domain_problem_are_documented(openapi):
    """``DOMAIN_EXTRAS`` adds members to some types' documents: each type's component lists them
    (as required: every document of the type has them)."""
    samples = {
        "DraftExists": {"draft_number": 4},
        "DraftConflict": {"current_tag": '"abc"'},
        "ReleaseConflict": {"current_revision": 3},
        "ReleaseChangeForbidden": {"environment": "production"},
        "PromotionBlocked": {"gate": "g", "failed_gates": [{"gate": "g", "detail": "d"}]},
        "EventBatchTooLarge": {"max_events": 1000},
        "BudgetExceeded": {
            "budget": {
                "scope": "key",
                "name": "API key #3",
                "limit": "tokens_per_day",
                "value": "1000",
            }
        },
        "ReviewRequired": {"environment": "production"},
        "ChangeRequestOutdated": {"proposed_revision": 3, "current_revision": 5},
        "SyncInvalid": {
            "errors": [
                {"file": "a.yaml", "code": "invalid_yaml", "detail": "d", "pointer": "", "line": 2}
            ]
        },
    }
    assert {cls.__name__ for cls in problems.DOMAIN_EXTRAS} == set(samples)
    for cls in problems.DOMAIN_EXTRAS:
        problem = problems.DOMAIN_PROBLEMS[cls]
        members = samples[cls.__name__]
        body = problems.problem_body(problem, "d", instance="/x", **members)
        component(openapi, problem_component_name(problem), body)
        schema = openapi["components"]["schemas"][problem_component_name(problem)]
        assert set(members) <= set(schema["required"]), cls


def test_a_release_rights_refusal_is_the_documented_403_of_every_release_change(openapi):
    """A key meets the environment check at the door first (``environment-forbidden``); a
    refusal by the release rights behind it (``releases.rights``, every door) answers this."""
    refusal = ReleaseChangeForbidden(
        "Only members of Production releasers may change releases in production.",
        environment="production",
    )

    answer = problems.answer_exception(refusal, path="/api/v1/releases/production/k/deploy")

    assert (answer.problem.status, answer.problem.slug) == (403, "release-change-forbidden")
    body = answer.body("/x")
    assert body["detail"] == refusal.message
    component(openapi, "ProblemReleaseChangeForbidden", body)
    changes = {
        f"releases_{verb}"
        for verb in (
            "deploy",
            "canary_start",
            "canary_percent",
            "canary_promote",
            "canary_abort",
            "experiment_start",
            "experiment_stop",
            "shadow_start",
            "shadow_stop",
            "rollback",
            "canary_analysis_attach",
            "canary_analysis_resume",
            "canary_analysis_stop",
        )
    }
    found = {}
    for item in openapi["paths"].values():
        for method, operation in item.items():
            if method != "parameters" and operation["operationId"] in changes:
                found[operation["operationId"]] = json.dumps(operation["responses"]["403"])
    assert set(found) == changes
    for operation_id, described in found.items():
        assert "ProblemReleaseChangeForbidden" in described, operation_id


# --- real refusals -------------------------------------------------------------------------------

RESOLVE = ("/api/v1/prompts/{key}/resolve", "get")
RENDER = ("/api/v1/prompts/{key}/render", "post")
VERSIONS = ("/api/v1/prompts/{key}/versions", "post")
RELEASE = ("/api/v1/releases/{environment}/{key}", "get")
DEPLOY = ("/api/v1/releases/{environment}/{key}/deploy", "post")


def _send(client: APIClient, method: str, path: str, body: Any = None, **extra: Any):
    if method == "get":
        return client.get(path, body or {}, **extra)
    content_type = extra.pop("content_type", "application/json")
    data = body if isinstance(body, str | bytes) else json.dumps(body or {})
    return client.generic(method.upper(), path, data, content_type=content_type, **extra)


def _check(openapi, operation: tuple[str, str], response, type_: str, status: int) -> dict:
    assert response.status_code == status, response.content[:1000]
    assert response["Content-Type"] == problems.CONTENT_TYPE
    body = response.json()
    assert body["type"] == type_
    slug = type_.removeprefix("/problems/")
    component(openapi, problem_component_name(problems.PROBLEM_TYPES[slug]), body)
    documented(openapi, operation[0], operation[1], response)
    return body


@pytest.mark.parametrize(
    ("operation", "path", "body"),
    [
        (RESOLVE, f"/api/v1/prompts/{KEY}/resolve", {"environment": "staging"}),
        (RELEASE, f"/api/v1/releases/staging/{KEY}", None),
    ],
)
def test_no_key_is_an_unauthenticated_problem(openapi, released, operation, path, body):
    response = _send(APIClient(), operation[1], path, body)

    _check(openapi, operation, response, "/problems/unauthenticated", 401)


@pytest.mark.parametrize(
    ("operation", "path", "body"),
    [
        (RESOLVE, f"/api/v1/prompts/{KEY}/resolve", {"environment": "staging"}),
        (DEPLOY, f"/api/v1/releases/staging/{KEY}/deploy", {"version": 1}),
    ],
)
def test_a_missing_scope_is_an_insufficient_scope_problem(
    openapi, released, make_client, operation, path, body
):
    response = _send(make_client("events:write"), operation[1], path, body)

    problem = _check(openapi, operation, response, "/problems/insufficient-scope", 403)
    assert problem["required_scope"]


@pytest.mark.parametrize(
    ("operation", "path", "body"),
    [
        (RENDER, f"/api/v1/prompts/{KEY}/render", {"environment": "staging"}),
        (DEPLOY, f"/api/v1/releases/staging/{KEY}/deploy", {"version": 1}),
    ],
)
def test_another_environment_is_an_environment_forbidden_problem(
    openapi, released, make_client, operation, path, body
):
    client = make_client("prompts:read", "releases:write", environments=("production",))

    response = _send(client, operation[1], path, body)

    problem = _check(openapi, operation, response, "/problems/environment-forbidden", 403)
    assert problem["environment"] == "staging"


@pytest.mark.parametrize(
    ("operation", "path"),
    [(RENDER, f"/api/v1/prompts/{KEY}/render"), (VERSIONS, f"/api/v1/prompts/{KEY}/versions")],
)
def test_bodies_refused_before_reading_are_documented(
    openapi, released, author_client, make_client, operation, path, settings
):
    client = make_client("prompts:read", "prompts:write")
    cases = [
        ("[1", "application/json", "/problems/malformed-request", 400),
        ("environment=staging", "text/plain", "/problems/unsupported-media-type", 415),
        ('{"a": "' + "x" * 300 + '"}', "application/json", "/problems/request-too-large", 413),
    ]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    for data, content_type, type_, status in cases:
        response = _send(client, "post", path, data, content_type=content_type)
        _check(openapi, operation, response, type_, status)


def test_a_bad_body_is_a_validation_problem_with_its_errors(openapi, released, make_client):
    client = make_client("prompts:read", "prompts:write")
    for operation, path, body in [
        (RENDER, f"/api/v1/prompts/{KEY}/render", {"environment": "staging", "variables": []}),
        (VERSIONS, f"/api/v1/prompts/{KEY}/versions", {"templates": 3}),
    ]:
        problem = _check(
            openapi,
            operation,
            _send(client, "post", path, body),
            "/problems/validation-error",
            400,
        )
        assert problem["errors"]


def test_a_write_over_plain_http_is_an_https_required_problem(openapi, released, make_client):
    client = make_client("prompts:read", "releases:write")
    with override_settings(SECURE_SSL_REDIRECT=True):
        for operation, path, body in [
            (RENDER, f"/api/v1/prompts/{KEY}/render", {"environment": "staging"}),
            (DEPLOY, f"/api/v1/releases/staging/{KEY}/deploy", {"version": 1}),
        ]:
            response = _send(client, "post", path, body)
            _check(openapi, operation, response, "/problems/https-required", 403)


def test_an_unknown_host_on_the_runtime_path_is_a_bad_host_problem(openapi, released, make_client):
    response = make_client("prompts:read").get(
        f"/api/v1/prompts/{KEY}/resolve", {"environment": "staging"}, HTTP_HOST="evil.example"
    )

    _check(openapi, RESOLVE, response, "/problems/bad-host", 400)


def test_a_page_past_the_last_is_a_not_found_problem(openapi, released, reader_client):
    response = reader_client.get("/api/v1/prompts", {"page": 99})

    _check(openapi, ("/api/v1/prompts", "get"), response, "/problems/not-found", 404)


def test_the_database_out_of_reach_is_a_database_unavailable_problem(
    openapi, released, make_client, database_down
):
    client = make_client("prompts:read")
    client.get(f"/api/v1/releases/staging/{KEY}")  # the key is known to this process
    database_down()

    response = client.get(f"/api/v1/releases/staging/{KEY}")

    _check(openapi, RELEASE, response, "/problems/database-unavailable", 503)
    assert response["Retry-After"]


# A request line over gunicorn's limit_request_line (4,094 bytes by default) never reaches the
# application: gunicorn answers its own 414 page (docs/api.md, "Long URLs"). Under it, a query value
# longer than the application allows is a 400 problem document.
LONG = "a" * 3_900


@pytest.mark.parametrize(
    ("operation", "path", "query", "type_"),
    [
        (RESOLVE, f"/api/v1/prompts/{KEY}/resolve", {"environment": LONG}, "validation-error"),
        (
            RESOLVE,
            f"/api/v1/prompts/{KEY}/resolve",
            {"environment": "staging", "locale": LONG},
            "invalid-locale",
        ),
        (("/api/v1/prompts", "get"), "/api/v1/prompts", {"search": LONG}, "validation-error"),
        (("/api/v1/prompts", "get"), "/api/v1/prompts", {"tag": LONG}, "validation-error"),
        (
            ("/api/v1/prompts/{key}/versions/{number}/gates", "get"),
            f"/api/v1/prompts/{KEY}/versions/2/gates",
            {"environment": LONG},
            "validation-error",
        ),
    ],
)
def test_an_over_long_query_value_under_the_request_line_limit_is_a_problem(
    openapi, released, make_client, operation, path, query, type_
):
    client = make_client("prompts:read", "releases:write")

    response = client.get(path, query)

    assert len(response.request["QUERY_STRING"]) < 4_000
    _check(openapi, operation, response, f"/problems/{type_}", 400)
