"""What the server refuses, the published schema forbids (issue 20, item 5; decision 0024): each
case here is a real request the server refuses, validated against the schema it serves, which
must forbid it too; and a near miss the server takes, which the schema must allow. The fuzz run
(tests/api/test_fuzz.py) finds disagreements at random; these pin the ones found, one by one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import ValidationError

from api.serializers import ENVIRONMENT_SCHEMA, KEY_SCHEMA
from registry.labels import id_valid, label_valid
from runs.calls import SUBJECT_MAX_CHARS
from runs.models import Call
from tests.api.helpers import assert_problem, error_codes
from tests.api.openapi import served_openapi, validate
from tests.factories import event

pytestmark = pytest.mark.django_db

RELEASE = "/api/v1/releases/staging/support.refund-reply"


@pytest.fixture
def openapi() -> dict[str, Any]:
    return served_openapi()


def body_schema(openapi: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    return openapi["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def parameter_schema(openapi: dict[str, Any], path: str, method: str, name: str) -> dict:
    parameters = openapi["paths"][path][method]["parameters"]
    return next(p["schema"] for p in parameters if p["name"] == name)


def allows(openapi: dict[str, Any], schema: dict[str, Any], instance: Any) -> bool:
    try:
        validate(openapi, schema, instance)
    except ValidationError:
        return False
    return True


# --- POST /events ----------------------------------------------------------------------------


@pytest.fixture
def events_client(make_client):
    return make_client("events:write", name="reporting-service")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"colour": "blue"}, "unknown_field"),
        ({"event_id": "evt\n1"}, "not_printable"),
        ({"event_id": "evt\u200b"}, "not_printable"),
        ({"event_id": "\u3000 "}, "blank"),
        ({"version": 2**31}, "out_of_range"),
        ({"release_revision": 2**31}, "out_of_range"),
        ({"input_tokens": 2**31}, "out_of_range"),
        ({"output_tokens": 2**31}, "out_of_range"),
        ({"cost": 1_000_000}, "out_of_range"),
        ({"subject": "s" * (SUBJECT_MAX_CHARS + 1)}, "too_long"),
    ],
)
def test_an_event_the_server_refuses_the_schema_forbids(
    events_client, released, openapi, overrides, code
):
    body = {"events": [event(**overrides)]}

    response = events_client.post("/api/v1/events", body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert code in error_codes(problem)
    assert not Call.objects.exists()
    assert not allows(openapi, body_schema(openapi, "/api/v1/events"), body)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"event_id": " evt 1 ", "version": 2, "input_tokens": 2**31 - 1},
        {"cost": 999_999.99999999, "subject": "s" * SUBJECT_MAX_CHARS},
        # null is the same as leaving a field out
        {"variant": None, "latency_ms": None, "inputs": None, "occurred_at": None},
    ],
)
def test_an_event_the_server_stores_the_schema_allows(events_client, released, openapi, overrides):
    body = {"events": [event(**overrides)]}

    response = events_client.post("/api/v1/events", body, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    assert allows(openapi, body_schema(openapi, "/api/v1/events"), body)


# --- Experiment variant names ------------------------------------------------------------------


def experiment(name: str) -> dict[str, Any]:
    return {
        "name": "tone",
        "variants": [
            {"name": name, "version": 2, "percent": 10},
            {"name": "B", "version": 3, "percent": 10},
        ],
    }


@pytest.mark.parametrize("name", ["stable", "canary", " A", "A ", "A\n", "A\u200b", "\u00a0"])
def test_a_variant_name_the_server_refuses_the_schema_forbids(
    releaser_client, released, openapi, name
):
    body = experiment(name)

    response = releaser_client.post(f"{RELEASE}/experiment", body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        ("invalid_name", "/variants/0/name")
    ]
    schema = body_schema(openapi, "/api/v1/releases/{environment}/{key}/experiment")
    assert not allows(openapi, schema, body)


@pytest.mark.parametrize("name", ["A", "Variant B", "très-court", "Stable", "canary-2"])
def test_a_variant_name_the_server_takes_the_schema_allows(
    releaser_client, released, openapi, name
):
    body = experiment(name)

    response = releaser_client.post(f"{RELEASE}/experiment", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["experiment"]["variants"][0]["name"] == name
    schema = body_schema(openapi, "/api/v1/releases/{environment}/{key}/experiment")
    assert allows(openapi, schema, body)


@pytest.mark.parametrize(
    ("text", "label", "id_"),
    [
        ("Variant B", True, True),
        ("", False, False),
        (" B", False, True),
        ("   ", False, False),
        ("B\u2028", False, False),
        ("B\x85", False, False),
        ("evt\x7f", False, False),
        ("B\n", False, False),
    ],
)
def test_the_label_and_id_rules(text, label, id_):
    assert label_valid(text) is label
    assert id_valid(text) is id_


def test_planned_calls_below_the_fewest_is_refused_by_both(releaser_client, released, openapi):
    body = {**experiment("A"), "planned_calls": 59}

    response = releaser_client.post(f"{RELEASE}/experiment", body, format="json")

    assert_problem(response, 400, "/problems/validation-error")
    schema = body_schema(openapi, "/api/v1/releases/{environment}/{key}/experiment")
    assert not allows(openapi, schema, body)


# --- The canary analysis policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "pointer"),
    [
        ({"colour": "blue"}, "/analysis/colour"),
        ({"steps": [0, 50, 100]}, "/analysis/steps/0"),
        ({"steps": [5.123, 100]}, "/analysis/steps/0"),
        ({"steps": list(range(1, 12))}, "/analysis/steps"),
        ({"steps": []}, "/analysis/steps"),
        ({"min_calls": 1}, "/analysis/min_calls"),
        ({"min_minutes": 30.5}, "/analysis/min_minutes"),
        ({"max_minutes": [60, 0, 60, 60]}, "/analysis/max_minutes/1"),
        ({"alpha": 0.9}, "/analysis/alpha"),
        ({"max_cost_increase": True}, "/analysis/max_cost_increase"),
        ({"measure_retries": 21}, "/analysis/measure_retries"),
        ({"sources": {"runs": True, "colour": 1}}, "/analysis/sources/colour"),
        ({"sources": {"keys": [0]}}, "/analysis/sources/keys"),
        ({"sources": {"runs": "yes"}}, "/analysis/sources/runs"),
    ],
)
def test_a_policy_the_server_refuses_the_schema_forbids(
    releaser_client, released, openapi, policy, pointer
):
    body = {"version": 3, "analysis": policy}

    response = releaser_client.post(f"{RELEASE}/canary", body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert pointer in [e["pointer"] for e in problem["errors"]], problem
    schema = body_schema(openapi, "/api/v1/releases/{environment}/{key}/canary")
    assert not allows(openapi, schema, body)


def test_a_policy_the_server_takes_the_schema_allows_and_reads_back(
    releaser_client, released, openapi
):
    policy = {
        "steps": [2.5, 12.5, 100],
        "min_minutes": [10, 20, 0],
        "min_calls": 200,
        "alpha": 0.01,
        "sources": {"runs": True, "reports": True, "keys": [7, 3]},
    }
    body = {"version": 3, "analysis": policy}
    schema = body_schema(openapi, "/api/v1/releases/{environment}/{key}/canary")
    assert allows(openapi, schema, body)

    response = releaser_client.post(f"{RELEASE}/canary", body, format="json")

    assert response.status_code == 200, response.content
    analysis = releaser_client.get(f"{RELEASE}/canary/analysis").json()
    assert analysis["policy"]["steps"] == [2.5, 12.5, 100]
    assert analysis["policy"]["sources"]["keys"] == [3, 7]
    validate(openapi, {"$ref": "#/components/schemas/CanaryPolicy"}, analysis["policy"])


def test_a_step_computed_as_a_multiple_of_a_hundredth_is_that_hundredth(releaser_client, released):
    # What a generator makes of ``multipleOf: 0.01``: 7 * 0.01 is 0.07000000000000001.
    body = {"version": 3, "analysis": {"steps": [7 * 0.01, 29 * 0.01, 100]}}

    response = releaser_client.post(f"{RELEASE}/canary", body, format="json")

    assert response.status_code == 200, response.content
    analysis = releaser_client.get(f"{RELEASE}/canary/analysis").json()
    assert analysis["policy"]["steps"] == [0.07, 0.29, 100]
    assert response.json()["canary"]["percent"] == 0.07


# --- Path parameters ---------------------------------------------------------------------------


def test_every_key_and_environment_path_parameter_has_the_names_rule(openapi):
    expected = {"key": KEY_SCHEMA, "environment": ENVIRONMENT_SCHEMA}
    seen = set()
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in expected:
                    assert parameter["schema"] == expected[parameter["name"]], (path, method)
                    seen.add(parameter["name"])
    assert seen == {"key", "environment"}


@pytest.mark.parametrize("key", ["a..b", "a.", "x" * 151])
def test_a_key_that_cannot_exist_is_a_404_and_outside_the_schema(
    reader_client, released, openapi, key
):
    response = reader_client.get(f"/api/v1/releases/staging/{key}")

    assert response.status_code == 404
    schema = parameter_schema(openapi, "/api/v1/releases/{environment}/{key}", "get", "key")
    assert not allows(openapi, schema, key)


# --- The schema-only fixes of the first pass ---------------------------------------------------


def test_templates_may_not_be_empty(author_client, committed, openapi):
    model = {"provider": "openai", "model": "gpt-4o-mini"}
    body = {"message": "Empty", "model": model, "templates": {}}

    response = author_client.post(
        "/api/v1/prompts/support.refund-reply/versions", body, format="json"
    )

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert "/templates" in [e["pointer"] for e in problem["errors"]]
    assert not allows(openapi, body_schema(openapi, "/api/v1/prompts/{key}/versions"), body)
    body["templates"] = {"en": {"instruction": "Hello."}}
    assert allows(openapi, body_schema(openapi, "/api/v1/prompts/{key}/versions"), body)


def test_at_most_20_tags(author_client, prompt, openapi):
    body = {"tags": [f"t{i}" for i in range(21)]}

    response = author_client.patch("/api/v1/prompts/support.refund-reply", body, format="json")

    assert_problem(response, 400, "/problems/validation-error")
    schema = body_schema(openapi, "/api/v1/prompts/{key}", "patch")
    assert not allows(openapi, schema, body)
    assert allows(openapi, schema, {"tags": body["tags"][:20]})


def test_an_experiment_is_named_by_a_positive_id(reader_client, released, openapi):
    response = reader_client.get(f"{RELEASE}/experiment/results", {"experiment": 0})

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/experiment"]
    path = "/api/v1/releases/{environment}/{key}/experiment/results"
    assert not allows(openapi, parameter_schema(openapi, path, "get", "experiment"), 0)


def test_the_gate_status_environment_is_an_environment_name(reader_client, released, openapi):
    response = reader_client.get(
        "/api/v1/prompts/support.refund-reply/versions/2/gates", {"environment": "Prod!"}
    )

    assert_problem(response, 400, "/problems/validation-error")
    path = "/api/v1/prompts/{key}/versions/{number}/gates"
    schema = parameter_schema(openapi, path, "get", "environment")
    assert not allows(openapi, schema, "Prod!")
    assert allows(openapi, schema, "production")


# --- Pagination and the subject ----------------------------------------------------------------


def test_a_page_size_too_long_for_int_is_a_400(reader_client, prompt, openapi):
    digits = "9" * 5000  # int() refuses more than 4,300

    response = reader_client.get("/api/v1/prompts", {"page_size": digits})

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/page_size"]
    schema = parameter_schema(openapi, "/api/v1/prompts", "get", "page_size")
    assert not allows(openapi, schema, int(digits[:400]))


def test_a_page_number_too_long_for_int_is_past_the_last_page(reader_client, prompt):
    response = reader_client.get("/api/v1/prompts", {"page": "9" * 5000})

    assert_problem(response, 404, "/problems/not-found")


def test_leading_zeros_are_the_number(reader_client, prompt):
    response = reader_client.get("/api/v1/prompts", {"page_size": "0" * 5000 + "2"})

    assert response.status_code == 200
    assert response.json()["count"] == 1


@pytest.fixture
def runtime_client(make_client):
    return make_client("prompts:read", "runs:execute", name="runtime")


def test_a_subject_is_at_most_256_characters_on_resolve(runtime_client, released, openapi):
    url = "/api/v1/prompts/support.refund-reply/resolve"
    longest = "s" * SUBJECT_MAX_CHARS

    taken = runtime_client.get(url, {"environment": "staging", "subject": longest})
    refused = runtime_client.get(url, {"environment": "staging", "subject": longest + "s"})

    assert taken.status_code == 200, taken.content
    assert taken.json()["sticky"] is True
    problem = assert_problem(refused, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/subject"]
    schema = parameter_schema(openapi, "/api/v1/prompts/{key}/resolve", "get", "subject")
    assert allows(openapi, schema, longest)
    assert not allows(openapi, schema, longest + "s")


@pytest.mark.parametrize("operation", ["render", "run"])
def test_a_subject_is_at_most_256_characters_in_a_body(
    runtime_client, released, openapi, operation
):
    body = {
        "environment": "staging",
        "subject": "s" * (SUBJECT_MAX_CHARS + 1),
        "variables": {"customer_name": "Ida"},
    }

    response = runtime_client.post(
        f"/api/v1/prompts/support.refund-reply/{operation}",
        data=json.dumps(body),
        content_type="application/json",
    )

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == ["/subject"]
    assert not Call.objects.exists()
    assert not allows(openapi, body_schema(openapi, f"/api/v1/prompts/{{key}}/{operation}"), body)
    body["subject"] = body["subject"][:-1]
    assert allows(openapi, body_schema(openapi, f"/api/v1/prompts/{{key}}/{operation}"), body)
