"""Change requests in the admin (decision 0048): the queue of requests to review (the changelist,
open ones first, with "conflicts with #N" where several are live on one release), and a request's
page: the release now, when proposed and after, the version diff against what is served, the
promotion gates, the reviews, and the buttons its reader may use (approve or reject with a
comment, apply, withdraw), each one service call.

Reading needs ``releases.view_release`` (release managers) or ``releases.view_changerequest``;
what a reader may do is the services' to say (reviewers are the environment's review group).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from registry.actors import Actor
from registry.errors import RegistryError
from registry.models import PromptVersion
from registry.selectors import VersionDiff, version_diff
from releases.gates import promotion_gate_reports
from releases.models import ChangeRequest, ChangeRequestReview, Release, ReleaseEvent
from releases.selectors import change_request_conflicts
from releases.services.change_requests import (
    change_request_apply,
    change_request_is_proposer,
    change_request_may_review,
    change_request_moves,
    change_request_planned_steps,
    change_request_review,
    change_request_withdraw,
)
from releases.services.schedule import change_text
from releases.services.stored import change_from_stored
from releases.state import ReleaseState

from .display import state_summary
from .views import comparison, release_url

State = ChangeRequest.State
TEMPLATE = "admin/releases/changerequest/request.html"


class CommentForm(forms.Form):
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "class": "vLargeTextField"}),
        help_text="Kept with your verdict; the proposer and the webhooks see it.",
    )


@dataclass(frozen=True, slots=True)
class VersionChange:
    """A version the request puts in front of traffic, against the stable version served."""

    number: int
    against: int | None
    diff: VersionDiff | None
    url: str


def version_changes(request: ChangeRequest) -> list[VersionChange]:
    before, after = ReleaseState.from_dict(request.before), ReleaseState.from_dict(request.after)
    served = set(before.versions())
    numbers = sorted(set(after.versions()) - served)
    versions = {
        v.number: v
        for v in PromptVersion.objects.filter(
            prompt_id=request.prompt_id, number__in=[*numbers, before.stable or 0]
        )
    }
    changes = []
    for number in numbers:
        version, stable = versions.get(number), versions.get(before.stable or 0)
        if version is None:
            continue
        diff = version_diff(before=stable, after=version) if stable is not None else None
        url = reverse("admin:registry_promptversion_diff", args=[version.pk])
        if stable is not None:
            url += f"?before={stable.number}&after={number}"
        changes.append(VersionChange(number, before.stable, diff, url))
    return changes


@admin.register(ChangeRequest)
class ChangeRequestAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "prompt",
        "environment",
        "action",
        "state_now",
        "proposed_by_label",
        "approvals",
        "conflicts",
        "expires_at",
    ]
    list_filter = ["state", "environment"]
    list_select_related = ["prompt", "environment"]
    search_fields = ["prompt__key", "reason"]
    show_full_result_count = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("releases.view_release") or super().has_view_permission(
            request, obj
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # proposed from the release board (or the API)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # every step is a service: the request page's buttons

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit keeps them

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChangeRequest]:
        return super().get_queryset(request).prefetch_related("reviews")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self._now = timezone.now()
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", {}).get("cl")
        self._conflicts = (
            change_request_conflicts(list(cl.result_list), now=self._now) if cl else {}
        )
        return response

    @admin.display(description="#", ordering="id")
    def number(self, obj: ChangeRequest) -> str:
        return f"#{obj.pk}"

    @admin.display(description="state")
    def state_now(self, obj: ChangeRequest) -> str:
        return State(obj.state_at(getattr(self, "_now", None) or timezone.now())).label

    @admin.display(description="approvals")
    def approvals(self, obj: ChangeRequest) -> str:
        count = sum(
            1 for r in obj.reviews.all() if r.verdict == ChangeRequestReview.Verdict.APPROVE
        )
        return f"{count} of {obj.environment.approvals_required}"

    @admin.display(description="conflicts")
    def conflicts(self, obj: ChangeRequest) -> str:
        others = getattr(self, "_conflicts", {}).get(obj.pk, [])
        return ", ".join(f"conflicts with #{pk}" for pk in others)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        return request_page(self, request, object_id)


def request_page(model_admin: ChangeRequestAdmin, request: HttpRequest, object_id: str):
    """The request with what it changes; POST ``step`` (approve, reject, apply, withdraw) calls
    that step's service and comes back here with what happened."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    change_request = model_admin.get_queryset(request).filter(pk=unquote(object_id)).first()
    if change_request is None:
        raise Http404("No such change request.")
    actor = Actor.for_user(request.user)
    form = CommentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        step, comment = request.POST.get("step", ""), form.cleaned_data["comment"]
        pk = change_request.pk
        steps = {
            "approve": lambda: change_request_review(
                change_request_id=pk, actor=actor, verdict="approve", comment=comment
            ),
            "reject": lambda: change_request_review(
                change_request_id=pk, actor=actor, verdict="reject", comment=comment
            ),
            "apply": lambda: change_request_apply(change_request_id=pk, actor=actor),
            "withdraw": lambda: change_request_withdraw(
                change_request_id=pk, actor=actor, reason=comment
            ),
        }
        if step not in steps:
            raise PermissionDenied("No such step.")
        try:
            done = steps[step]()
        except RegistryError as exc:
            model_admin.message_user(request, exc.message, messages.ERROR)
        else:
            model_admin.message_user(
                request,
                f"Change request #{pk} is {State(done.state).label.lower()}.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(request.path)
    now = timezone.now()
    state = change_request.state_at(now)
    before, after = (
        ReleaseState.from_dict(change_request.before),
        ReleaseState.from_dict(change_request.after),
    )
    change = change_from_stored(change_request.change)
    live = state in (State.OPEN, State.APPROVED)
    reviewer = change_request_may_review(change_request, actor)
    proposer = change_request_is_proposer(change_request, actor)
    conflicts = change_request_conflicts([change_request], now=now).get(change_request.pk, [])
    release = change_request.release_event.release if change_request.release_event else None
    moves = change_request_moves(change_request) if state == State.APPROVED else []
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Change request #{change_request.pk}: "
        f"{ReleaseEvent.Action(change_request.action).label} of {change_request.prompt} in "
        f"{change_request.environment}",
        "change_request": change_request,
        "state": State(state),
        "arguments": change_request.change.get("arguments", {}),
        "before_summary": state_summary(before),
        "after_summary": state_summary(after),
        **{("moves_text" if k == "moves" else k): v for k, v in comparison(before, after).items()},
        "versions": version_changes(change_request),
        "gates": [
            (
                number,
                promotion_gate_reports(
                    prompt_id=change_request.prompt_id,
                    environment=change_request.environment.name,
                    version=number,
                ),
            )
            for number in change.gated_versions(before, after)
        ],
        "reviews": list(change_request.reviews.all()),
        "conflicts": [
            (pk, reverse("admin:releases_changerequest_change", args=[pk])) for pk in conflicts
        ],
        "moves": moves,
        "form": form,
        "can_review": state == State.OPEN and reviewer and not proposer,
        "can_apply": state == State.APPROVED and (reviewer or proposer),
        "can_withdraw": live and proposer,
        "release_link": release_url(release.pk) if release else None,
        "planned_steps": [
            (step.at.astimezone(UTC), change_text(step.change))
            for step in change_request_planned_steps(change_request)
        ],
        "schedule_link": _schedule_link(change_request),
        "event_note": format_html(
            "release event revision {}", change_request.release_event.revision
        )
        if change_request.release_event
        else "",
    }
    return TemplateResponse(request, TEMPLATE, context)


def _schedule_link(change_request: ChangeRequest) -> str | None:
    """The release page, where the schedule a proposed schedule made is shown."""
    if change_request.schedule_id is None:
        return None
    release = Release.objects.filter(
        prompt_id=change_request.prompt_id, environment_id=change_request.environment_id
    ).first()
    return release_url(release.pk) if release is not None else None
