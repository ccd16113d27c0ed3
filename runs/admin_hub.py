"""What runs adds to a prompt's page (``registry.admin.hub``): its most recent calls, with a link
to all of them. Registered by ``RunsConfig.ready()``; one query on the (prompt, environment,
created_at) index, whatever the number of calls. Shown to users who may read calls."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timezone import localtime

from registry.admin.hub import Link, Panel
from registry.models import Prompt
from registry.templatetags.registry_display import ms

from .selectors import call_list, traffic_calls

RECENT_CALLS = 10


def calls_url(prompt: Prompt) -> str:
    return f"{reverse('admin:runs_call_changelist')}?{urlencode({'prompt__id__exact': prompt.pk})}"


def calls_panel(request: HttpRequest, prompt: Prompt) -> Panel | None:
    if not request.user.has_perm("runs.view_call"):
        return None
    # Release traffic only: the playground's runs are on the calls list, under their source.
    calls = list(traffic_calls(call_list()).filter(prompt=prompt)[:RECENT_CALLS])
    return Panel(
        title="Recent calls",
        headers=["When", "Environment", "Version", "Variant", "Status", "Latency"],
        rows=[
            [
                format_html(
                    '<a href="{}">{}</a>',
                    reverse("admin:runs_call_change", args=[call.pk]),
                    localtime(call.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                ),
                call.environment.name,
                f"v{call.version.number}",
                call.variant or "—",
                call.status,
                ms(call.latency_ms),
            ]
            for call in calls
        ],
        links=[Link("Every call of this prompt", calls_url(prompt))] if calls else [],
        empty="No call yet: calls appear once a service resolves, renders or runs the prompt.",
        order=50,
        note=f"The {RECENT_CALLS} most recent." if len(calls) == RECENT_CALLS else "",
    )
