"""Small pieces of HTML the admin pages share, built with ``format_html`` (escaped by default)."""

from __future__ import annotations

from collections.abc import Iterable

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from registry.models import PromptVersion
from registry.selectors import TranslationState, TranslationStatus

# Colours read at a glance in both admin themes: the source, a current translation, a stale one.
BADGE_COLOURS = {
    TranslationState.SOURCE: "#417690",
    TranslationState.CURRENT: "#2e7d32",
    TranslationState.STALE: "#c05600",
}
BADGE_STYLE = (
    "display:inline-block;padding:1px 7px;margin:0 3px 2px 0;border-radius:9px;"
    "color:#fff;font-size:0.75rem;white-space:nowrap;background:{}"
)


def translation_badges(
    statuses: Iterable[TranslationStatus], *, compact: bool = False
) -> SafeString:
    """One badge per locale: ``fr · stale``; ``compact`` shows the locale alone (the colour and
    the title tell the state) for the changelist column."""
    return format_html_join(
        "",
        '<span class="translation-{}" title="{}" style="' + BADGE_STYLE + '">{}</span>',
        (
            (
                s.state,
                f"{s.locale}: {s.state}",
                BADGE_COLOURS[s.state],
                s.locale if compact else f"{s.locale} · {s.state}",
            )
            for s in statuses
        ),
    ) or format_html("{}", "—")


def status_badge(status: str, label: str) -> SafeString:
    colour = "#2e7d32" if status == PromptVersion.Status.COMMITTED else "#8a6d00"
    return format_html('<span style="' + BADGE_STYLE + '">{}</span>', colour, label)


def version_url(version_id: int) -> str:
    return reverse("admin:registry_promptversion_change", args=[version_id])


def version_by_number_url(prompt_id: int, number: int) -> str:
    """A version's page by prompt and number, for links that know numbers rather than ids."""
    return reverse("admin:registry_promptversion_by_number", args=[prompt_id, number])
