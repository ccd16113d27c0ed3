"""What calls' guardrail records say (``Call.guardrails``, decision 0052): reads only, for the admin.

- ``calls_with_guardrails`` narrows a call list to the calls on which a check fired: any check,
  or one of a stage and name, or one that took an action, or both.
- ``guardrail_counts`` counts, over a time window, the calls on which each check fired per
  prompt, stage, check and action: the admin's guardrails page.

The record is a JSON list of ``{stage, check, action, source, detail}`` (``runs.guardrails.
Triggered``). PostgreSQL answers "a check like this fired" with JSON containment (``@>``), which
matches one entry on all its fields at once. SQLite has no containment (Django refuses the
lookup there): the record's text is searched instead, as Django wrote it (``json.dumps``, the
keys in ``Triggered.as_dict``'s order: stage, check, action), for the fields asked as one piece
(``"check": "pii", "action": "redact"``). That is exact for what the admin asks (an action; a
stage and check; all three); a stage and an action without the check are two pieces, which two
entries may hold: close enough for the embedded default's database and a list filter.

Counting reads the records of at most ``GUARDRAIL_COUNT_SAMPLE`` calls, the newest first, and
says when the window held more: a bounded read whatever the traffic, as the calls search is
(``runs.selectors.CALL_TEXT_SEARCH_WINDOW``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from registry.guardrails import ACTIONS, INPUT, INPUT_CHECKS, OUTPUT, OUTPUT_CHECKS

from .models import Call
from .selectors import traffic_calls

GUARDRAIL_COUNT_SAMPLE = 20_000
SELECTED = ("stage", "check", "action")  # an entry's fields a list narrows by, in its order
# Every check a policy may name, as "<stage>.<check>": what the calls list filters by.
STAGE_CHECKS: tuple[tuple[str, str], ...] = (
    *((INPUT, name) for name in INPUT_CHECKS),
    *((OUTPUT, name) for name in OUTPUT_CHECKS),
)


def stage_check_parse(value: str) -> tuple[str, str] | None:
    """``"input.pii"`` as ``("input", "pii")``; None for anything that names no known check."""
    stage, _, check = value.partition(".")
    return (stage, check) if (stage, check) in STAGE_CHECKS else None


def calls_with_guardrails(
    calls: QuerySet[Call],
    *,
    stage: str | None = None,
    check: str | None = None,
    action: str | None = None,
) -> QuerySet[Call]:
    """``calls`` on which a guardrail check fired: any, or one with the given stage, check and
    action (each optional; see the module docstring for SQLite)."""
    if action is not None and action not in ACTIONS:
        return calls.none()
    entry = {
        field: value
        for field, value in zip(SELECTED, (stage, check, action), strict=True)
        if value is not None
    }
    if not entry:
        return calls.exclude(guardrails=[])
    if connections[calls.db].features.supports_json_field_contains:
        return calls.filter(guardrails__contains=[entry])
    calls = calls.annotate(guardrails_text=Cast("guardrails", output_field=TextField()))
    for run in _consecutive(entry):
        # '"check": "pii", "action": "redact"': a quote inside a detail is written \" and so
        # never matches.
        calls = calls.filter(guardrails_text__contains=json.dumps(run)[1:-1])
    return calls


def _consecutive(entry: dict[str, str]) -> list[dict[str, str]]:
    """The entry's fields in runs of neighbours in the record's order (stage, check, action, as
    ``Triggered.as_dict`` writes them): each run is found as one piece of text."""
    runs: list[dict[str, str]] = []
    previous = -2
    for i, field in enumerate(SELECTED):
        if field not in entry:
            continue
        if i != previous + 1:
            runs.append({})
        runs[-1][field] = entry[field]
        previous = i
    return runs


@dataclass(frozen=True, slots=True)
class GuardrailCount:
    """How many calls of a prompt a check fired on, with one action."""

    prompt_id: int
    prompt: str
    stage: str
    check: str
    action: str
    calls: int


@dataclass(frozen=True, slots=True)
class GuardrailCounts:
    rows: list[GuardrailCount]  # the most calls first
    calls: int  # the calls read: those on which any check fired (at most the sample)
    truncated: bool  # the window held more such calls than were read


def guardrail_counts(*, since: datetime, sample: int = GUARDRAIL_COUNT_SAMPLE) -> GuardrailCounts:
    """The checks that fired on release traffic since ``since`` (the playground's runs are left
    out, as the calls list leaves them out by default), counted per prompt, stage, check and
    action: one query, over the newest ``sample`` calls on which a check fired."""
    records = list(
        calls_with_guardrails(traffic_calls().filter(created_at__gte=since))
        .order_by("-created_at", "-id")
        .values_list("prompt_id", "prompt__key", "guardrails")[: sample + 1]
    )
    truncated = len(records) > sample
    records = records[:sample]
    counted: Counter[tuple[int, str, str, str, str]] = Counter()
    for prompt_id, key, record in records:
        # A check counts once per call, even when the floor's and the version's both fired.
        counted.update({(prompt_id, key, *fired) for fired in _entries(record)})
    rows = [
        GuardrailCount(prompt_id, key, stage, check, action, calls)
        for (prompt_id, key, stage, check, action), calls in counted.items()
    ]
    rows.sort(key=lambda r: (-r.calls, r.prompt, r.stage, r.check, ACTIONS.index(r.action)))
    return GuardrailCounts(rows=rows, calls=len(records), truncated=truncated)


def _entries(record: Any) -> list[tuple[str, str, str]]:
    """(stage, check, action) of each well-formed entry of a record; anything else is skipped
    (the record is written by runs.execution, but a row is only as good as its writer)."""
    if not isinstance(record, list):
        return []
    return [
        (entry["stage"], entry["check"], entry["action"])
        for entry in record
        if isinstance(entry, dict)
        and all(isinstance(entry.get(k), str) for k in ("stage", "check", "action"))
        and entry["action"] in ACTIONS
    ]
