"""The middleware that answers the runtime path before the rest of the stack."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

from . import problems
from .run import run_view
from .runtime import ENVIRONMENT, KEY, _problem, bundle_view, render_view, resolve_view
from .stream import stream_view

ROUTES: list[tuple[re.Pattern[str], Callable[..., HttpResponse]]] = [
    (re.compile(rf"^/api/v1/prompts/{KEY}/resolve$"), resolve_view),
    (re.compile(rf"^/api/v1/prompts/{KEY}/render$"), render_view),
    (re.compile(rf"^/api/v1/prompts/{KEY}/run$"), run_view),
    (re.compile(rf"^/api/v1/environments/{ENVIRONMENT}/bundle$"), bundle_view),
    (re.compile(rf"^/api/v1/environments/{ENVIRONMENT}/stream$"), stream_view),
]


class RuntimeMiddleware:
    """First in ``MIDDLEWARE``: answers the runtime paths directly, skipping the rest of the
    stack (sessions, CSRF, auth, messages), which those paths do not use. Everything else passes."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith("/api/v1/"):
            for pattern, view in ROUTES:
                match = pattern.match(path)
                if match is not None:
                    # Django's Host check normally runs in CommonMiddleware, which is skipped here.
                    try:
                        request.get_host()
                    except DisallowedHost:
                        return _problem(
                            problems.BAD_HOST, "The Host header is not allowed.", request
                        )
                    return view(request, **match.groupdict())
        return self.get_response(request)
