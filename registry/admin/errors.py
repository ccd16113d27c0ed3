"""A change form whose save calls a service: the service's refusal becomes a message on the form.

The form checks what the service checks, so this is a race (the same key created meanwhile) or a
rule only the service knows; the admin's transaction was rolled back, nothing was saved.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from registry.errors import ProblemsError, RegistryError


def error_text(exc: RegistryError, *, subject: str = "") -> str:
    """A service's refusal as one message: its sentence, then each problem's detail not said
    already, after ``subject`` ("support.refund-reply @ staging: ...") unless the sentence
    begins with it. A message never says the same words twice."""
    lines = [exc.message]
    if isinstance(exc, ProblemsError):
        lines += [p.detail for p in exc.problems if p.detail not in lines]
    text = " ".join(lines)
    if subject and not text.casefold().startswith(subject.casefold()):
        text = f"{subject}: {text}"
    return text


def with_subject(subject: str, text: str) -> str:
    """``subject: text`` ending with one full stop, not two."""
    return f"{subject}: {text.rstrip('.')}."


class ServiceErrorsAsMessages:
    """Mix into a ``ModelAdmin`` before ``admin.ModelAdmin``."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except RegistryError as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
