"""The release admin's pages: one confirmation page for every verb, the release page with its
timeline, a prompt's history in every environment, and the bulk actions' confirmation.

Each page checks its own permission (``admin_view`` only checks that the user is staff), reads
through selectors, and changes nothing on GET. A POST calls one service with the revision the page
showed, so a change made meanwhile is refused and shown, never overwritten (STYLE R2, R3, R13).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

from registry.actors import Actor
from registry.admin.errors import error_text, with_subject
from registry.errors import ProblemsError, RegistryError
from registry.models import Prompt
from releases.errors import PromotionBlocked, ReleaseConflict, ReleaseNotFound
from releases.gates import GateReport, promotion_gate_reports
from releases.models import Release, ReleaseEvent, Schedule
from releases.notices import change_notices
from releases.rights import who_may_change
from releases.selectors import (
    environment_list,
    events_page,
    followed_snippet_events,
    prompt_release_history,
    release_get,
    release_history,
)
from releases.services import environment_order_refusal
from releases.state import ReleaseState, release_state

from .display import PARTS, Change, part_texts, state_changes, state_summary
from .scheduled import schedule_cancel_url, schedule_panel, schedule_url
from .traffic import sentences, traffic_between
from .verbs import (
    DEPLOY_A_PROMPT,
    RAMP_STEPS,
    VERBS,
    ConfirmForm,
    Inputs,
    Preview,
    Slot,
    Verb,
    recent_versions,
)

if TYPE_CHECKING:
    from .board import ReleaseAdmin

TEMPLATES = "admin/releases/release"
CONFLICT = (
    "Someone changed this release meanwhile: it is at revision {revision} now. Here is the new "
    "state and what your change would do to it; apply again if it is still what you want."
)


def verb_url(verb: str, release_id: int, **params: Any) -> str:
    url = reverse(f"admin:releases_release_{verb}", args=[release_id])
    return f"{url}?{urlencode(params)}" if params else url


def release_url(release_id: int) -> str:
    return reverse("admin:releases_release_change", args=[release_id])


def prompt_history_url(prompt_id: int) -> str:
    return reverse("admin:releases_release_prompt_history", args=[prompt_id])


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str
    primary: bool = False


def verb_links(
    release: Release, state: ReleaseState, *, deploy: bool, rollback: bool, compact: bool = False
) -> list[Link]:
    """The verbs that apply to the release as it is, as links to their confirmation pages;
    ``compact`` (the board's rows) keeps the canary and the way back, the release page has all.
    In an environment that requires review, a held verb's link says it proposes (on the board,
    the line above the table says it once: the rows' verbs must fit beside the release)."""
    pk, links = release.pk, []
    reviewed = release.environment.requires_review

    def link(label: str, verb: str, primary: bool = False, **params: Any) -> Link:
        if reviewed and VERBS[verb].change.held and not compact:
            label = f"Propose: {label}"
        return Link(label, verb_url(verb, pk, **params), primary=primary)

    if deploy and state.canary is not None:
        current = state.canary.weight / 100
        links += [
            link(f"{s} %", "canary_percent", percent=s)
            for s in RAMP_STEPS
            if s > current or (s < current and not compact)  # the board ramps up only
        ]
        links += [link("Promote", "canary_promote", primary=True), link("Abort", "canary_abort")]
    elif deploy:
        links.append(link("Deploy", "deploy"))
        if state.stable is not None:
            links.append(link("Start canary", "canary_start", primary=True))
    if deploy and state.stable is not None and not compact:
        links.append(
            link("Stop experiment", "experiment_stop")
            if state.experiment
            else link("Start experiment", "experiment_start")
        )
        if state.shadow:
            # Same page as starting: it opens with what runs, e.g. to change only the budget.
            links.append(link("Change shadows", "shadow_start"))
            links.append(link("Stop shadows", "shadow_stop"))
        else:
            links.append(link("Start shadows", "shadow_start"))
    if rollback and release.revision > 0:
        links.append(link("Roll back", "rollback"))
    return links


# --- the confirmation page ----------------------------------------------------------------------


def problems_text(exc: RegistryError, inputs: Inputs) -> list[str]:
    """A domain error as the page shows it: problems next to their field where there is one,
    and every failed gate of a refused promotion, so all of them are fixed (or overridden) at once."""
    if isinstance(exc, PromotionBlocked):
        return [f"{type(exc).message} Failed gates:"] + [
            f"{failed['detail']} (gate: {failed['gate']})" for failed in exc.failed
        ]
    lines = [exc.message]
    if isinstance(exc, ProblemsError):
        for problem in exc.problems:
            name = problem.pointer.strip("/").split("/")[0]
            if name in inputs.fields:
                inputs.add_error(name, problem.detail)
            else:
                lines.append(problem.detail)
    return lines


@dataclass(slots=True)
class Outcome:
    preview: Preview | None = None
    errors: list[str] = field(default_factory=list)


def preview(verb: Verb, slot: Slot, inputs: Inputs) -> Outcome:
    try:
        return Outcome(verb.preview(slot, inputs.cleaned_data))
    except RegistryError as exc:
        return Outcome(errors=problems_text(exc, inputs))


def slot_of(release: Release) -> Slot:
    return Slot(release.prompt, release.environment, release)


def reloaded(slot: Slot) -> Slot:
    try:
        release = release_get(prompt=slot.prompt, environment=slot.environment)
    except ReleaseNotFound:
        release = None
    return Slot(slot.prompt, slot.environment, release)


def bound_data(verb: Verb, request: HttpRequest, slot: Slot | None) -> QueryDict:
    """POST as sent; on GET the verb's proposal, overridden by the link's parameters (the ramp
    buttons send ``?percent=25``), so the first view of the page already shows a target."""
    if request.method == "POST":
        return request.POST
    data = QueryDict(mutable=True)
    for name, value in verb.initial(slot).items():
        data[name] = value
    for name in request.GET:
        data.setlist(name, request.GET.getlist(name))
    return data


OVERRIDE_PERMISSION = "releases.override_gates"
# Where a gate run is started from this page: the evaluations admin registers the URL (releases
# does not import evaluations); without it the gates are listed with no button.
GATE_RUN_URL = "admin:evaluations_evalrun_gate"


@dataclass(frozen=True, slots=True)
class GateVersion:
    """One version the change puts in front of traffic, and what stands between it and release."""

    number: int
    gates: list[GateReport]
    order_refusal: str  # the environment order's refusal, or ''


@dataclass(frozen=True, slots=True)
class GatePanel:
    environment: str
    versions: list[GateVersion]
    start_url: str  # '' when gate runs cannot be started from here
    back_url: str  # this page with the same inputs: where a gate run comes back to

    @property
    def checked(self) -> bool:
        return any(v.gates or v.order_refusal for v in self.versions)

    @property
    def startable(self) -> bool:
        return bool(self.start_url) and any(g.startable for v in self.versions for g in v.gates)


def back_url(request: HttpRequest, inputs: Inputs) -> str:
    """This confirmation page with the inputs it shows, as a link opens it (GET)."""
    data = inputs.data
    params = [(name, value) for name in inputs.fields for value in data.getlist(name)]
    return f"{request.path}?{urlencode(params)}" if params else request.path


def gate_panel(
    request: HttpRequest, slot: Slot, preview: Preview, inputs: Inputs
) -> GatePanel | None:
    """The promotion gates the change would meet, per version it puts in front of traffic, with
    their state now: shown before the click, so a refusal is never a surprise."""
    numbers = preview.change.gated_versions(slot.state, preview.state)
    if not numbers:
        return None
    versions = [
        GateVersion(
            number,
            promotion_gate_reports(
                prompt_id=slot.prompt.pk, environment=slot.environment.name, version=number
            ),
            environment_order_refusal(
                prompt=slot.prompt, environment=slot.environment, number=number
            ),
        )
        for number in numbers
    ]
    try:
        start_url = reverse(GATE_RUN_URL)
    except NoReverseMatch:
        start_url = ""
    return GatePanel(slot.environment.name, versions, start_url, back_url(request, inputs))


def change_page(
    model_admin: ReleaseAdmin, request: HttpRequest, verb: Verb, slot: Slot | None
) -> HttpResponse:
    """GET: the inputs, the state now and after, what traffic moves; POST: apply it.

    A change the promotion gates refuse shows every failed gate; a user who may override them
    is then offered "release anyway" (the service records the gates and the reason)."""
    if not model_admin.has_verb_permission(request, verb.permission):
        raise PermissionDenied
    # The environment's release rights (releases.rights): a user they leave out is told who may,
    # and nothing is previewed or applied. The service refuses too; this says it before a click.
    refusal = rights_refusal(model_admin, request, verb, slot)
    posted = request.method == "POST"
    can_override = verb.gated and request.user.has_perm(OVERRIDE_PERMISSION)
    if posted and "override_gates" in request.POST and not can_override:
        raise PermissionDenied("Overriding promotion gates needs the override_gates permission.")
    failed_gates: list[dict] = []
    data = bound_data(verb, request, slot)
    inputs = verb.inputs(data, slot=slot)
    if not posted and not inputs.complete():
        inputs = verb.inputs(slot=slot, initial=data.dict())  # to fill in; nothing to preview
    outcome = Outcome()
    if not refusal and inputs.is_valid():
        if slot is None:  # "Deploy a prompt": the page's own inputs say where
            prompt, environment = inputs.cleaned_data["prompt"], inputs.cleaned_data["environment"]
            slot = reloaded(Slot(prompt, environment, None))
            refusal = rights_refusal(model_admin, request, verb, slot)
        if not refusal:
            outcome = preview(verb, slot, inputs)
    if refusal:
        outcome = Outcome(errors=[refusal])
    confirm = ConfirmForm(
        request.POST if posted else None,
        # A gate run comes back with the reason typed before it (``?reason=``).
        initial={"revision": slot.revision if slot else 0, "reason": request.GET.get("reason", "")},
        reason_required=verb.reason_required,
        can_override=can_override,
    )
    if posted and slot is not None and outcome.preview is not None and confirm.is_valid():
        if verb.proposes(slot):
            return propose(model_admin, request, verb, slot, outcome, confirm, inputs)
        try:
            release = verb.apply(
                slot,
                outcome.preview,
                actor=Actor.for_user(request.user),
                reason=confirm.cleaned_data["reason"],
                expected_revision=confirm.cleaned_data["revision"],
                **confirm.service_options(),
            )
        except ReleaseConflict as exc:
            # Show the new state with the user's inputs and reason kept; the next POST carries
            # the new revision, so applying again is a decision made on what is there now.
            slot = reloaded(slot)
            outcome = preview(verb, slot, inputs)
            outcome.errors.insert(0, CONFLICT.format(revision=exc.current_revision))
            confirm = ConfirmForm(
                initial={
                    "revision": slot.revision,
                    "reason": confirm.cleaned_data["reason"],
                    **confirm.service_options(),
                },
                reason_required=verb.reason_required,
                can_override=can_override,
            )
        except PromotionBlocked as exc:
            failed_gates = list(exc.failed)
            outcome.errors += problems_text(exc, inputs)
        except RegistryError as exc:
            outcome.errors += problems_text(exc, inputs)
        else:
            summary = state_summary(release_state(release))
            model_admin.message_user(
                request,
                f"{ReleaseEvent.Action(verb.action).label}: {release} is now {summary} "
                f"(revision {release.revision}).",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(release_url(release.pk))
    context = {
        **page_context(model_admin, request, verb.title, slot),
        "verb": verb,
        "proposes": verb.proposes(slot),
        "inputs": inputs,
        # A release this user may not change offers no inputs; "Deploy a prompt" keeps them,
        # to pick another environment.
        "visible_inputs": []
        if refusal and slot is not None and slot.release is not None
        else [f for f in inputs if not f.is_hidden],
        "confirm": confirm,
        "errors": outcome.errors,
        "failed_gates": failed_gates,
        # Offered once the gates refused (or when it was ticked): never as a default.
        "offer_override": can_override and bool(failed_gates or confirm["override_gates"].value()),
        "preview": outcome.preview,
        "media": inputs.media,
        "versions": recent_versions(slot.prompt) if slot else [],
        "ramp": [(s, verb_url("canary_percent", slot.release.pk, percent=s)) for s in RAMP_STEPS]
        if verb.name == "canary_percent" and slot and slot.release and slot.state.canary
        else [],
    }
    if slot is not None and outcome.preview is not None:
        context.update(comparison(slot.state, outcome.preview.state))
        context["gate_panel"] = gate_panel(request, slot, outcome.preview, inputs)
        context["notices"] = change_notices(
            release_id=slot.release.pk if slot.release else None,
            before=slot.state,
            after=outcome.preview.state,
        )
    return TemplateResponse(
        request, f"{TEMPLATES}/confirm_change.html", context, status=403 if refusal else 200
    )


def rights_refusal(
    model_admin: ReleaseAdmin, request: HttpRequest, verb: Verb, slot: Slot | None
) -> str:
    """Why the user may not take ``verb`` in the slot's environment, or '' (also before the
    environment is known)."""
    if slot is None:
        return ""
    return model_admin.rights(request, slot.environment).refusal(verb.action)


def propose(
    model_admin: ReleaseAdmin,
    request: HttpRequest,
    verb: Verb,
    slot: Slot,
    outcome: Outcome,
    confirm: ConfirmForm,
    inputs: Inputs,
) -> HttpResponse:
    """In an environment that requires review, "yes" proposes the change: on to its request's
    page; a refusal (a stale revision, no reason...) shows on this page as an apply's would."""
    try:
        change_request = verb.propose(
            slot,
            outcome.preview,
            actor=Actor.for_user(request.user),
            reason=confirm.cleaned_data["reason"],
            expected_revision=confirm.cleaned_data["revision"],
            **confirm.service_options(),
        )
    except RegistryError as exc:
        model_admin.message_user(request, " ".join(problems_text(exc, inputs)), messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())
    model_admin.message_user(
        request,
        f"{slot.environment} requires review: proposed as change request #{change_request.pk}; "
        "it is applied once approved.",
        messages.SUCCESS,
    )
    return HttpResponseRedirect(
        reverse("admin:releases_changerequest_change", args=[change_request.pk])
    )


def comparison(before: ReleaseState, after: ReleaseState) -> dict[str, Any]:
    """The side-by-side table, the share per version, and what moves in words."""
    old, new = part_texts(before), part_texts(after)
    result, lines = sentences(before, after)
    return {
        "parts": [(part, old[part], new[part], old[part] != new[part]) for part in PARTS],
        "changes": state_changes(before, after),
        "traffic": result,
        "moves": lines,
    }


def page_context(
    model_admin: ReleaseAdmin, request: HttpRequest, title: str, slot: Slot | None
) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "subtitle": f"{slot.prompt} in {slot.environment}" if slot else None,
        "slot": slot,
        "release": slot.release if slot else None,
        "has_view_permission": True,
    }


def verb_page(
    model_admin: ReleaseAdmin, request: HttpRequest, object_id: str, verb: str
) -> HttpResponse:
    release = model_admin.get_object(request, unquote(object_id))
    if release is None:
        raise Http404("No such release.")
    return change_page(model_admin, request, VERBS[verb], slot_of(release))


def deploy_prompt(model_admin: ReleaseAdmin, request: HttpRequest) -> HttpResponse:
    return change_page(model_admin, request, DEPLOY_A_PROMPT, None)


# --- timelines --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    event: ReleaseEvent
    changes: list[Change]
    rollback_url: str | None


def event_rows(
    events: list[ReleaseEvent], *, can_rollback: Callable[[ReleaseEvent], bool]
) -> list[EventRow]:
    rows = []
    for event in events:
        changes = state_changes(
            ReleaseState.from_dict(event.before), ReleaseState.from_dict(event.after)
        )
        # A rollback is never the target of another (DESIGN.md): it is undone by rolling back
        # to before the change it restored.
        url = None
        if event.action != ReleaseEvent.Action.ROLLBACK and can_rollback(event):
            url = verb_url("rollback", event.release_id, to_event=event.pk)
        rows.append(EventRow(event, changes, url))
    return rows


def cursor(request: HttpRequest) -> int | None:
    value = request.GET.get("before", "")
    return int(value) if value.isdigit() else None


def release_page(model_admin: ReleaseAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """The release: its state, the traffic per version, the verbs, and its timeline."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    release = model_admin.get_object(request, unquote(object_id))
    if release is None:
        raise Http404("No such release.")
    state = release_state(release)
    events, older = events_page(
        release_history(release=release).select_related("restores"), before=cursor(request)
    )
    can_rollback = model_admin.has_rollback_permission(request, release)
    can_deploy = model_admin.has_deploy_permission(request, release)
    panel = schedule_panel(release, can_change=can_deploy)
    context = {
        **page_context(
            model_admin, request, f"{release.prompt} in {release.environment}", slot_of(release)
        ),
        "schedule": panel,
        # Scheduling is offered while no schedule is active (one at a time).
        "schedule_url": schedule_url(release.pk)
        if can_deploy and (panel is None or panel.schedule.state != Schedule.State.ACTIVE)
        else "",
        "schedule_cancel_url": schedule_cancel_url(release.pk),
        "releasers": who_may_change(release.environment),
        # Why no verb is offered, when none is: the permission missing, or who may.
        "refusal": model_admin.rights(request, release.environment).deploy_refusal,
        "subtitle": None,
        "parts": [(part, text) for part, text in part_texts(state).items()],
        "shares": traffic_between(state, state).rows(),
        "links": verb_links(release, state, deploy=can_deploy, rollback=can_rollback),
        "rows": event_rows(events, can_rollback=lambda event: can_rollback),
        "older": older,
        "paged": cursor(request) is not None,
        "history_url": prompt_history_url(release.prompt_id),
        "snippet_rows": event_rows(
            followed_snippet_events(release=release), can_rollback=lambda event: False
        ),
    }
    return TemplateResponse(request, f"{TEMPLATES}/timeline.html", context)


def prompt_history(model_admin: ReleaseAdmin, request: HttpRequest, prompt_id: int) -> HttpResponse:
    """A prompt's release history in every environment (or one, ``?environment=``)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    prompt = get_object_or_404(Prompt, pk=prompt_id)
    environments = list(environment_list())
    chosen = next((e for e in environments if e.name == request.GET.get("environment")), None)
    events = prompt_release_history(prompt=prompt)
    if chosen is not None:
        events = events.filter(release__environment=chosen)
    page, older = events_page(events, before=cursor(request))
    releases = {
        r.environment_id: r for r in model_admin.get_queryset(request).filter(prompt=prompt)
    }
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Release history of {prompt}",
        "prompt": prompt,
        "environments": [
            (
                e,
                releases.get(e.pk),
                state_summary(release_state(releases[e.pk]))
                if e.pk in releases
                else "never released",
            )
            for e in environments
        ],
        "chosen": chosen,
        # Each event's own environment says whether this user may roll it back.
        "rows": event_rows(
            page,
            can_rollback=lambda event: model_admin.has_rollback_permission(request, event.release),
        ),
        "older": older,
        "paged": cursor(request) is not None,
    }
    return TemplateResponse(request, f"{TEMPLATES}/timeline.html", context)


# --- bulk actions -------------------------------------------------------------------------------


class BulkForm(forms.Form):
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "class": "vLargeTextField"}),
        help_text="Why: it goes into each release's history with your name.",
    )


