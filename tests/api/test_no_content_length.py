"""``api.middleware.no_content_length``: no ``Content-Length`` on a 204 or a 304 (RFC 9110 8.6),
whether the stack runs under WSGI or ASGI; the views' tests check it end to end (a version's
discard and 304, a gate's delete)."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from django.http import HttpRequest, HttpResponse

from api.middleware import no_content_length


def answered(status: int) -> HttpResponse:
    response = HttpResponse(status=status)
    response["Content-Length"] = "0"  # what CommonMiddleware gives every answer
    return response


@pytest.mark.parametrize(("status", "length"), [(204, None), (304, None), (200, "0"), (404, "0")])
def test_only_a_204_and_a_304_lose_their_length(status: int, length: str | None) -> None:
    middleware = no_content_length(lambda request: answered(status))

    assert middleware(HttpRequest()).get("Content-Length") == length


@pytest.mark.parametrize(("status", "length"), [(204, None), (200, "0")])
def test_under_asgi_it_stays_async(status: int, length: str | None) -> None:
    async def get_response(request: HttpRequest) -> HttpResponse:
        return answered(status)

    middleware = no_content_length(get_response)

    assert inspect.iscoroutinefunction(middleware)  # no thread hop for it under ASGI
    assert asyncio.run(middleware(HttpRequest())).get("Content-Length") == length
