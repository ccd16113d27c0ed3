"""The checklist every authoring endpoint passes: keys, scopes, 404, 405, problem documents.

``ENDPOINTS`` is the authoring API; a new endpoint is added here and inherits every check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from api.models import ApiKey
from api.services import apikey_create, apikey_revoke
from registry.models import Prompt
from tests.api.helpers import assert_problem, registry_state
from tests.factories import PromptFactory, content_data, make_version

pytestmark = pytest.mark.django_db

READ, WRITE = "prompts:read", "prompts:write"
REFUND = "/api/v1/prompts/support.refund-reply"
TRIAGE = "/api/v1/prompts/support.triage"
MISSING = "/api/v1/prompts/support.nothing"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # "{prompt}" stands for a prompt's path
    scope: str
    success: int
    prompt: str = REFUND
    data: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.path.format(prompt=self.prompt)

    @property
    def url_of_missing_prompt(self) -> str:
        return self.path.format(prompt=MISSING)

    def call(self, client: APIClient, url: str | None = None):
        url = url or self.url
        if self.method == "get":
            return client.get(url, self.query)
        return getattr(client, self.method)(url, self.data, format="json")

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


ENDPOINTS = [
    Endpoint("get", "/api/v1/prompts", READ, 200),
    Endpoint("post", "/api/v1/prompts", WRITE, 201, data={"key": "support.new"}),
    Endpoint("get", "{prompt}", READ, 200),
    Endpoint("patch", "{prompt}", WRITE, 200, data={"description": "Changed."}),
    Endpoint("get", "{prompt}/versions", READ, 200),
    Endpoint(
        "post",
        "{prompt}/versions",
        WRITE,
        201,
        prompt=TRIAGE,
        data={"message": "Second.", **content_data()},
    ),
    Endpoint("get", "{prompt}/versions/1", READ, 200),
    Endpoint("patch", "{prompt}/versions/2", WRITE, 200, data={"message": "Changed."}),
    Endpoint("delete", "{prompt}/versions/2", WRITE, 204),
    Endpoint("post", "{prompt}/versions/2/commit", WRITE, 200, data={}),
    Endpoint("get", "{prompt}/versions/2/diff", READ, 200, query={"against": 1}),
    Endpoint(
        "post",
        "{prompt}/versions/1/render",
        READ,
        200,
        data={"variables": {"customer_name": "Ada"}},
    ),
]
PER_PROMPT = [e for e in ENDPOINTS if "{prompt}" in e.path]
WRITES = [e for e in ENDPOINTS if e.scope == WRITE]
READS = [e for e in ENDPOINTS if e.scope == READ]

# Every path with the methods it answers; any other method is a 405.
ALLOWED = {
    "/api/v1/prompts": {"GET", "POST"},
    REFUND: {"GET", "PATCH"},
    f"{REFUND}/versions": {"GET", "POST"},
    f"{REFUND}/versions/2": {"GET", "PATCH", "DELETE"},
    f"{REFUND}/versions/2/commit": {"POST"},
    f"{REFUND}/versions/2/diff": {"GET"},
    f"{REFUND}/versions/2/render": {"POST"},
}
NOT_ALLOWED = [
    (path, method)
    for path, allowed in ALLOWED.items()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    if method not in allowed
]


@pytest.fixture(autouse=True)
def registry(db) -> None:
    """support.refund-reply: v1 committed, v2 an open draft; support.triage: v1 committed."""
    refund = PromptFactory(key="support.refund-reply")
    make_version(refund)
    make_version(refund, commit=False, message="Draft.")
    make_version(PromptFactory(key="support.triage"))


def client_with(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


# --- it works ----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_it_answers_a_key_with_the_scope(make_client, endpoint):
    client = make_client(endpoint.scope)

    response = endpoint.call(client)

    assert response.status_code == endpoint.success, response.content


@pytest.mark.parametrize("endpoint", [e for e in READS if e.method == "get"], ids=str)
def test_it_answers_head_like_get_to_a_reader(reader_client, endpoint):
    response = reader_client.head(endpoint.url, endpoint.query)

    assert response.status_code == 200
    assert response.content == b""


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_it_answers_401_with_a_bearer_challenge_without_a_key(anonymous_client, endpoint):
    before = registry_state()

    response = endpoint.call(anonymous_client)

    assert_problem(response, 401, "/problems/unauthenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert registry_state() == before


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nope",
        "Bearer pr_000000000000_not-a-real-secret",
        "Bearer ",
        "Basic YWxpY2U6c2VjcmV0",
        "Token pr_000000000000_x",
    ],
    ids=["garbage", "unknown-id", "empty", "basic", "other-scheme"],
)
@pytest.mark.parametrize("endpoint", [ENDPOINTS[0], ENDPOINTS[3]], ids=str)
def test_it_answers_401_to_a_bad_key(endpoint, header):
    before = registry_state()

    response = endpoint.call(client_with(header))

    assert_problem(response, 401, "/problems/unauthenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert registry_state() == before


def test_it_answers_401_to_a_known_id_with_the_wrong_secret(author_client):
    key = author_client.key
    forged = client_with(f"Bearer pr_{key.lookup_id}_{'x' * 43}")

    response = forged.get("/api/v1/prompts")

    assert_problem(response, 401, "/problems/unauthenticated")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_it_answers_401_to_a_revoked_key(endpoint):
    key, raw = apikey_create(name="old-ci", scopes=[READ, WRITE])
    client = client_with(f"Bearer {raw}")
    assert client.get("/api/v1/prompts").status_code == 200
    apikey_revoke(key=key)
    before = registry_state()

    response = endpoint.call(client)

    assert_problem(response, 401, "/problems/unauthenticated")
    assert registry_state() == before


def test_it_records_when_a_key_was_last_used(reader_client):
    assert reader_client.key.last_used_at is None

    reader_client.get("/api/v1/prompts")

    reader_client.key.refresh_from_db()
    assert reader_client.key.last_used_at is not None


def test_it_stores_keys_hashed(make_client):
    key, raw = apikey_create(name="service", scopes=[READ])

    row = ApiKey.objects.get(pk=key.pk)
    assert row.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    secret = raw.split("_", 2)[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM api_apikey")
        stored = repr(cursor.fetchall())
    assert raw not in stored
    assert secret not in stored
    assert secret not in str(row)


# --- scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", WRITES, ids=str)
@pytest.mark.parametrize("persona", ["reader_client", "releaser_client"])
def test_it_refuses_a_write_to_a_key_without_the_write_scope(request, persona, endpoint):
    client = request.getfixturevalue(persona)
    before = registry_state()

    response = endpoint.call(client)

    problem = assert_problem(response, 403, "/problems/insufficient-scope")
    assert problem["required_scope"] == WRITE
    assert registry_state() == before


@pytest.mark.parametrize("endpoint", READS, ids=str)
def test_it_refuses_a_read_to_a_key_without_the_read_scope(make_client, endpoint):
    client = make_client("releases:write", "runs:execute")

    response = endpoint.call(client)

    problem = assert_problem(response, 403, "/problems/insufficient-scope")
    assert problem["required_scope"] == READ


def test_a_write_scope_alone_does_not_read(make_client):
    response = make_client(WRITE).get("/api/v1/prompts")

    assert_problem(response, 403, "/problems/insufficient-scope")


def test_a_key_limited_to_an_environment_still_authors(make_client):
    """Prompts and versions belong to no environment; the limit applies to releases and runs."""
    client = make_client(READ, WRITE, environments=("staging",))

    response = client.post("/api/v1/prompts", {"key": "support.staging-only"}, format="json")

    assert response.status_code == 201
    assert Prompt.objects.filter(key="support.staging-only").exists()


# --- 404 and 405 -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", PER_PROMPT, ids=str)
def test_it_answers_404_for_a_prompt_that_does_not_exist(make_client, endpoint):
    client = make_client(endpoint.scope)
    before = registry_state()

    response = endpoint.call(client, endpoint.url_of_missing_prompt)

    problem = assert_problem(response, 404, "/problems/prompt-not-found")
    assert problem["instance"] == endpoint.url_of_missing_prompt
    assert registry_state() == before


@pytest.mark.parametrize(("path", "method"), NOT_ALLOWED, ids=lambda v: str(v))
def test_it_answers_405_to_other_methods(author_client, path, method):
    before = registry_state()

    response = author_client.generic(method, path, "{}", content_type="application/json")

    problem = assert_problem(response, 405, "/problems/method-not-allowed")
    assert method in problem["detail"]
    allowed = {m.strip() for m in response["Allow"].split(",")}
    assert ALLOWED[path] <= allowed
    assert method not in allowed
    assert registry_state() == before