@dataclass(frozen=True, slots=True)
class BulkRow:
    slot: Slot
    preview: Preview | None
    skipped: str = ""
    changes: list[Change] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)


def bulk_rows(
    verb: Verb, releases: QuerySet[Release], refusal: Callable[[Release], str]
) -> list[BulkRow]:
    rows = []
    for release in releases:
        slot = slot_of(release)
        if refused := refusal(release):  # the environment's release rights leave the user out
            rows.append(BulkRow(slot, None, skipped=refused))
            continue
        try:
            target = verb.preview(slot, {})
        except RegistryError as exc:
            rows.append(BulkRow(slot, None, skipped=exc.message))
            continue
        _, moves = sentences(slot.state, target.state)
        rows.append(
            BulkRow(slot, target, changes=state_changes(slot.state, target.state), moves=moves)
        )
    return rows


def confirm_selected(
    model_admin: ReleaseAdmin, request: HttpRequest, queryset: QuerySet[Release], verb: Verb
) -> HttpResponse | None:
    """Like ``delete_selected``: list every release's target, then apply each on "yes", each
    with the revision its row showed. Returning None goes back to the board."""
    rows = bulk_rows(
        verb,
        queryset,
        lambda release: model_admin.rights(request, release.environment).refusal(verb.action),
    )
    form = BulkForm(request.POST if request.POST.get("post") else None)
    if request.POST.get("post") and form.is_valid():
        actor, done, failed = Actor.for_user(request.user), [], []
        for row in rows:
            shown = request.POST.get(f"revision-{row.slot.release.pk}", "")
            if row.preview is None or not shown.isdigit():
                continue
            try:
                release = verb.apply(
                    row.slot,
                    row.preview,
                    actor=actor,
                    reason=form.cleaned_data["reason"],
                    expected_revision=int(shown),
                )
            except ReleaseConflict:
                failed.append(f"{row.slot.release}: changed meanwhile, left as it is")
            except RegistryError as exc:
                failed.append(error_text(exc, subject=str(row.slot.release)))
            else:
                done.append(f"{release} (now {state_summary(release_state(release))})")
        if done:
            model_admin.message_user(request, f"{verb.title}: {'; '.join(done)}.", messages.SUCCESS)
        for failure in failed:
            model_admin.message_user(request, with_subject("Not changed", failure), messages.ERROR)
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"{verb.title}: selected releases",
        "verb": verb,
        "rows": rows,
        "applicable": sum(1 for r in rows if r.preview is not None),
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action": request.POST.get("action", ""),
    }
    return TemplateResponse(request, f"{TEMPLATES}/confirm_selected.html", context)
