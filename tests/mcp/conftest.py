"""The MCP server's tests run the ``mcp`` package's own client (``streamable_http_client`` and
``ClientSession``, as Claude Code and Cursor speak it) against a live registry: pytest-django's
``live_server``, the WSGI server ``make run`` serves with too.

- ``mcp_client(*scopes)``: an ``McpClient`` holding a fresh key with those scopes.
- The personas' clients, each with what its key may do: ``reader_mcp`` reads, ``author_mcp``
  writes prompts, ``releaser_mcp`` changes releases.

Each call opens a session, initializes it and makes its calls: the server is stateless, so a
session is nothing but the requests it sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from api.authentication import KeyPrincipal
from api.services import apikey_create

T = TypeVar("T")
TIMEOUT_SECONDS = 30.0  # a call past this is a hang, and the test fails on it


class McpClient:
    """An MCP client of the live registry, with one API key."""

    def __init__(self, url: str, raw_key: str | None, actor_label: str = "") -> None:
        self.url = f"{url}/mcp"
        self.raw_key = raw_key
        self.actor_label = actor_label  # what the history and the versions record it as

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw_key}"} if self.raw_key else {}

    def session(self, scenario: Callable[[ClientSession], Awaitable[T]]) -> T:
        """Runs ``scenario`` in an initialized session (the 2025 handshake clients speak)."""

        async def run() -> T:
            async with (
                httpx2.AsyncClient(headers=self.headers, timeout=TIMEOUT_SECONDS) as http,
                streamable_http_client(self.url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await scenario(session)

        try:
            return anyio.run(run)
        except BaseExceptionGroup as group:  # the client's task groups wrap what was raised
            raise first_raised(group) from None

    def tool_names(self) -> list[str]:
        listed = self.session(lambda session: session.list_tools())
        return [tool.name for tool in listed.tools]

    def tools(self) -> dict[str, types.Tool]:
        listed = self.session(lambda session: session.list_tools())
        return {tool.name: tool for tool in listed.tools}

    def call(self, name: str, **arguments: Any) -> types.CallToolResult:
        return self.session(lambda session: session.call_tool(name, arguments))

    def answer(self, name: str, **arguments: Any) -> dict[str, Any]:
        """The tool's answer, which must not be a refusal."""
        result = self.call(name, **arguments)
        assert not result.is_error, result.structured_content
        return result.structured_content

    def refusal(self, name: str, **arguments: Any) -> dict[str, Any]:
        """The problem document a tool error carries (in its text too)."""
        result = self.call(name, **arguments)
        assert result.is_error, result.structured_content
        assert result.content[0].text.startswith("{"), result.content
        return result.structured_content


def first_raised(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@pytest.fixture
def mcp_client(live_server, transactional_db) -> Callable[..., McpClient]:
    def make(*scopes: str, environments: tuple[str, ...] = ()) -> McpClient:
        key, raw = apikey_create(name="mcp", scopes=scopes, environments=environments)
        return McpClient(live_server.url, raw, KeyPrincipal(key).actor.label)

    return make


@pytest.fixture
def reader_mcp(mcp_client) -> McpClient:
    """An assistant that reads prompts and releases: the write tools are neither listed nor run."""
    return mcp_client("prompts:read")


@pytest.fixture
def author_mcp(mcp_client) -> McpClient:
    """A prompt author's assistant: reads, opens, edits and commits drafts, starts eval runs."""
    return mcp_client("prompts:read", "prompts:write")


@pytest.fixture
def releaser_mcp(mcp_client) -> McpClient:
    """Release automation's assistant: reads, and changes releases; writes no prompt."""
    return mcp_client("prompts:read", "releases:write")


@pytest.fixture
def eager(monkeypatch) -> None:
    """Eval runs' batches run in the live server's process when queued (the embedded default's
    way), whatever REDIS_URL."""
    from config.celery import app as celery_app

    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
