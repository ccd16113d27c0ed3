"""The middleware that answers the runtime path before the rest of the stack."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import (
    async_to_sync,
    iscoroutinefunction,
    markcoroutinefunction,
    sync_to_async,
)
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import StringConverter
from django.urls.resolvers import RegexPattern, RoutePattern

from . import problems
from .fastpath import Refusal, is_runtime_view, refusal_of
from .problems import ProblemAnswer, problem_json


@dataclass(frozen=True, slots=True)
class FastRoute:
    """One runtime URL of the URLconf: its whole path as one regular expression, matched with
    ``fullmatch`` (with ``match``, ``$`` also matches before a final newline, so
    ".../resolve%0A" would be answered as ".../resolve"), and its view."""

    regex: re.Pattern[str]
    converters: tuple[tuple[str, Any], ...]  # those whose ``to_python`` changes the string
    view: Callable[..., HttpResponse]
    # The pattern as Django's ``resolver_match.route`` spells it ("api/v1/prompts/<key:key>/run"):
    # what the request metrics count it under (``api.metrics``), as they do every other URL.
    route: str
    # Read once here, not per request (``inspect`` and ``getattr`` cost microseconds each).
    is_async: bool
    refuse: Refusal


def fast_routes(resolver: URLResolver) -> tuple[FastRoute, ...]:
    """Every URL of the URLconf whose view is a ``runtime_view``, in the URLconf's order: the
    patterns (and their converters) are the URLconf's own, so they exist once."""
    return tuple(_fast_routes(resolver.url_patterns, _bare(resolver.pattern), (), ""))


def _fast_routes(
    patterns: list[URLPattern | URLResolver],
    prefix: str,
    converters: tuple[tuple[str, Any], ...],
    route: str,
) -> Iterator[FastRoute]:
    for entry in patterns:
        regex = prefix + _bare(entry.pattern)
        found = converters + tuple(
            (name, converter)
            for name, converter in entry.pattern.converters.items()
            if type(converter).to_python is not StringConverter.to_python  # the string as it is
        )
        joined = URLResolver._join_route(route, str(entry.pattern))
        if isinstance(entry, URLResolver):
            yield from _fast_routes(entry.url_patterns, regex, found, joined)
        elif is_runtime_view(entry.callback):
            view = entry.callback
            yield FastRoute(
                re.compile(regex), found, view, joined, iscoroutinefunction(view), refusal_of(view)
            )


def _bare(pattern: RoutePattern | RegexPattern) -> str:
    """A pattern's regular expression without its anchors, to be joined to its parents'."""
    return pattern.regex.pattern.removeprefix("^").removesuffix(r"\Z").removesuffix("$")


API_PREFIX = "/api/"
# The MCP server's door (api.mcpserver) takes writes with a bearer key too: a write to it over
# plain http is refused as one to the API is.
MCP_PATH = "/mcp"
# Methods a redirect may repeat: a 301 makes most clients send a POST again as a GET, without its
# body (urllib, requests and browsers all do), which would turn a write into a confusing 405.
REDIRECTED_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Transport:
    """The ``SECURE_*`` settings the runtime path applies, read once: each ``settings.X`` costs
    about a microsecond, a few per request on the fast path. ``override_settings`` (and any other
    change through ``setting_changed``) drops the copy, so they still act as read at call time."""

    redirect: bool
    exempt: tuple[re.Pattern[str], ...]
    ssl_host: str | None
    hsts: str | None  # the Strict-Transport-Security value, None when off
    nosniff: bool


_transport: Transport | None = None


def transport() -> Transport:
    global _transport
    if _transport is None:
        hsts = None
        if settings.SECURE_HSTS_SECONDS:
            hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
            hsts += "; includeSubDomains" if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS else ""
            hsts += "; preload" if settings.SECURE_HSTS_PRELOAD else ""
        _transport = Transport(
            redirect=settings.SECURE_SSL_REDIRECT,
            exempt=tuple(re.compile(r) for r in settings.SECURE_REDIRECT_EXEMPT),
            ssl_host=settings.SECURE_SSL_HOST,
            hsts=hsts,
            nosniff=settings.SECURE_CONTENT_TYPE_NOSNIFF,
        )
    return _transport


