"""``GET /metrics`` and the request metrics, in the first middleware of the stack.

``MetricsMiddleware`` comes before ``RuntimeMiddleware`` (which answers the runtime path itself and
skips the rest), so it times every request, the runtime path's included, and counts it under its
route: the URL pattern that answered (``resolver_match.route``, or the one ``RuntimeMiddleware``
matched), "unmatched" when none did. On the runtime path that is a dictionary lookup, a counter
and one histogram observation: nothing else is allocated.

It also answers ``/metrics`` itself (decision 0038). Prometheus scrapes each process by the
address its discovery found (a pod's IP), over plain http on the private network; behind the
stack, ``CommonMiddleware`` would refuse a Host that ``ALLOWED_HOSTS`` does not name and
``SecurityMiddleware`` would redirect to https. So here a Host that is an IP address is accepted
as well as those ``ALLOWED_HOSTS`` names (a DNS rebinding attack needs a name), and plain http is
served. Who may read is settled by ``METRICS_ALLOWED_NETWORKS`` (the peer's address, never a
forwarded header) and ``METRICS_TOKEN``, refused as problem documents.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port

from config.metrics import HTTP_DURATION, HTTP_REQUESTS, exposition

from . import problems
from .authentication import bearer_token
from .middleware import host_allowed, stack_headers
from .problems import ProblemAnswer, problem_json

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
# Any other method (a client may send any token) is counted as "other": a label value per method
# name a caller invents would be a new series each.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SAFE_METHODS = ("GET", "HEAD")
TOKEN_CHALLENGE = 'Bearer realm="metrics"'


class MetricsMiddleware:
    """First in ``MIDDLEWARE``: answers ``/metrics`` (with the headers the stack it skips would
    add, its length among them: ``stack_headers``), and times and counts every other request."""

    sync_capable = True
    async_capable = True  # under ASGI the stream's view stays on the event loop

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        # (route, method, status) -> the counter's and the histogram's series: labels() would
        # build and check its tuple on every request. Bounded, as the labels are.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        if request.path_info == METRICS_PATH:
            return stack_headers(request, metrics_answer(request))
        started = time.perf_counter()
        response = self.get_response(request)
        self._record(request, response.status_code, time.perf_counter() - started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == METRICS_PATH:
            answer = await sync_to_async(metrics_answer)(request)  # reads files in multiprocess
            return stack_headers(request, answer)
        started = time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response.status_code, time.perf_counter() - started)
        return response

    def _record(self, request: HttpRequest, status: int, seconds: float) -> None:
        """Counts one answer. A stream's time is the time to its headers, not its length."""
        method = request.method if request.method in METHODS else "other"
        key = (request_route(request), method, status)
        series = self._series.get(key)
        if series is None:
            route, method, status = key
            series = self._series[key] = (
                HTTP_REQUESTS.labels(route, method, str(status)),
                HTTP_DURATION.labels(route, method),
            )
        series[0].inc()
        series[1].observe(seconds)


def request_route(request: HttpRequest) -> str:
    """The URL pattern that answered, "/"-rooted: the one ``RuntimeMiddleware`` matched, else the
    URLconf's; "unmatched" for a request answered before or without routing (a 404, a refused
    Host, an https redirect)."""
    route = getattr(request, "url_route", None)
    if route is None:
        match = request.resolver_match
        if match is None:
            return UNMATCHED
        route = match.route
    return "/" + route


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics`` in the URLconf (named, so it can be reversed); ``MetricsMiddleware`` answers
    it first wherever the middleware is installed."""
    return metrics_answer(request)


metrics_view.csrf_exempt = True  # a GET; any other method is refused below


def metrics_answer(request: HttpRequest) -> HttpResponse:
    """Every metric in the Prometheus text format, or the problem document refusing it."""
    refused = metrics_refusal(request)
    if refused is not None:
        return problem_json(refused, request)
    body, content_type = exposition()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def metrics_refusal(request: HttpRequest) -> ProblemAnswer | None:
    """Why this request may not read the metrics, or None. The address is checked before the
    token, so a caller outside the allowed networks learns nothing about the token."""
    if request.method not in SAFE_METHODS:
        detail = f"{request.method} is not allowed here."
        return ProblemAnswer(problems.METHOD_NOT_ALLOWED, detail, headers={"Allow": "GET, HEAD"})
    if not (_host_is_an_address(request) or host_allowed(request)):
        return ProblemAnswer(problems.BAD_HOST, "The Host header is not allowed.")
    networks = allowed_networks()
    if networks and not address_allowed(request.META.get("REMOTE_ADDR", ""), networks):
        return ProblemAnswer(
            problems.METRICS_FORBIDDEN,
            "Scrape from an address in METRICS_ALLOWED_NETWORKS.",
        )
    token = settings.METRICS_TOKEN
    if token:
        given = bearer_token(request.META.get("HTTP_AUTHORIZATION", "")) or ""
        # Compared in constant time: the time a wrong guess takes says nothing of the token.
        if not hmac.compare_digest(given.encode(), token.encode()):
            return ProblemAnswer(
                problems.METRICS_UNAUTHENTICATED,
                "Send 'Authorization: Bearer <METRICS_TOKEN>'.",
                headers={"WWW-Authenticate": TOKEN_CHALLENGE},
            )
    return None


def _host_is_an_address(request: HttpRequest) -> bool:
    """Whether the Host header is an IP address (and port), as Prometheus sends for a target it
    discovered by address. Only the plain Host: a forwarded one goes through ``ALLOWED_HOSTS``."""
    meta = request.META
    if "HTTP_X_FORWARDED_HOST" in meta:
        return False
    domain, _port = split_domain_port(meta.get("HTTP_HOST", ""))
    try:
        ipaddress.ip_address(domain.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks() -> tuple[Network, ...]:
    """``METRICS_ALLOWED_NETWORKS``, parsed (settings checked each one at start-up)."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in settings.METRICS_ALLOWED_NETWORKS)


def address_allowed(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether the peer's address is in one of ``networks``. An IPv4 peer of a server listening on
    IPv6 arrives mapped (``::ffff:10.0.0.7``) and is matched as the IPv4 address it is; an
    address that does not parse (a Unix socket's empty one) is in none."""
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer in network for network in networks)
