"""The site's own pages, outside the admin and the API: the home page that "View site" leads to,
the liveness check and the favicon. None needs a login, and none reads the database: the home
page says what this is and where to go, and nothing about what the registry holds."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.views.decorators.http import require_safe

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
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on pages that name no icon (the API docs, a JSON answer)."""
    return redirect(static(FAVICON), permanent=True)
