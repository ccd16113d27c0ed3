"""The site's own pages, outside the admin and the API: the home page that "View site" leads to,
the health probes and the favicon. None needs a login, and none says anything about what the
registry holds: the home page says what this is and where to go; the probes (answered ahead of
the middleware stack, ``config.middleware.ProbeMiddleware``) say whether the process is up and
whether it can serve."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.views.decorators.http import require_safe

from .health import readiness

FAVICON = "registry/favicon.svg"


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """What this is, and links to the admin, the API docs and the health check."""
    return TemplateResponse(request, "home.html", {"favicon": static(FAVICON)})


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No I/O on purpose, so a slow database or Redis never gets
    a healthy process restarted; whether the dependencies answer is a readiness question."""
    response = JsonResponse({"status": "ok"})
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: whether this process can serve traffic now (``config.health``). 200 with
    ``"status": "ready"`` while the database answers and is migrated, even with Redis, the
    release listener or the worker degraded (each named in ``checks``); 503 ``"not ready"``
    otherwise. Statuses only: no hostname, version or error text, since anyone may ask."""
    found = readiness()
    response = JsonResponse(
        {"status": "ready" if found.ready else "not ready", "checks": found.checks},
        status=200 if found.ready else 503,
    )
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on pages that name no icon (the API docs, a JSON answer)."""
    return redirect(static(FAVICON), permanent=True)
