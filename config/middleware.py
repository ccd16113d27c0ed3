"""The two middlewares ahead of the rest: the health probes, and the log context of a request.

Both are first in ``MIDDLEWARE``, before ``api.middleware.RuntimeMiddleware``, and both serve
WSGI and ASGI (the release stream's process runs its async view on the event loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse

from api.middleware import stack_headers

from . import views
from .logs import note, request_context_start

# The probes' paths, as config/urls.py names them too (the URLconf answers them when this
# middleware is not installed).
PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": views.healthz,
    "/readyz": views.readyz,
}


class ProbeMiddleware:
    """Answers ``/healthz`` and ``/readyz`` before anything else (decision 0037).

    Their callers are a load balancer or the kubelet, which address a node by its IP over plain
    http inside the network, where TLS ended at the edge: Django's Host check would refuse them
    (400) and ``SECURE_SSL_REDIRECT`` send them to https (a 301, which a Kubernetes probe counts
    as a success whatever the node's state). Neither guards anything here: a probe's answer
    builds no URL from the Host header, and says nothing that plain http may not carry. The
    headers the skipped middleware would add that matter to a JSON answer are added still
    (``api.middleware.stack_headers``)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        request.url_route = request.path_info[1:]  # its route in the metrics (api.metrics)
        return stack_headers(request, probe(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is None:
            return await self.get_response(request)
        request.url_route = request.path_info[1:]
        # Off the thread the async views' sync parts share: /readyz may wait on the database.
        answered = await sync_to_async(probe, thread_sensitive=False)(request)
        return stack_headers(request, answered)


class RequestContextMiddleware:
    """Starts the request's log context (``config.logs``): its id is the caller's
    ``X-Request-Id`` when that is a sane token, else one drawn when first needed. For the views
    behind the whole stack (the DRF API, the admin), the URL's prompt key and environment are
    noted as soon as the URL is resolved; the runtime path notes them itself
    (``api.fastpath``)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        # Under ASGI this returns the coroutine of the rest of the stack, awaited by the caller
        # in the same task: the context set here is the one that task runs in.
        request_context_start(request.META.get("HTTP_X_REQUEST_ID"))
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        note(prompt=kwargs.get("key"), environment=kwargs.get("environment"))
