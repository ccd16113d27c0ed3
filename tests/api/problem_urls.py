"""A test-only URLconf: the real API plus views that fail in the ways a real one might, so the
exception handler can be tested end to end (tests/api/test_problems.py)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import include, path
from rest_framework.exceptions import PermissionDenied as DrfPermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.models import Scope
from api.permissions import HasScope
from registry.errors import DraftExists
from registry.services import prompt_create

HALF_DONE = "support.half-done"


class CreateThenFailApi(APIView):
    """Writes, then fails with a domain error: the write must not outlive the error."""

    permission_classes = [HasScope(Scope.PROMPTS_WRITE)]

    def post(self, request: Request) -> Response:
        prompt_create(key=HALF_DONE, actor=request.user.actor)
        raise DraftExists(7)


class RaiseApi(APIView):
    permission_classes = [HasScope(Scope.PROMPTS_READ)]
    errors = {
        "permission-denied": PermissionDenied("Only the owner may do that."),
        "validation": ValidationError(["First thing wrong.", "Second thing wrong."]),
        "not-found": Http404("gone"),
        "drf-permission-denied": DrfPermissionDenied("Not this one."),
    }

    def get(self, request: Request, error: str) -> Response:
        raise self.errors[error]


urlpatterns = [
    path("api/v1/", include("api.urls")),
    path("api/v1/test/create-then-fail", CreateThenFailApi.as_view()),
    path("api/v1/test/raise/<slug:error>", RaiseApi.as_view()),
]

handler404 = "api.problems.not_found_view"
handler500 = "api.problems.server_error_view"
