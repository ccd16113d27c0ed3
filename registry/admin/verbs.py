"""The verbs on a version: commit (a confirmation page, and the changelist action), new draft
from this version, discard. Each checks its permission, calls one service, and reports through
``message_user`` (STYLE R2, R13); changes are POST-only, under the admin's CSRF protection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from registry.actors import Actor
from registry.errors import (
    ContentInvalid,
    DraftConflict,
    DraftExists,
    RegistryError,
    VersionImmutable,
)
from registry.models import PromptVersion
from registry.selectors import TranslationState, version_check, version_translation_status
from registry.services import version_branch, version_commit, version_draft_discard

from .display import translation_badges, version_by_number_url, version_url
from .errors import error_text
from .pages import TEMPLATES, page_context, version_or_404

if TYPE_CHECKING:
    from .versions import PromptVersionAdmin


def draft_exists_text(exc: DraftExists, prompt_id: int) -> str:
    return format_html(
        '{} <a href="{}">Open version {}</a>.',
        exc.message,
        version_by_number_url(prompt_id, exc.draft_number),
        exc.draft_number,
    )


def refused(
    model_admin: PromptVersionAdmin,
    request: HttpRequest,
    exc: RegistryError,
    *,
    back: str,
    prompt_id: int | None = None,
) -> HttpResponse:
    """A service said no (usually a race with another writer): say why, and go ``back``."""
    if isinstance(exc, DraftExists) and prompt_id is not None:
        text = draft_exists_text(exc, prompt_id)
    else:
        text = error_text(exc)
    model_admin.message_user(request, text, messages.ERROR)
    return HttpResponseRedirect(back)


def by_number(
    model_admin: PromptVersionAdmin, request: HttpRequest, prompt_id: int, number: int
) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    found = (
        PromptVersion.objects.filter(prompt_id=prompt_id, number=number)
        .values_list("pk", flat=True)
        .first()
    )
    if found is None:
        raise Http404("No such version.")
    return HttpResponseRedirect(version_url(found))


# --- commit -----------------------------------------------------------------------------------


class CommitForm(forms.Form):
    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="What changed and why, like a commit message.",
    )
    # The content the author reviewed on this page; a draft saved meanwhile is not committed.
    content_hash = forms.CharField(widget=forms.HiddenInput)


def commit(model_admin: PromptVersionAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """GET: the confirmation page (message, warnings, stale translations); POST: commit."""
    version = version_or_404(model_admin, request, object_id)
    if not model_admin.has_commit_permission(request):
        raise PermissionDenied
    back = version_url(version.pk)
    if version.is_committed:
        model_admin.message_user(request, VersionImmutable.message, messages.WARNING)
        return HttpResponseRedirect(back)
    initial = {"message": version.message, "content_hash": version.edit_tag}
    form = CommitForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            version_commit(
                version=version,
                actor=Actor.for_user(request.user),
                message=form.cleaned_data["message"],
                expected_tag=form.cleaned_data["content_hash"],
            )
        except ContentInvalid as exc:
            for problem in exc.problems:
                form.add_error("message" if problem.pointer == "/message" else None, problem.detail)
        except DraftConflict:
            # Show the page again with the current content; the next click commits that.
            version.refresh_from_db()
            data = request.POST.copy()
            data["content_hash"] = version.edit_tag
            form = CommitForm(data, initial=initial)
            form.is_valid()
            form.add_error(
                None,
                "The draft was saved again after you opened this page; review "
                "it below and commit again.",
            )
        except VersionImmutable as exc:
            return refused(model_admin, request, exc, back=back)
        else:
            model_admin.message_user(request, f"Committed {version}.", messages.SUCCESS)
            return HttpResponseRedirect(back)
    statuses = version_translation_status(version)
    context = page_context(
        model_admin,
        request,
        version,
        "Commit version",
        form=form,
        checks=version_check(version),
        badges=translation_badges(statuses),
        stale=[s.locale for s in statuses if s.state is TranslationState.STALE],
    )
    return TemplateResponse(request, f"{TEMPLATES}/commit.html", context)


def branch(model_admin: PromptVersionAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """New draft from this version (POST only): open the draft, then go and edit it."""
    version = version_or_404(model_admin, request, object_id)
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    try:
        draft = version_branch(source=version, actor=Actor.for_user(request.user))
    except DraftExists as exc:
        model_admin.message_user(
            request, draft_exists_text(exc, version.prompt_id), messages.WARNING
        )
        return HttpResponseRedirect(version_url(version.pk))
    except RegistryError as exc:
        return refused(model_admin, request, exc, back=version_url(version.pk))
    model_admin.message_user(
        request, f"Opened {draft} from version {version.number}.", messages.SUCCESS
    )
    return HttpResponseRedirect(version_url(draft.pk))


def discard(model_admin: PromptVersionAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """GET: "discard this draft?"; POST: discard it (its number is reused by the next draft)."""
    version = version_or_404(model_admin, request, object_id)
    if not model_admin.has_discard_permission(request):
        raise PermissionDenied
    if request.method == "POST":
        try:
            version_draft_discard(version=version, actor=Actor.for_user(request.user))
        except RegistryError as exc:
            return refused(model_admin, request, exc, back=version_url(version.pk))
        model_admin.message_user(request, f"Discarded the draft {version}.", messages.SUCCESS)
        changelist = reverse("admin:registry_promptversion_changelist")
        return HttpResponseRedirect(f"{changelist}?prompt__id__exact={version.prompt_id}")
    if version.is_committed:
        model_admin.message_user(request, VersionImmutable.message, messages.WARNING)
        return HttpResponseRedirect(version_url(version.pk))
    context = page_context(model_admin, request, version, "Discard draft")
    return TemplateResponse(request, f"{TEMPLATES}/discard.html", context)


class BulkCommitForm(forms.Form):
    message = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Used for the drafts that have no message of their own.",
    )


def commit_selected(
    model_admin: PromptVersionAdmin, request: HttpRequest, queryset: QuerySet[PromptVersion]
) -> HttpResponse | None:
    """The changelist action: a confirmation page, then one ``version_commit`` per draft."""
    drafts = [v for v in queryset.select_related("prompt") if not v.is_committed]
    if not drafts:
        model_admin.message_user(
            request, "None of the selected versions is a draft.", messages.WARNING
        )
        return None
    form = BulkCommitForm(request.POST if "post" in request.POST else None)
    if "post" in request.POST and form.is_valid():
        actor = Actor.for_user(request.user)
        committed, failed = [], []
        for draft in drafts:
            message = draft.message.strip() or form.cleaned_data["message"].strip() or None
            try:
                version_commit(version=draft, actor=actor, message=message)
            except RegistryError as exc:
                failed.append(error_text(exc, subject=str(draft)))
            else:
                committed.append(str(draft))
        if committed:
            model_admin.message_user(
                request, f"Committed {', '.join(committed)}.", messages.SUCCESS
            )
        for failure in failed:
            model_admin.message_user(request, f"Not committed: {failure}", messages.ERROR)
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Commit drafts",
        "drafts": drafts,
        "skipped": queryset.count() - len(drafts),
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action": request.POST.get("action", "commit_selected"),
    }
    return TemplateResponse(request, f"{TEMPLATES}/commit_selected.html", context)
