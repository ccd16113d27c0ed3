"""Scheduled changes in the admin (decision 0049): the page that schedules a release's changes (a
deploy at a time, a canary's ramp), the cancel button, and what the board and the release page
say about a schedule ("25 % at 2026-03-02 14:00 UTC, then 50 % at 18:00, then promote at 19:00").

Both pages call the one service each (``schedule_create``, ``schedule_cancel``) and need the
release managers' deploy permission; any release manager may cancel any schedule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from registry.actors import Actor
from registry.errors import ProblemsError, RegistryError
from releases.models import Schedule
from releases.selectors import schedule_shown
from releases.services import schedule_cancel, schedule_create
from releases.services.change_requests import change_request_propose
from releases.services.schedule import SCHEDULABLE, PlannedStep, planned_step, steps_text

from . import views

if TYPE_CHECKING:
    from .board import ReleaseAdmin

ROWS = 6  # steps offered on the page: a ramp of four and its promotion, with one to spare
TIME_FORMAT = "%Y-%m-%d %H:%M"


# --- the page that schedules --------------------------------------------------------------------


class StepForm(forms.Form):
    at = forms.DateTimeField(
        required=False,
        input_formats=[TIME_FORMAT],
        widget=forms.TextInput(attrs={"placeholder": "2026-03-02 02:00", "size": 16}),
        help_text="UTC",
    )
    action = forms.ChoiceField(
        required=False,
        choices=[("", "—")] + [(str(a), str(a).replace("_", " ")) for a in SCHEDULABLE],
    )
    version = forms.IntegerField(required=False, min_value=1, widget=forms.NumberInput({"size": 4}))
    percent = forms.DecimalField(
        required=False, min_value=0, max_value=100, decimal_places=2, widget=forms.NumberInput()
    )

    def filled(self) -> bool:
        return bool(self.cleaned_data.get("action") or self.cleaned_data.get("at"))


StepFormSet = forms.formset_factory(StepForm, extra=ROWS, max_num=ROWS)


class ScheduleForm(forms.Form):
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "class": "vLargeTextField"}),
        help_text="Why: each step's release event carries it, with the schedule's name.",
    )
    revision = forms.IntegerField(widget=forms.HiddenInput)


def _as_utc(value: datetime) -> datetime:
    # The page speaks UTC whatever the server's zone: a time typed is a time in UTC.
    return value.replace(tzinfo=UTC)


def _steps(formset: Any) -> tuple[list[PlannedStep], list[str]]:
    steps, errors = [], []
    for index, form in enumerate(formset):
        if not form.filled():
            continue
        data = form.cleaned_data
        if not data.get("at") or not data.get("action"):
            errors.append(f"Step {index + 1}: give both a time and a change.")
            continue
        try:
            steps.append(
                planned_step(
                    at=_as_utc(data["at"].replace(tzinfo=None)),
                    action=data["action"],
                    version=data.get("version"),
                    percent=data.get("percent"),
                )
            )
        except ProblemsError as exc:
            errors += [f"Step {index + 1}: {p.detail}" for p in exc.problems]
    if not steps and not errors:
        errors.append("Fill in at least one step: a time and a change.")
    return steps, errors


def schedule_page(model_admin: ReleaseAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """GET: the form (a deploy at a time, or a canary's ramp, a row per step); POST: schedule,
    or, in an environment that requires review, propose the schedule as a change request."""
    release = model_admin.get_object(request, unquote(object_id))
    if release is None:
        raise Http404("No such release.")
    if not model_admin.has_deploy_permission(request, release):
        raise PermissionDenied(model_admin.rights(request, release.environment).deploy_refusal)
    posted = request.method == "POST"
    form = ScheduleForm(request.POST if posted else None, initial={"revision": release.revision})
    formset = StepFormSet(request.POST if posted else None, prefix="step")
    errors: list[str] = []
    if posted and form.is_valid() and formset.is_valid():
        steps, errors = _steps(formset)
        if not errors and release.environment.requires_review:
            # The schedule itself is what is reviewed (decision 0048): propose it.
            try:
                proposed = change_request_propose(
                    prompt=release.prompt,
                    environment=release.environment,
                    steps=steps,
                    actor=Actor.for_user(request.user),
                    reason=form.cleaned_data["reason"],
                    expected_revision=form.cleaned_data["revision"],
                )
            except ProblemsError as exc:
                errors += [exc.message] + [p.detail for p in exc.problems]
            except RegistryError as exc:
                errors.append(exc.message)
            else:
                model_admin.message_user(
                    request,
                    f"Proposed as change request #{proposed.pk}: the schedule is made once it "
                    "is approved and applied.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:releases_changerequest_change", args=[proposed.pk])
                )
        elif not errors:
            try:
                schedule = schedule_create(
                    prompt=release.prompt,
                    environment=release.environment,
                    steps=steps,
                    actor=Actor.for_user(request.user),
                    reason=form.cleaned_data["reason"],
                    expected_revision=form.cleaned_data["revision"],
                )
            except ProblemsError as exc:
                errors += [exc.message] + [p.detail for p in exc.problems]
            except RegistryError as exc:
                errors.append(exc.message)
            else:
                model_admin.message_user(
                    request,
                    f"Scheduled (#{schedule.pk}): {steps_text(list(schedule.steps.all()))}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(views.release_url(release.pk))
    context = {
        **views.page_context(model_admin, request, "Schedule changes", views.slot_of(release)),
        "form": form,
        "formset": formset,
        "errors": errors,
        "now": datetime.now(UTC).strftime(TIME_FORMAT),
        "proposes": release.environment.requires_review,
    }
    return TemplateResponse(request, f"{views.TEMPLATES}/schedule.html", context)


class CancelForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000)


def schedule_cancel_page(
    model_admin: ReleaseAdmin, request: HttpRequest, object_id: str
) -> HttpResponse:
    """POST only (the release page's button): cancels the release's active schedule."""
    release = model_admin.get_object(request, unquote(object_id))
    if release is None:
        raise Http404("No such release.")
    if not model_admin.has_rollback_permission(request, release):
        raise PermissionDenied(model_admin.rights(request, release.environment).rollback_refusal)
    if request.method != "POST":
        return HttpResponseRedirect(views.release_url(release.pk))
    form = CancelForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        schedule = schedule_shown(prompt=release.prompt, environment=release.environment)
        if schedule.state != Schedule.State.ACTIVE:
            raise RegistryError(f"Schedule #{schedule.pk} has ended already.")
        schedule_cancel(schedule_id=schedule.pk, actor=Actor.for_user(request.user), reason=reason)
    except RegistryError as exc:
        model_admin.message_user(request, exc.message, messages.ERROR)
    else:
        model_admin.message_user(request, f"Schedule #{schedule.pk} cancelled.", messages.SUCCESS)
    return HttpResponseRedirect(views.release_url(release.pk))
