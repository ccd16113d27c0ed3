"""``POST /mcp``: the MCP server over streamable HTTP, as a plain Django view (decision 0043).

The ``mcp`` package's streamable HTTP transport is an ASGI application; the web process is WSGI
(gunicorn, ``make run``'s development server). It runs stateless with JSON answers: each POST
carries one JSON-RPC message and gets one JSON answer (or 202 for a notification), with no
session kept between requests, so any web node (any worker, any thread) answers any request and
nothing streams. The view hands the request to a fresh ``StreamableHTTPSessionManager`` on an
event loop of its own (``async_to_sync``); the tools run back on this request's thread.

Before the JSON-RPC message reaches the server, the view refuses what the API refuses, with the
API's problem documents: a method other than POST (405: there is no server-initiated stream to
GET, and no session to DELETE), no key or a bad one (401), too many requests from the key (429,
the ``default`` bucket; each tool call also takes one token from its own scope's bucket), a body
that is not JSON (415, 400) or larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413), an Accept
header without JSON (406). Past that, the answer is the MCP server's: JSON-RPC, with a tool's
refusal as a tool error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from rest_framework.exceptions import NotAuthenticated
from starlette.requests import Request

from registry.strictjson import strict_json_loads

from .. import problems
from ..authentication import header_key
from ..fastpath import problem_view, rate_limit_check
from ..models import ApiKey
from ..problems import ProblemException
from ..ratelimit import DEFAULT_SCOPE
from .server import server

logger = logging.getLogger(__name__)

JSON = "application/json"
# What reaches the MCP server of the request's headers: never the key itself, which the view has
# checked (the server reads the key's row from the scope instead).
WITHHELD_HEADERS = frozenset({"authorization", "cookie"})


@problem_view("POST")
def mcp_view(request: HttpRequest) -> HttpResponse:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        raise NotAuthenticated("Send the key as 'Authorization: Bearer <key>'.")
    api_key = header_key(header)
    rate_limit_check(key_id=api_key.pk, scope=DEFAULT_SCOPE)
    if request.content_type != JSON:
        raise ProblemException(problems.UNSUPPORTED_MEDIA, "Send application/json.")
    body = request.body  # past DATA_UPLOAD_MAX_MEMORY_SIZE: RequestDataTooBig, a 413
    # The API's parser first: what it refuses (NULs, NaN, nesting past JSON_MAX_DEPTH) is refused
    # here as it is there, before the MCP server reads the message.
    strict_json_loads(body)
    scope = asgi_scope(request, api_key)
    accepts_json, _ = check_accept_headers(Request(scope))  # as the transport reads Accept
    if not accepts_json:
        raise ProblemException(
            problems.NOT_ACCEPTABLE, "Accept application/json: every answer here is JSON."
        )
    answer = async_to_sync(exchange)(scope, body)
    response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        if name != "content-length":  # Django counts the body it sends
            response[name] = value
    return response


def asgi_scope(request: HttpRequest, api_key: ApiKey) -> dict[str, Any]:
    """The ASGI ``http`` scope of a request Django has read, for the MCP transport."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.items()
        if name.lower() not in WITHHELD_HEADERS
    ]
    if "HTTP_ACCEPT" not in request.META:
        # No Accept header accepts anything (RFC 9110, 12.5.1); the transport wants it said.
        headers.append((b"accept", JSON.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (request.META.get("REMOTE_ADDR", ""), 0),
        "server": (request.META.get("SERVER_NAME", ""), int(request.get_port())),
        "state": {"api_key": api_key},
    }


@dataclass
class Answer:
    """The transport's answer, as the ASGI messages it sent said it."""

    status: int = 500
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


async def exchange(scope: dict[str, Any], body: bytes) -> Answer:
    """One request through a stateless transport with JSON answers, and its answer. Bounded by
    ``MCP_REQUEST_TIMEOUT_SECONDS``: the tools themselves are bounded by the services' budgets;
    this holds against a wait that would never end."""
    answer = Answer()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The body is all there is: anything that listens for more hears the client has left.
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    # One manager per request: stateless, nothing outlives the request, and a manager runs once.
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=True,
        stateless=True,
        max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    )
    timeout = settings.MCP_REQUEST_TIMEOUT_SECONDS
    try:
        with anyio.fail_after(timeout):
            async with manager.run():
                await manager.handle_request(scope, receive, send)
    except TimeoutError as exc:
        logger.error("MCP request unanswered after %s s", timeout)
        raise ProblemException(
            problems.SERVER_ERROR, f"The request was not answered within {timeout} s."
        ) from exc
    return answer
