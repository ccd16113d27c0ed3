"""The LLM judge that asks a rubric prompt released in the registry, as the run API does.

Out of ``scorers`` (pure) because it resolves a release and calls a model: it imports the
releases and runs apps. ``scorers.score`` is handed it (``judge=registry_judge``) by eval runs.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError

from registry.errors import ProblemsError, RegistryError
from releases.cache import release_cache
from releases.resolution import resolve
from runs.calls import attempts_cost, call_observe
from runs.execution import run_call, run_prepare
from runs.guardrails import deciding

from .scorers import JudgeFailed, JudgeRequest, rubric_check

JUDGE_SUBJECT = "evaluations:judge"  # every case of a run is judged by the same rubric variant


def registry_judge(request: JudgeRequest) -> Any:
    """The judge that runs the rubric prompt released in the registry, as the run API does.

    1. Look the rubric's release up in the release cache and resolve it for one fixed subject, so
       every case is judged by the same variant while a canary of the rubric runs.
    2. Check the resolved version against the rubric contract (``rubric_check``).
    3. Render it with the variables it declares (``run_prepare``) and call its model with its
       retries and fallbacks (``run_call``), outside any transaction. The call is not recorded:
       a judgement is not traffic, and must not count in the rubric's canary or A/B statistics.
    4. Answer the parsed JSON (the binding's schema was checked by the provider layer).
    """

    found = release_cache().lookup(request.environment, request.prompt)
    if found.release is None:
        why = " (the database is unavailable)" if found.degraded else ""
        raise JudgeFailed(f"{request.prompt} has no release in {request.environment}{why}")
    try:
        resolution = resolve(found.release, subject=JUDGE_SUBJECT, locale=request.locale)
        version = resolution.version
        broken = rubric_check(
            variables=version.variables, response_schema=version.model.get("response_schema")
        )
        if broken:
            raise JudgeFailed(
                f"{request.prompt} v{version.number} is no rubric: {'; '.join(broken)}"
            )
        declared = {v.get("name") for v in version.variables}
        variables = {k: v for k, v in request.variables.items() if k in declared}
        prepared = run_prepare(resolution=resolution, variables=variables)
    except ProblemsError as exc:
        details = "; ".join(p.detail for p in exc.problems)
        raise JudgeFailed(f"{exc.message} {details}".strip()) from exc
    except RegistryError as exc:
        raise JudgeFailed(exc.message) from exc
    except DatabaseError as exc:
        raise JudgeFailed("the database is unavailable") from exc
    outcome = run_call(prepared)
    if outcome.model_called:  # a run the judge's input guardrails decided called no model
        # Not traffic, but a model call paid for: counted as the judge's in the metrics.
        call_observe(
            source="judge",
            prompt=request.prompt,
            version=resolution.version.number,
            variant=resolution.assignment.label,
            primary=(prepared.binding.provider, prepared.binding.model),
            completion=outcome.completion,
            failure=outcome.failure,
            latency_ms=outcome.latency_ms,
            cost=attempts_cost(outcome.attempts, prepared.prices),
        )
    decided = deciding(outcome.guardrails)
    if decided is not None:  # refused, or a fallback text: not the judge's verdict
        raise JudgeFailed(
            f"the judge's {decided.stage} guardrail {decided.check} "
            f"{'refused it' if decided.action == 'refuse' else 'answered its fallback'}"
        )
    if outcome.completion is None:
        raise JudgeFailed(str(outcome.failure))
    return outcome.completion.parsed