@receiver(setting_changed)
def _transport_changed(*, setting: str, **kwargs: object) -> None:
    global _transport
    if setting.startswith("SECURE_"):
        _transport = None
    if setting in HOST_SETTINGS:
        _allowed_hosts.clear()


# ``Host`` headers that passed Django's check (``request.get_host()``, a few microseconds of
# settings reads and parsing on every runtime request). Only a plain ``Host`` is remembered (no
# ``X-Forwarded-Host``), its validity depends on nothing but the settings below, and at most
# ``MAX_ALLOWED_HOSTS`` of them: a refused host is never remembered, so the set cannot grow.
HOST_SETTINGS = frozenset({"ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST"})
MAX_ALLOWED_HOSTS = 64
_allowed_hosts: set[str] = set()


def host_allowed(request: HttpRequest) -> bool:
    """Django's Host check (``request.get_host()`` against ``ALLOWED_HOSTS``), remembered for a
    ``Host`` header it already allowed."""
    meta = request.META
    host = meta.get("HTTP_HOST") if "HTTP_X_FORWARDED_HOST" not in meta else None
    if host is not None and host in _allowed_hosts:
        return True
    try:
        request.get_host()
    except DisallowedHost:
        return False
    if host is not None and len(_allowed_hosts) < MAX_ALLOWED_HOSTS:
        _allowed_hosts.add(host)
    return True


def https_refusal(request: HttpRequest, refusal: Refusal = problem_json) -> HttpResponse | None:
    """What ``SecurityMiddleware`` would answer to a plain-http request, for the paths that do not
    reach it; ``None`` lets the request through.

    Honours ``SECURE_SSL_REDIRECT``, ``SECURE_PROXY_SSL_HEADER`` (through ``is_secure``),
    ``SECURE_REDIRECT_EXEMPT`` and ``SECURE_SSL_HOST``. A GET or HEAD is redirected with a 301 as
    Django does; any other method is refused with a 403 problem. Repeating a write over https
    would hide the misconfigured client for ever, while its key and payload keep crossing the
    network in clear on every first attempt: the client must fix its URL.
    """
    policy = transport()
    if not policy.redirect or request.is_secure():
        return None
    path = request.path.lstrip("/")
    if any(pattern.search(path) for pattern in policy.exempt):
        return None
    location = f"https://{policy.ssl_host or request.get_host()}{request.get_full_path()}"
    if request.method in REDIRECTED_METHODS:
        return HttpResponsePermanentRedirect(location)
    detail = (
        f"Send this request to {location}; plain http is refused, not redirected, for "
        f"{request.method}."
    )
    return refusal(ProblemAnswer(problems.HTTPS_REQUIRED, detail), request)


# Answers that carry no content, and so no Content-Length: a 304's would have to be the 200's
# (RFC 9110 8.6), a 204 may not have one (RFC 9110 15.3.5).
NO_CONTENT_LENGTH = frozenset({204, 304})


