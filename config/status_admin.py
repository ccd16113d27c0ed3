"""The admin's status page, ``/admin/status/``: the operator's view of the running service (every
web process's release cache, the worker heartbeat, the queues, the shadow outbox, recent task
failures and each provider's health), server-rendered in the admin's frame. It reads through
``config.status`` and links each section to the admin lists that hold the detail, filtered.

Superusers only (decision 0039): it names hosts and processes and quotes providers' errors, and
no model's view permission covers what it spans. ``admin_view`` sends anyone who is not active
staff to the login page; staff who are not superusers are refused (403). Linked from the user
tools of every admin page (templates/admin/base_site.html) and hooked into the admin site's URLs
the way the A/B results pages are (``evaluations.admin.experiments``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.http import urlencode

from evaluations.models import EvalRun
from runs.models import Call, ShadowRun

from .status import StatusReport, status_report

TITLE = "Status"
TEMPLATE = "admin/status.html"


def can_view_status(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.is_superuser)


def _list(name: str, **filters: str) -> str:
    """An admin changelist's address, filtered by ``filters`` (its own list filters' and field
    lookups' parameters)."""
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def status_links(report: StatusReport) -> dict[str, Any]:
    """Where each section leads: the admin lists (filtered to what the section counts) and the
    records it names."""
    error = ShadowRun.Status.ERROR
    return {
        "releases": _list("releases_release"),
        "release_events": _list("releases_releaseevent"),
        "shadows_pending": _list("runs_shadowrun", status__exact=ShadowRun.Status.PENDING),
        "shadows_recent": _list("runs_shadowrun", within="1h"),
        "shadows_failed": _list("runs_shadowrun", status__exact=error, within="24h"),
        # (error class, what it means, runs, their list), per error class counted
        "shadow_errors": [
            (
                error_class,
                meaning,
                runs,
                _list("runs_shadowrun", status__exact=error, within="24h", error_class=error_class),
            )
            for error_class, meaning, runs in report.shadow_failures.by_error
        ],
        "evals_queued": _list("evaluations_evalrun", status__exact=EvalRun.Status.QUEUED),
        "evals_running": _list("evaluations_evalrun", status__exact=EvalRun.Status.RUNNING),
        "evals_failed": _list("evaluations_evalrun", status__exact=EvalRun.Status.FAILED),
        "eval_results_timed_out": _list("evaluations_evalresult", error_class="time_limit"),
        "providers": _list("runs_provider"),
        "calls_failed": _list(
            "runs_call", source="all", within="1h", status__exact=Call.Status.ERROR
        ),
        # (health, the calls it answered, those that failed naming it), per provider
        "providers_health": [
            (
                p,
                _list("runs_call", source="all", within="1h", provider=p.name),
                _list(
                    "runs_call",
                    source="all",
                    within="1h",
                    provider=p.name,
                    status__exact=Call.Status.ERROR,
                ),
            )
            for p in report.providers.providers
        ],
    }


def status_view(request: HttpRequest) -> HttpResponse:
    if not can_view_status(request):
        raise PermissionDenied
    report = status_report()
    context = {
        **admin.site.each_context(request),
        "title": TITLE,
        "report": report,
        "links": status_links(report),
        "check_seconds": settings.RELEASE_CACHE_CHECK_SECONDS,
    }
    # admin_view adds never_cache: every load is a picture of now.
    return TemplateResponse(request, TEMPLATE, context)


# --- hooking the page into the admin site ---------------------------------------------------------
# At import (config/urls.py imports this module before it reads the site's URLs), once.

_site_get_urls = admin.site.get_urls


def _get_urls() -> list[URLPattern | URLResolver]:
    return [path("status/", admin.site.admin_view(status_view), name="status"), *_site_get_urls()]


admin.site.get_urls = _get_urls
