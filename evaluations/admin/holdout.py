"""What the admin shows of a holdout case: authors see that it exists and its flags, never its
variables or expectation (shared by the dataset page and the case pages)."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet, Value
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..models import Case

FROZEN = "frozen: a holdout case, shown to release managers only"


def with_frozen_holdout(request: HttpRequest, cases: QuerySet[Case]) -> QuerySet[Case]:
    """Marks the holdout cases this user may not read (``frozen``). A holdout is what a prompt was
    never tuned on: authors see that it exists and how it is flagged, not its variables or
    expectation. Release managers (who run the gates) and superusers see it whole. An
    annotation, not state on the admin: ModelAdmins are shared between requests."""
    may_read = request.user.has_perm("releases.deploy_release")
    return cases.annotate(
        frozen=ExpressionWrapper(Q(holdout=True) & Value(not may_read), BooleanField())
    )


def frozen_or(obj: Case, text: SafeString) -> SafeString:
    return format_html("<em>{}</em>", FROZEN) if getattr(obj, "frozen", obj.holdout) else text
