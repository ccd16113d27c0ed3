"""The MCP server under gunicorn, as production serves it (tests/faults/conftest.py): an MCP
client lists, reads and renders through it; with PostgreSQL stopped, a request is refused at
once with a 503 problem (never a hang, never a 500), and answered again once it is back.
"""

from __future__ import annotations

import httpx
import pytest

from tests.celery_worker import wait_for
from tests.mcp.conftest import McpClient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

KEY = "support.refund-reply"
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def test_an_mcp_client_reads_and_renders_through_gunicorn(released, web, service_key):
    client = McpClient(web.url, service_key)

    names = client.tool_names()
    release = client.answer("get_release", key=KEY, environment="production")
    rendered = client.answer(
        "render_version",
        key=KEY,
        number=release["stable"],
        variables={"customer_name": "Ada"},
    )

    assert "propose_release_change" not in names  # the service's key cannot change releases
    assert rendered["messages"][1]["content"] == "Greet Ada."


def test_with_the_database_down_a_request_is_a_503_and_back_with_it(
    released, web, postgres, service_key
):
    assert web.post("/mcp", service_key, LIST_TOOLS).status_code == 200

    postgres.down()
    refused = web.post("/mcp", service_key, LIST_TOOLS)

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/database-unavailable"
    assert refused.headers["Retry-After"]

    postgres.up()

    def answered() -> bool:
        try:
            return web.post("/mcp", service_key, LIST_TOOLS).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answered, "the MCP server to answer again")
