"""How the admin marks a case's flags (holdout, must pass): a neutral tag, never an icon that
reads as a verdict. Shared by the cases' pages (``evaluations.admin.datasets``) and the eval
results' (``evaluations.admin.evalruns``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString


def case_mark(flag: bool, label: str) -> SafeString | str:
    """A case's flag (holdout, must pass) as a neutral tag, or nothing: it says what the case is,
    not how it did. Django's boolean icons draw "no" as a red cross, which reads as a failure."""
    if not flag:
        return ""
    return format_html(
        '<span class="case-mark" style="padding:0 6px;border:1px solid var(--hairline-color);'
        'border-radius:8px;background:var(--darkened-bg);white-space:nowrap">{}</span>',
        label,
    )


class CaseMarks:
    """The holdout and must-pass columns of a case (or a result, which copies them)."""

    @admin.display(description="Holdout", ordering="holdout")
    def holdout_mark(self, obj: Any) -> SafeString | str:
        return case_mark(obj.holdout, "holdout")

    @admin.display(description="Must pass", ordering="must_pass")
    def must_pass_mark(self, obj: Any) -> SafeString | str:
        return case_mark(obj.must_pass, "must pass")
