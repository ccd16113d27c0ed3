"""The error format (RFC 9457) end to end: malformed and oversized bodies, wrong media types,
unknown addresses, unexpected exceptions, and the transaction of a request that fails."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.db import connection
from django.test import override_settings

from api.parsers import LimitedJSONParser, RequestTooLarge
from registry.models import Prompt, PromptVersion
from tests.api import problem_urls
from tests.api.conftest import PROMPT
from tests.api.helpers import PROBLEM_JSON, assert_problem
from tests.factories import content_data

pytestmark = pytest.mark.django_db

PROMPTS = "/api/v1/prompts"


def test_it_answers_400_to_a_body_that_is_not_json(author_client):
    response = author_client.post(
        PROMPTS, '{"key": "support.new",', content_type="application/json"
    )

    problem = assert_problem(response, 400, "/problems/malformed-request")
    assert problem["instance"] == PROMPTS
    assert not Prompt.objects.exists()


def test_it_answers_400_to_a_body_that_is_not_utf8(author_client):
    response = author_client.post(PROMPTS, b'{"key": "caf\xe9"}', content_type="application/json")

    assert_problem(response, 400, "/problems/malformed-request")


@pytest.mark.parametrize("payload", ["[]", '"support.new"', "null", "42"])
def test_it_answers_400_to_json_that_is_not_an_object(author_client, payload):
    response = author_client.post(PROMPTS, payload, content_type="application/json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert problem["errors"]
    assert not Prompt.objects.exists()


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e400"], ids=["nan", "inf", "-inf", "overflow"]
)
def test_it_answers_400_to_numbers_json_does_not_have(reader_client, committed, number):
    """Python's json reads them; the renderer could not write them back (a 500)."""
    response = reader_client.post(
        f"{PROMPT}/versions/1/render",
        '{"variables": {"customer_name": "Ada", "extra": [' + number + "]}}",
        content_type="application/json",
    )

    problem = assert_problem(response, 400, "/problems/malformed-request")
    assert "not valid JSON" in problem["detail"]


def test_it_answers_400_to_a_body_nested_too_deeply(reader_client, committed):
    depth = 100_000
    payload = '{"variables": {"customer_name": ' + "[" * depth + "]" * depth + "}}"

    response = reader_client.post(
        f"{PROMPT}/versions/1/render", payload, content_type="application/json"
    )

    problem = assert_problem(response, 400, "/problems/malformed-request")
    assert "nested too deeply" in problem["detail"]


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda b: b["model"]["parameters"].update(stop="\x00"), "/model/parameters/stop"),
        (
            lambda b: b["model"].update(response_schema={"title": "a\x00b"}),
            "/model/response_schema/title",
        ),
        (
            lambda b: b["variables"].append(
                {"name": "tone", "type": "string", "required": False, "default": "\x00"}
            ),
            "/variables/1/default",
        ),
        (lambda b: b["model"]["parameters"].update({"a\x00": 1}), "/model/parameters"),
        (lambda b: b["templates"]["en"].update(format="\x00"), "/templates/en/format"),
    ],
    ids=["parameter", "response-schema", "variable-default", "key", "template"],
)
def test_it_refuses_a_null_character_anywhere_in_a_body(author_client, prompt, change, pointer):
    """PostgreSQL's text and jsonb cannot store U+0000: refused with a pointer, not a 500."""
    body = {"message": "NUL.", **content_data()}
    change(body)

    response = author_client.post(f"{PROMPT}/versions", body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        ("null_characters_not_allowed", pointer)
    ]
    assert not PromptVersion.objects.exists()


@pytest.mark.parametrize("param", ["search", "tag"])
def test_it_refuses_a_null_character_in_a_query(reader_client, param):
    response = reader_client.get(PROMPTS, {param: "a\x00b"})

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in problem["errors"]] == [f"/{param}"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_it_answers_413_to_a_body_over_the_limit_and_creates_nothing(author_client, prompt):
    body = {"message": "x" * 2000, **content_data()}

    response = author_client.post(f"{PROMPT}/versions", body, format="json")

    problem = assert_problem(response, 413, "/problems/request-too-large")
    assert "1024" in problem["detail"]
    assert not PromptVersion.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_the_parser_never_reads_past_the_limit_whatever_the_headers_say():
    stream = io.BytesIO(b'"' + b"x" * 4096 + b'"')

    with pytest.raises(RequestTooLarge):
        LimitedJSONParser().parse(stream, "application/json", {})
    assert stream.tell() == 1025


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_it_takes_a_body_just_under_the_limit(author_client):
    body = {"key": "support.new", "description": "x" * 900}
    assert len(json.dumps(body)) < 1024

    response = author_client.post(PROMPTS, body, format="json")

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        ("key=support.new", "application/x-www-form-urlencoded"),
        ('{"key": "support.new"}', "text/plain"),
        ("<key>support.new</key>", "application/xml"),
    ],
)
def test_it_answers_415_to_another_media_type(author_client, payload, content_type):
    response = author_client.post(PROMPTS, payload, content_type=content_type)

    problem = assert_problem(response, 415, "/problems/unsupported-media-type")
    assert content_type in problem["detail"]
    assert not Prompt.objects.exists()


