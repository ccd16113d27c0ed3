"""The report of an eval run: progress, pass rate, and what changed against the stable version.

``eval_run_report(run)`` reads the run's results and its baseline's (two queries, whatever the
number of cases) and classifies each case by comparing the two verdicts on the same case key:

- regressed: the baseline passed it, this version fails it;
- fixed: the baseline failed it, this version passes it;
- still failing / passing: both agree;
- failing / passing alone (``new_failing``/``new_passing``): the baseline has no verdict on it
  (no baseline, or it has not got that far yet).

Rows are ordered so that what needs a person comes first: must-pass cases that fail, then
regressions, then the other failures, then fixes, then passes. Holdout cases (gate runs only)
count in every figure, but their output and the scorer's detail are never shown: a holdout case
an author can read is one a prompt can be tuned to pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ..models import EvalResult, EvalRun


class CaseChange(StrEnum):
    REGRESSED = "regressed"
    FIXED = "fixed"
    STILL_FAILING = "still_failing"
    PASSING = "passing"
    NEW_FAILING = "new_failing"
    NEW_PASSING = "new_passing"


CHANGE_LABELS = {
    CaseChange.REGRESSED: "Regressed",
    CaseChange.FIXED: "Fixed",
    CaseChange.STILL_FAILING: "Still failing",
    CaseChange.PASSING: "Passing",
    CaseChange.NEW_FAILING: "Failing (no baseline verdict)",
    CaseChange.NEW_PASSING: "Passing (no baseline verdict)",
}
# What a reader needs to see first (must-pass failures go before all of these).
_ORDER = {
    CaseChange.REGRESSED: 0,
    CaseChange.STILL_FAILING: 1,
    CaseChange.NEW_FAILING: 2,
    CaseChange.FIXED: 3,
    CaseChange.NEW_PASSING: 4,
    CaseChange.PASSING: 5,
}


@dataclass(frozen=True, slots=True)
class CaseRow:
    key: str
    change: CaseChange
    passed: bool
    baseline_passed: bool | None
    must_pass: bool
    holdout: bool
    score: float | None
    error_class: str
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost: Decimal | None
    # None for a holdout case: frozen, never shown.
    detail: str | None
    output: str | None
    variables: dict[str, Any] | None
    # The guardrail checks that fired ({stage, check, action, source, detail} each); None for a
    # holdout case, whose detail they would tell.
    guardrails: list[dict[str, Any]] | None = None

    @property
    def guardrails_summary(self) -> str:
        """The checks that fired, on one line: ``input injection: refuse``."""
        return ", ".join(
            f"{g.get('stage')} {g.get('check')}: {g.get('action')}"
            for g in self.guardrails or ()
            if isinstance(g, dict)
        )

    @property
    def change_label(self) -> str:
        return CHANGE_LABELS[self.change]

    @property
    def variables_json(self) -> str:
        """The variables the case had when it was scored (JSON), for people to read."""
        if self.variables is None:
            return ""
        return json.dumps(self.variables, ensure_ascii=False, indent=2)


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One run's progress and pass rate (of the cases scored so far)."""

    run_id: int
    version: int
    status: str
    done: int
    total: int
    passed: int

    @property
    def percent_done(self) -> float:
        return round(100 * self.done / self.total, 1) if self.total else 100.0

    @property
    def pass_rate(self) -> float | None:
        return round(100 * self.passed / self.done, 2) if self.done else None


@dataclass(frozen=True, slots=True)
class Totals:
    cost: Decimal | None
    input_tokens: int
    output_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True, slots=True)
class EvalReport:
    run: RunFigures
    baseline: RunFigures | None
    # Percentage points: this run's pass rate minus the baseline's (None until both have some).
    delta_points: float | None
    must_pass_failed: int
    counts: dict[str, int]
    totals: Totals
    rows: list[CaseRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[CaseRow]:
        return [row for row in self.rows if row.change is CaseChange.REGRESSED]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0–100): always one of the values, None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def pass_delta(run: float | None, baseline: float | None) -> float | None:
    return None if run is None or baseline is None else round(run - baseline, 2)


