"""A change form whose save calls a service: the service's refusal becomes a message on the form.

The form checks what the service checks, so this is a race (the same key created meanwhile) or a
rule only the service knows; the admin's transaction was rolled back, nothing was saved.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from registry.errors import ProblemsError, RegistryError


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
            details = [p.detail for p in exc.problems] if isinstance(exc, ProblemsError) else []
            self.message_user(request, " ".join([exc.message, *details]), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