def test_it_answers_406_to_a_client_that_accepts_no_json(reader_client):
    response = reader_client.get(PROMPTS, HTTP_ACCEPT="text/html")

    assert response.status_code == 406
    assert response["Content-Type"] == PROBLEM_JSON
    assert response.json()["type"] == "/problems/not-acceptable"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/nothing-here", "/api/v1/prompts/NOT-A-KEY", "/api/v2/prompts", "/api/v1/prompts/x/y"],
)
def test_it_answers_an_unknown_api_address_with_a_problem(reader_client, settings, path):
    settings.DEBUG = False

    response = reader_client.get(path)

    problem = assert_problem(response, 404, "/problems/not-found")
    assert problem["instance"] == path


def test_it_leaves_addresses_outside_the_api_to_django(client, settings):
    settings.DEBUG = False

    response = client.get("/not-the-api/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_it_answers_an_unexpected_error_with_a_500_problem_and_no_trace(
    make_client, monkeypatch, caplog
):
    def broken(**kwargs):
        raise RuntimeError("connection string postgres://secret@db")

    monkeypatch.setattr("api.prompts.prompt_list", broken)
    client = make_client("prompts:read")
    client.raise_request_exception = False

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get(PROMPTS)

    problem = assert_problem(response, 500, "/problems/server-error")
    assert set(problem) == {"type", "title", "status", "detail", "instance"}
    text = response.content.decode()
    assert "secret" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    # The trace goes to the log instead.
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


@pytest.mark.urls("tests.api.problem_urls")
@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        ("permission-denied", 403, "/problems/forbidden"),
        ("validation", 400, "/problems/validation-error"),
        ("not-found", 404, "/problems/not-found"),
        ("drf-permission-denied", 403, "/problems/forbidden"),
    ],
)
def test_it_maps_django_errors_to_problems(reader_client, error, status, type_):
    response = reader_client.get(f"/api/v1/test/raise/{error}")

    problem = assert_problem(response, status, type_)
    if error == "validation":
        assert [e["detail"] for e in problem["errors"]] == [
            "First thing wrong.",
            "Second thing wrong.",
        ]
    if error == "permission-denied":
        assert problem["detail"] == "Only the owner may do that."


@pytest.fixture
def atomic_requests(monkeypatch):
    """Each request in a transaction of its own (``ATOMIC_REQUESTS``), as a deployment may set."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)


@pytest.mark.urls("tests.api.problem_urls")
def test_it_rolls_back_the_request_transaction_on_an_error(author_client, atomic_requests):
    response = author_client.post("/api/v1/test/create-then-fail", {}, format="json")

    problem = assert_problem(response, 409, "/problems/draft-exists")
    assert problem["draft_number"] == 7
    assert not Prompt.objects.filter(key=problem_urls.HALF_DONE).exists()


@pytest.mark.urls("tests.api.problem_urls")
def test_the_rollback_is_the_handlers_doing(author_client, atomic_requests, monkeypatch):
    """Control for the test above: without ``set_rollback`` the half-done write would stay."""
    monkeypatch.setattr("api.problems.set_rollback", lambda: None)

    response = author_client.post("/api/v1/test/create-then-fail", {}, format="json")

    assert response.status_code == 409
    assert Prompt.objects.filter(key=problem_urls.HALF_DONE).exists()


def test_every_error_names_the_request_it_answers(author_client):
    response = author_client.get("/api/v1/prompts/support.nothing/versions/3")

    problem = assert_problem(response, 404, "/problems/prompt-not-found")
    assert problem["instance"] == "/api/v1/prompts/support.nothing/versions/3"
