"""How calls, shadow runs and the shadow report read in the admin: numbers as text, outputs as
escaped blocks, the report as rows of cells. Everything that renders a stored value goes through
``format_html`` (which escapes) or returns plain text for the template to escape: outputs and
inputs are untrusted, and nothing here marks them safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from registry.guardrails import ACTIONS
from registry.templatetags.registry_display import (
    EMPTY,
    decimal,
    money,
    ms,
    percent,
    tokens_in_out,
)

from .models import ShadowRun
from .selectors import (
    LATENCY_SAMPLE,
    MIN_RUNS,
    Disagreement,
    ShadowReport,
    Side,
    SideStats,
    Verdict,
)

GUARDRAIL_ORDER = {action: i for i, action in enumerate(ACTIONS)}  # refuse first, flag last


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def text_block(value: str) -> SafeString:
    if not value:
        return format_html('<span class="runs-quiet">{}</span>', "(empty)")
    return format_html('<pre class="runs-text">{}</pre>', value)


def api_key_shown(key_id: int | None, label: str) -> str:
    """An API key as a call keeps it: its name then, and its id (names are not unique)."""
    return EMPTY if key_id is None else f"{label} (key #{key_id})"


def diff_item(item: Any) -> str:
    """One structure difference as a line: a path as it is, anything else as compact JSON."""
    if isinstance(item, str):
        return item
    return json.dumps(item, ensure_ascii=False, sort_keys=True, default=str)


def attempts_table(attempts: Any) -> SafeString | str:
    """The attempts list (provider, model, outcome, detail, latency per model call) as a table."""
    if not attempts:
        return EMPTY
    rows = []
    for attempt in attempts if isinstance(attempts, list) else [attempts]:
        if isinstance(attempt, dict):
            latency = attempt.get("latency_ms")
            rows.append(
                (
                    f"{attempt.get('provider', '')}/{attempt.get('model', '')}",
                    attempt.get("outcome", ""),
                    attempt.get("detail", ""),
                    ms(latency) if isinstance(latency, int | float) else EMPTY,
                )
            )
        else:
            rows.append((diff_item(attempt), "", "", ""))
    return format_html(
        '<table class="runs-attempts"><thead><tr><th scope="col">Model</th>'
        '<th scope="col">Outcome</th><th scope="col">Detail</th><th scope="col">Latency</th>'
        "</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )


GUARDRAIL_FIELDS = ("stage", "check", "action", "source", "detail")
GUARDRAIL_SOURCES = {"version": "the version's", "environment": "the environment's floor"}


def guardrails_table(record: Any) -> SafeString | str:
    """The guardrail checks that fired on a call (``Call.guardrails``), one row each: stage,
    check, action, whose policy (the version's or the environment's floor) and what it found."""
    if not record:
        return "No check fired."
    rows = [
        (
            *(str(entry.get(name, "")) for name in GUARDRAIL_FIELDS[:3]),
            GUARDRAIL_SOURCES.get(str(entry.get("source", "")), str(entry.get("source", ""))),
            str(entry.get("detail", "")),
        )
        if isinstance(entry, dict)
        else ("", "", "", "", diff_item(entry))
        for entry in (record if isinstance(record, list) else [record])
    ]
    return format_html(
        '<table class="runs-guardrails"><thead><tr><th scope="col">Stage</th>'
        '<th scope="col">Check</th><th scope="col">Action</th><th scope="col">Policy</th>'
        '<th scope="col">Found</th></tr></thead><tbody>{}</tbody></table>',
        format_html_join(
            "",
            '<tr><td>{}</td><td>{}</td><td><span class="runs-guardrail runs-guardrail-{}">{}'
            "</span></td><td>{}</td><td>{}</td></tr>",
            (
                (stage, check, action, action, source, detail)
                for stage, check, action, source, detail in rows
            ),
        ),
    )


def guardrails_marker(record: Any) -> SafeString | str:
    """A call list's note of the checks that fired: the actions taken, strongest first, with
    every check named in the tooltip; nothing when none fired."""
    entries = [e for e in record if isinstance(e, dict)] if isinstance(record, list) else []
    if not entries:
        return ""
    actions = sorted(
        {str(e.get("action", "")) for e in entries},
        key=lambda a: GUARDRAIL_ORDER.get(a, len(GUARDRAIL_ORDER)),
    )
    named = "; ".join(
        f"{e.get('stage', '')} {e.get('check', '')}: {e.get('action', '')}" for e in entries
    )
    return format_html(
        '<br><small class="runs-guardrail-mark" title="{}">guardrails: {}</small>',
        named,
        ", ".join(actions),
    )


def call_list_url(**params: str | int) -> str:
    return f"{reverse('admin:runs_call_changelist')}?{urlencode(params)}"


def report_url(release_id: int, **params: str) -> str:
    url = reverse("admin:runs_shadowrun_report", args=[release_id])
    return f"{url}?{urlencode(params)}" if params else url


def call_url(call_id: int) -> str:
    return reverse("admin:runs_call_change", args=[call_id])


# --- the report's presentation (pure: report in, strings out) -------------------------------------


def column_title(side: SideStats) -> str:
    versions = ", ".join(f"v{n}" for n in side.versions)
    if side.side == Side.LIVE:
        return f"Live ({versions})" if versions else "Live"
    if side.side == Side.NOISE:
        return f"Noise floor ({versions} again)" if versions else "Noise floor"
    return f"Candidate {versions}"


def agreement_text(side: SideStats) -> str:
    if side.side == Side.LIVE:
        return "the reference"
    if side.agreement is None:
        return EMPTY
    return f"{percent(side.agreement)} ({side.agreed} of {side.finished})"


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    cells: list[str]
    help: str = ""


def report_rows(report: ShadowReport) -> list[Row]:
    """The side-by-side table: one row per measure, one cell per side (live, candidates, noise)."""
    sides = report.sides

    def row(label: str, cell: Callable[[SideStats], str], help: str = "") -> Row:
        return Row(label, [cell(side) for side in sides], help)

    def runs_only(value: Callable[[SideStats], int]) -> Callable[[SideStats], str]:
        return lambda side: EMPTY if side.side == Side.LIVE else f"{value(side):,}"

    return [
        row("Runs", lambda s: f"{s.runs:,}", "Live: the calls that were shadowed."),
        row("Answered", lambda s: f"{s.ok:,}"),
        row("Errors", lambda s: f"{s.errors:,}"),
        row("Skipped (over budget)", runs_only(lambda s: s.over_budget)),
        row("Pending", runs_only(lambda s: s.pending)),
        row(
            "Agreement",
            agreement_text,
            "Share of finished runs (answered or failed) whose answer matched live exactly.",
        ),
        row(
            "Mean similarity",
            lambda s: decimal(s.mean_similarity, 3),
            "0 (unlike) to 1 (identical), over answered runs.",
        ),
        row("Latency p50", lambda s: ms(s.latency_p50)),
        row(
            "Latency p95",
            lambda s: ms(s.latency_p95),
            f"Over the latest answered runs (at most {LATENCY_SAMPLE:,} per side).",
        ),
        row("Mean cost per run", lambda s: money(s.mean_cost)),
        row("Total cost", lambda s: money(s.total_cost)),
        row("Tokens", lambda s: tokens_in_out(s.input_tokens, s.output_tokens)),
    ]


VERDICT_CLASSES = {
    Verdict.DIFFERS: "runs-differs",
    Verdict.WITHIN: "runs-within",
    Verdict.NOT_ENOUGH_DATA: "runs-unknown",
}


def verdict_cell(side: SideStats) -> tuple[str, str, str] | None:
    """(verdict, css class, detail) for a candidate; None for live and the noise floor."""
    if side.verdict is None:
        return None
    detail = ""
    if side.z is not None:
        detail = f"z = {side.z:.2f}"
    elif side.verdict == Verdict.NOT_ENOUGH_DATA:
        detail = f"needs {MIN_RUNS} finished runs here and in the noise floor"
    return side.verdict.value, VERDICT_CLASSES[side.verdict], detail


def pair_choices(report: ShadowReport) -> list[tuple[str, str]]:
    """Whose disagreements to read: every candidate, one candidate, or the noise floor."""
    choices = [("candidates", "All candidates")]
    choices += [(f"v{n}", f"Candidate v{n}") for c in report.candidates for n in c.versions]
    choices.append(("noise", "Noise floor"))
    return choices


def parse_pairs(value: str) -> tuple[ShadowRun.Kind, int | None]:
    if value == "noise":
        return ShadowRun.Kind.NOISE, None
    if value.startswith("v") and value[1:].isdigit():
        return ShadowRun.Kind.CANDIDATE, int(value[1:])
    return ShadowRun.Kind.CANDIDATE, None


@dataclass(frozen=True, slots=True)
class PairView:
    pair: Disagreement
    call_url: str
    run_url: str
    inputs: str
    differences: list[str]
    when: datetime


def pair_view(pair: Disagreement) -> PairView:
    return PairView(
        pair=pair,
        call_url=call_url(pair.call_id),
        run_url=reverse("admin:runs_shadowrun_change", args=[pair.shadow_run_id]),
        inputs=pretty_json(pair.inputs) if pair.inputs else "",
        differences=[diff_item(item) for item in pair.structure_diff],
        when=pair.created_at,
    )
