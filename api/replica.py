"""The read-only API reads from the replica (``DATABASE_REPLICA_URL``, decision 0040).

A GET (or HEAD, OPTIONS) answered by a DRF view has its reads routed to the replica
(``config.routers``); every other request, the admin's pages and the runtime path (answered
before this middleware, from the release cache) read the primary. Within such a request the
router still keeps a read on the primary inside a transaction or after a write, and the API key
is always read from the primary (``api.authentication``), so a revoked key is refused at once,
whatever the replica's lag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import MiddlewareNotUsed
from django.db import connections
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import SAFE_METHODS
from rest_framework.views import APIView

from config.routers import REPLICA, Reads, current_reads, replica_reads, replica_ready


class ReplicaReadsMiddleware:
    """Last in ``MIDDLEWARE``. Not installed at all without a replica."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if REPLICA not in connections.settings:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The request's own state, shared by every query it makes: ``process_view`` opens it to
        # the replica, and a write routed meanwhile closes it again.
        with replica_reads(Reads()):
            return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        reads = current_reads()
        view_class = getattr(view, "cls", None)
        if (
            reads is not None
            and request.method in SAFE_METHODS
            and isinstance(view_class, type)
            and issubclass(view_class, APIView)
            # Checked (and connected) before the view reads anything, so a replica that is down
            # sends this request's reads to the primary instead of failing it.
            and replica_ready()
        ):
            reads.replica = True
