"""``POST /mcp``: the MCP server's door. What the view refuses before the JSON-RPC message
reaches the server is refused as the API refuses it (a problem document); what it lets through
is MCP's, stateless, one JSON answer per POST, for the 2025 handshake and the 2026 per-request
envelope alike, under the development server, Django's test client and the ASGI process.
"""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from django.test import Client
from mcp.client import Client as ModernClient
from mcp.client.streamable_http import streamable_http_client

from api.mcpserver.view import asgi_scope
from api.services import apikey_create, apikey_revoke
from tests.mcp.conftest import McpClient

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
PROBLEM = "application/problem+json"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "tests", "version": "1"},
    },
}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@pytest.fixture
def raw_key(db) -> str:
    _, raw = apikey_create(name="mcp", scopes=("prompts:read",))
    return raw


def post(body, *, key: str | None, content_type: str = "application/json", **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return Client().post("/mcp", data=data, content_type=content_type, **headers)


def problem(response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["type"] == type_, body
    return body


# --- the JSON-RPC exchange -----------------------------------------------------------------------


def test_initialize_says_who_the_server_is_and_that_it_has_tools(raw_key):
    response = post(INITIALIZE, key=raw_key)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "Mcp-Session-Id" not in response  # stateless: no session to keep
    result = response.json()["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert (result["serverInfo"]["name"], result["serverInfo"]["title"]) == (
        "prompt-registry",
        "Prompt Registry",
    )
    assert "tools" in result["capabilities"]
    assert "list_prompts" in result["instructions"]


def test_each_request_stands_alone_without_a_session(raw_key, released):
    # No initialize before, no session id: any web node can answer any request.
    response = post(LIST_TOOLS, key=raw_key)

    assert response.status_code == 200
    assert "list_prompts" in [tool["name"] for tool in response.json()["result"]["tools"]]


def test_a_notification_is_taken_with_nothing_to_answer(raw_key):
    response = post({"jsonrpc": "2.0", "method": "notifications/initialized"}, key=raw_key)

    assert (response.status_code, response.content) == (202, b"")


def test_a_body_that_is_no_json_rpc_message_is_a_json_rpc_error(raw_key):
    response = post([LIST_TOOLS, LIST_TOOLS], key=raw_key)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] < 0


def test_without_accept_it_answers_json_and_with_only_html_accepted_406(raw_key):
    assert post(LIST_TOOLS, key=raw_key).status_code == 200  # no Accept: anything goes
    assert post(LIST_TOOLS, key=raw_key, HTTP_ACCEPT="*/*").status_code == 200
    problem(post(LIST_TOOLS, key=raw_key, HTTP_ACCEPT="text/html"), 406, "/problems/not-acceptable")


# --- refused before the server reads the message ---------------------------------------------


def test_no_key_or_a_bad_or_revoked_one_is_a_401_with_the_bearer_challenge(db):
    key, raw = apikey_create(name="gone", scopes=("prompts:read",))
    apikey_revoke(key=key)

    for sent in (None, "pr_000000000000_nope", raw):
        response = post(INITIALIZE, key=sent)
        problem(response, 401, "/problems/unauthenticated")
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    basic = post(INITIALIZE, key=None, HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    problem(basic, 401, "/problems/unauthenticated")


@pytest.mark.parametrize("method", ["get", "delete", "put"])
def test_only_post_is_answered(raw_key, method):
    # GET would open a server-initiated stream, DELETE end a session: there are neither.
    response = getattr(Client(), method)("/mcp", HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    problem(response, 405, "/problems/method-not-allowed")
    assert response["Allow"] == "POST"


def test_a_body_that_is_not_json_is_refused_as_the_api_refuses_it(raw_key):
    problem(post("{", key=raw_key), 400, "/problems/malformed-request")
    problem(
        post("hi", key=raw_key, content_type="text/plain"), 415, "/problems/unsupported-media-type"
    )
    nul = {**LIST_TOOLS, "params": {"cursor": "a\u0000b"}}
    refused = problem(post(nul, key=raw_key), 400, "/problems/validation-error")
    assert refused["errors"][0]["code"] == "null_characters_not_allowed"


def test_a_body_past_the_upload_limit_is_a_413(raw_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    call = {**LIST_TOOLS, "params": {"cursor": "x" * 2000}}

    problem(post(call, key=raw_key), 413, "/problems/request-too-large")


def test_requests_beyond_the_keys_rate_are_a_429_saying_when_to_retry(
    raw_key, settings, empty_rate_buckets
):
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "default": "1/min"}

    assert post(LIST_TOOLS, key=raw_key).status_code == 200
    refused = post(LIST_TOOLS, key=raw_key)

    problem(refused, 429, "/problems/throttled")
    assert int(refused["Retry-After"]) >= 1


def test_tool_calls_beyond_their_scopes_rate_are_tool_errors(
    raw_key, released, settings, empty_rate_buckets
):
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "prompts:read": "1/min"}
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call"}
    call["params"] = {"name": "list_prompts", "arguments": {}}

    first = post(call, key=raw_key).json()["result"]
    second = post(call, key=raw_key).json()["result"]

    assert not first["isError"]
    assert second["isError"]
    assert second["structuredContent"]["type"] == "/problems/throttled"


def test_a_write_over_plain_http_is_refused_not_redirected(raw_key, settings):
    settings.SECURE_SSL_REDIRECT = True

    problem(post(LIST_TOOLS, key=raw_key), 403, "/problems/https-required")
    assert post(LIST_TOOLS, key=raw_key, secure=True).status_code == 200


def test_the_key_itself_never_reaches_the_mcp_server(rf, db):
    key, raw = apikey_create(name="mcp", scopes=("prompts:read",))
    request = rf.post("/mcp", data="{}", content_type="application/json")
    request.META["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    request.META["HTTP_COOKIE"] = "sessionid=abc"

    scope = asgi_scope(request, key)

    assert raw.encode() not in b"".join(value for _, value in scope["headers"])
    assert {name for name, _ in scope["headers"]}.isdisjoint({b"authorization", b"cookie"})
    assert scope["state"]["api_key"] == key


# --- served for real -------------------------------------------------------------------------


@pytest.mark.postgres  # a live server's transactional test (tests/mcp/test_tools.py says why)
@pytest.mark.django_db(transaction=True)
def test_a_client_of_the_2026_protocol_lists_and_calls_tools(released, live_server):
    _, raw = apikey_create(name="mcp", scopes=("prompts:read",))

    async def scenario():
        headers = {"Authorization": f"Bearer {raw}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            ModernClient(
                streamable_http_client(f"{live_server.url}/mcp", http_client=http),
                mode="2026-07-28",
            ) as client,
        ):
            tools = await client.list_tools()
            rendered = await client.call_tool(
                "render_version",
                {"key": KEY, "number": 1, "variables": {"customer_name": "Ada"}},
            )
            return [tool.name for tool in tools.tools], rendered

    names, rendered = anyio.run(scenario)

    assert "render_version" in names
    assert not rendered.is_error
    assert rendered.structured_content["messages"][1]["content"] == "Greet Ada."


@pytest.mark.postgres
def test_the_asgi_process_serves_it_too(released, asgi_server, monkeypatch):
    from django.db import connection

    # Django serves each request there on a thread of its own: with persistent connections,
    # each would keep one open past the test (and the test database could not be dropped).
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    _, raw = apikey_create(name="mcp", scopes=("prompts:read",))
    client = McpClient(asgi_server.url, raw)

    prompts = client.answer("list_prompts")
    refused = client.refusal("render_version", key=KEY, number=1, variables={})

    assert [p["key"] for p in prompts["results"]] == [KEY]
    assert refused["type"] == "/problems/invalid-variables"
