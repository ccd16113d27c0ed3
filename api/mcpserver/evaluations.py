"""Tools over eval runs: start one (``prompts:write``; it runs in the background, on the Celery
workers) and read its progress and report (``prompts:read``). Each calls what its API view
calls."""

from __future__ import annotations

from typing import Any

from evaluations.evalruns.services import eval_run_get, eval_run_list
from registry.selectors import prompt_get

from ..evaluations import (
    EvalRunDetailSerializer,
    EvalRunSerializer,
    EvalRunStartApi,
    eval_run_start_for,
)
from ..models import Scope
from .prompts import KEY
from .tools import PAGE_NOTES, Tool, ToolCall, page_of

RUN_ID = "The eval run's `id`, as `start_eval_run` or `list_eval_runs` gave it."


def start_eval_run(call: ToolCall) -> dict[str, Any]:
    data = EvalRunStartApi.InputSerializer(data=call.body("evaluations_start"))
    data.is_valid(raise_exception=True)
    run = eval_run_start_for(
        call.api_key,
        actor=call.actor,
        key=call.arguments["key"],
        number=call.arguments["number"],
        **data.validated_data,
    )
    return EvalRunDetailSerializer(eval_run_get(run_id=run.pk)).data


def get_eval_run(call: ToolCall) -> dict[str, Any]:
    return EvalRunDetailSerializer(eval_run_get(run_id=call.arguments["run_id"])).data


def list_eval_runs(call: ToolCall) -> dict[str, Any]:
    runs = eval_run_list(prompt=prompt_get(key=call.arguments["key"]))
    return page_of(call, runs, EvalRunSerializer)


TOOLS = (
    Tool(
        name="start_eval_run",
        title="Start an eval run",
        scope=Scope.PROMPTS_WRITE,
        operation="evaluations_start",
        read_only=False,
        run=start_eval_run,
        description=(
            "Runs a version (a draft too) over one of the prompt's datasets of test cases, in "
            "the background: each case is rendered, sent to the version's model and scored. "
            "Answers at once with the run's `id` and `status` (queued or running); read its "
            "progress and report with `get_eval_run` until `status` is `finished` (or "
            "`failed`, `cancelled`). The baseline is the stable version of `environment` "
            "(default: production, else the highest environment with a stable version), run "
            "over the same cases, so the report says what regressed and what got fixed. This "
            "calls the model once per case: it costs what those calls cost. "
            "`include_holdout: true` makes it a gate run (promotion gates count those) and "
            "needs `releases:write` too."
        ),
        notes={
            "key": KEY,
            "number": "The version to evaluate, e.g. 4 (a draft's number works too).",
            "dataset": "The dataset's name, e.g. `golden`.",
        },
        examples=({"key": "support.refund-reply", "number": 3, "dataset": "golden"},),
    ),
    Tool(
        name="get_eval_run",
        title="Read an eval run",
        scope=Scope.PROMPTS_READ,
        operation="evaluations_retrieve",
        read_only=True,
        run=get_eval_run,
        description=(
            "An eval run's status, progress (cases scored of the total), pass rate, its "
            "baseline's pass rate and the difference in points, and its report so far: counts "
            "of cases by change against the baseline (regressed, fixed, passing, "
            "still_failing, new_passing, new_failing), totals "
            "(cost, tokens, latency) and each case with its score, output and detail, "
            "must-pass failures and regressions first (holdout cases are counted but never "
            "shown). Call it again while `status` is `queued` or `running`."
        ),
        notes={"run_id": RUN_ID},
        examples=({"run_id": 12},),
    ),
    Tool(
        name="list_eval_runs",
        title="List a prompt's eval runs",
        scope=Scope.PROMPTS_READ,
        operation="evaluations_list",
        read_only=True,
        run=list_eval_runs,
        description=(
            "A prompt's eval runs, newest first, one page at a time, each with its version, "
            "dataset, status, progress and pass rate against its baseline (no report: "
            "`get_eval_run` reads one)."
        ),
        notes={"key": KEY, **PAGE_NOTES},
        examples=({"key": "support.refund-reply"},),
    ),
)