def stack_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The headers every answer leaves with, whichever middleware it skipped (``RuntimeMiddleware``
    passes the rest of the stack's answers through here too): ``SecurityMiddleware``'s HSTS on
    https (so a client that learnt it never tries http again) and ``nosniff``; a
    ``Content-Length``, without which the WSGI server sends the answer chunked (a client cannot
    tell its size up front, and the server writes the closing chunk in a system call of its
    own), as ``CommonMiddleware`` gives the answers it sees (not those made before it, like a
    refused Host's); and none on a 204 or a 304, where it gives ``0`` (RFC 9110 8.6: never on a
    204, on a 304 only the 200's length). A HEAD's body is dropped here, as the server would
    otherwise send it (gunicorn drops it with a warning)."""
    policy = transport()
    if policy.hsts and request.is_secure():
        response.headers.setdefault("Strict-Transport-Security", policy.hsts)
    if policy.nosniff:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.streaming:
        return response
    if response.status_code in NO_CONTENT_LENGTH:
        response.headers.pop("Content-Length", None)
        return response
    response.headers.setdefault("Content-Length", str(len(response.content)))
    if request.method == "HEAD":  # the GET's length, and no body (RFC 9110 9.3.2)
        response.content = b""
    return response


class RuntimeMiddleware:
    """First in ``MIDDLEWARE``: answers the runtime paths directly, skipping the rest of the
    stack (sessions, CSRF, auth, messages), which those paths do not use. Everything else passes.

    The runtime paths are the URLconf's URLs whose view is a ``runtime_view`` (``fast_routes``,
    read once, when Django loads the middleware). Of what it skips, it keeps the Host check and
    ``SecurityMiddleware``'s https redirect, and the headers it and ``CommonMiddleware`` add
    (``https_refusal``, ``stack_headers``, which the rest of the stack's answers get too);
    a write over plain http to any API path (and to the MCP server's ``/mcp``) is refused here
    too, rather than redirected as a GET further down the stack."""

    sync_capable = True
    async_capable = True  # under ASGI it serves the stream's async view on the event loop

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.routes = fast_routes(get_resolver())
        # The first segments the runtime views live under (/api/, and the OpenAI-compatible
        # door's prefix): any other path passes on at the cost of one startswith.
        self.prefixes = tuple(
            sorted({API_PREFIX} | {f"/{r.route.split('/', 1)[0]}/" for r in self.routes})
        )
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        found = self._route(request)
        if found is None:
            return stack_headers(request, self.get_response(request))
        if isinstance(found, HttpResponse):  # refused before any view: the Host, plain http
            return stack_headers(request, found)
        route, kwargs = found
        if route.is_async:  # WSGI: the view runs to its answer in this thread
            response = async_to_sync(route.view)(request, **kwargs)
        else:
            response = route.view(request, **kwargs)
        return stack_headers(request, response)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        found = self._route(request)
        if found is None:
            return stack_headers(request, await self.get_response(request))
        if isinstance(found, HttpResponse):  # refused before any view: the Host, plain http
            return stack_headers(request, found)
        route, kwargs = found
        if route.is_async:
            response = await route.view(request, **kwargs)
        else:
            response = await sync_to_async(route.view)(request, **kwargs)
        return stack_headers(request, response)

    def _route(
        self, request: HttpRequest
    ) -> tuple[FastRoute, dict[str, Any]] | HttpResponse | None:
        """The runtime route to call and its view's arguments; or the answer (a refused Host, a
        redirect to https); or None: the rest of the stack answers."""
        path = request.path_info
        if path == MCP_PATH:
            return self._write_refusal(request)
        if not path.startswith(self.prefixes):
            return None
        for route in self.routes:
            match = route.regex.fullmatch(path)
            if match is not None:
                kwargs = match.groupdict()
                try:
                    for name, converter in route.converters:
                        kwargs[name] = converter.to_python(kwargs[name])
                except ValueError:  # as Django's resolver: not this URL after all
                    continue
                request.url_route = route.route  # what resolver_match.route says for the rest
                # Django's Host check normally runs in CommonMiddleware, which is skipped here.
                if not host_allowed(request):
                    bad_host = ProblemAnswer(problems.BAD_HOST, "The Host header is not allowed.")
                    return route.refuse(bad_host, request)
                refusal = https_refusal(request, route.refuse)
                return (route, kwargs) if refusal is None else refusal
        return self._write_refusal(request)

    def _write_refusal(self, request: HttpRequest) -> HttpResponse | None:
        """A write over plain http refused (``https_refusal``); None for anything else."""
        if request.method in REDIRECTED_METHODS:
            return None
        try:
            return https_refusal(request)
        except DisallowedHost:
            return None  # CommonMiddleware answers it, further down