def _figures(run: EvalRun, results: list[dict[str, Any]]) -> RunFigures:
    return RunFigures(
        run_id=run.pk,
        version=run.version.number,
        status=run.status,
        done=len(results),
        total=run.total_cases,
        passed=sum(1 for r in results if r["passed"]),
    )


def _change(passed: bool, baseline: bool | None) -> CaseChange:
    if baseline is None:
        return CaseChange.NEW_PASSING if passed else CaseChange.NEW_FAILING
    if baseline and not passed:
        return CaseChange.REGRESSED
    if not baseline and passed:
        return CaseChange.FIXED
    return CaseChange.PASSING if passed else CaseChange.STILL_FAILING


RESULT_FIELDS = (
    "case_key",
    "passed",
    "must_pass",
    "holdout",
    "score",
    "error_class",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost",
    "detail",
    "output",
    "variables",
    "guardrails",
)


def eval_run_report(run: EvalRun) -> EvalReport:
    """The run's report so far (see the module docstring). ``run`` comes from ``eval_run_get``
    or ``eval_run_list`` (its version and baseline's version are loaded with it)."""
    results = list(EvalResult.objects.filter(run=run).order_by("id").values(*RESULT_FIELDS))
    baseline_run = run.baseline
    baseline_results: list[dict[str, Any]] = []
    if baseline_run is not None:
        baseline_results = list(
            EvalResult.objects.filter(run=baseline_run).values("case_key", "passed")
        )
    baseline_by_key = {r["case_key"]: r["passed"] for r in baseline_results}

    rows = []
    for r in results:
        frozen = r["holdout"]
        rows.append(
            CaseRow(
                key=r["case_key"],
                change=_change(r["passed"], baseline_by_key.get(r["case_key"])),
                passed=r["passed"],
                baseline_passed=baseline_by_key.get(r["case_key"]),
                must_pass=r["must_pass"],
                holdout=frozen,
                score=r["score"],
                error_class=r["error_class"],
                latency_ms=r["latency_ms"],
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
                cost=r["cost"],
                detail=None if frozen else r["detail"],
                output=None if frozen else r["output"],
                variables=None if frozen else r["variables"],
                guardrails=None if frozen else r["guardrails"],
            )
        )
    rows.sort(key=lambda row: (not (row.must_pass and not row.passed), _ORDER[row.change]))

    figures = _figures(run, results)
    baseline = _figures(baseline_run, baseline_results) if baseline_run is not None else None
    costs = [r["cost"] for r in results if r["cost"] is not None]
    latencies = [r["latency_ms"] for r in results if r["latency_ms"] is not None]
    counts = {str(change): 0 for change in CaseChange}
    for row in rows:
        counts[str(row.change)] += 1
    return EvalReport(
        run=figures,
        baseline=baseline,
        delta_points=pass_delta(figures.pass_rate, baseline.pass_rate if baseline else None),
        must_pass_failed=sum(1 for row in rows if row.must_pass and not row.passed),
        counts=counts,
        totals=Totals(
            cost=sum(costs, Decimal(0)) if costs else None,
            input_tokens=sum(r["input_tokens"] or 0 for r in results),
            output_tokens=sum(r["output_tokens"] or 0 for r in results),
            latency_p50_ms=percentile(latencies, 50),
            latency_p95_ms=percentile(latencies, 95),
        ),
        rows=rows,
    )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A list row's figures, from ``eval_run_list``'s annotations (no query of its own)."""

    done: int
    total: int
    percent_done: float
    pass_rate: float | None
    baseline_pass_rate: float | None
    delta_points: float | None


def eval_run_summary(run: EvalRun) -> RunSummary:
    done, passed = run.done, run.passed  # type: ignore[attr-defined]
    baseline_done = run.baseline_done or 0  # type: ignore[attr-defined]
    baseline_passed = run.baseline_passed or 0  # type: ignore[attr-defined]
    pass_rate = round(100 * passed / done, 2) if done else None
    baseline_rate = round(100 * baseline_passed / baseline_done, 2) if baseline_done else None
    return RunSummary(
        done=done,
        total=run.total_cases,
        percent_done=round(100 * done / run.total_cases, 1) if run.total_cases else 100.0,
        pass_rate=pass_rate,
        baseline_pass_rate=baseline_rate,
        delta_points=pass_delta(pass_rate, baseline_rate),
    )
