"""Small pieces of HTML the admin pages share, built with ``format_html`` (escaped by default)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from registry.guardrails import INPUT, INPUT_CHECKS, OUTPUT, OUTPUT_CHECKS
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


def _guardrail_checks(policy: Any) -> list[tuple[str, str, str, str]]:
    """(stage, check, action, its other settings) of each check a policy names, as written;
    anything that is not a check object is skipped (a committed policy was checked at commit,
    an environment's floor when saved)."""
    if not isinstance(policy, Mapping):
        return []
    found = []
    for stage, known in ((INPUT, INPUT_CHECKS), (OUTPUT, OUTPUT_CHECKS)):
        checks = policy.get(stage)
        if not isinstance(checks, Mapping):
            continue
        # In the order registry.guardrails lists them: a stored policy's keys come back in the
        # database's order (PostgreSQL's jsonb sorts them), not the author's.
        order = {name: i for i, name in enumerate(known)}
        for name, spec in sorted(checks.items(), key=lambda item: order.get(item[0], len(order))):
            if not isinstance(spec, Mapping):
                continue
            settings = "; ".join(
                f"{field}: {_setting(value)}" for field, value in spec.items() if field != "action"
            )
            found.append((stage, str(name), str(spec.get("action", "")), settings))
    return found


def _setting(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def guardrails_summary(policy: Any) -> str:
    """A policy on one line: ``input injection: refuse, output pii: redact``; "" for none."""
    return ", ".join(
        f"{stage} {name}: {action}" for stage, name, action, _ in _guardrail_checks(policy)
    )


def guardrails_policy_table(policy: Any) -> SafeString | str:
    """A guardrail policy to read (a committed version's page): one row per check, then the
    fallback text; every value escaped."""
    checks = _guardrail_checks(policy)
    if not checks:
        return "—"
    fallback = policy.get("fallback") if isinstance(policy, Mapping) else None
    return format_html(
        '<table class="registry-guardrails"><thead><tr><th scope="col">Stage</th>'
        '<th scope="col">Check</th><th scope="col">Action</th><th scope="col">Settings</th>'
        "</tr></thead><tbody>{}</tbody></table>{}",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", checks),
        format_html("<p>Fallback text: {}</p>", fallback) if isinstance(fallback, str) else "",
    )
