"""Eval runs: a prompt version run over a dataset's cases by Celery tasks, scored case by case.

Writes (``eval_run_start``, ``eval_run_cancel``, ``eval_run_resume``, ``eval_run_batch_execute``)
and the run lookups; the report against the stable version is ``evaluations.evalruns.report``.

How a run survives a worker restart. Its cases go out in batches (``EVAL_BATCH_SIZE`` each) as
late-acknowledged tasks (``evaluations.tasks``), so a batch taken by a worker that dies is given
back by the broker. Each scored case is one ``EvalResult``, unique per run and case key, inserted
as soon as it is scored: a batch delivered again skips what is scored already, and a duplicate
insert (two deliveries racing) is ignored. Progress is results / ``total_cases``; the batch that
brings the count to the total finishes the run with a compare-and-swap on its status.

Imports registry, releases and runs (rendering, the model call, prices); never ``api``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from config.metrics import EVAL_RUNS_FINISHED
from registry.actors import Actor
from registry.content import ModelBinding
from registry.errors import ProblemsError, RegistryError
from registry.events import EventType, event_emit
from registry.guardrails import FALLBACK, OUTPUT, GuardrailPolicy
from registry.models import Prompt, PromptVersion
from registry.selectors import version_content, version_get, version_render
from registry.snippets import Following, latest_committed
from releases.models import Environment, Release
from releases.selectors import environment_get, stable_following
from runs.calls import attempts_cost, call_observe, completion_cost
from runs.guardrails import (
    Moderator,
    Triggered,
    deciding,
    input_checks,
    output_checks,
    tokens_check,
)
from runs.models import Provider
from runs.moderation import moderation_prepare
from runs.providers import ProviderUnavailable, binding_providers, complete
from runs.tool_calls import answer_with_tool_calls

from ..datasets.selectors import DatasetNotFound, dataset_cases, dataset_get
from ..models import Case, Dataset, EvalResult, EvalRun
from ..scoring.judge import registry_judge
from ..scoring.scorers import score
from ..tasks import eval_run_batch

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetEmpty",
    "DatasetNotFound",
    "EvalRunDatasetChanged",
    "EvalRunEnded",
    "EvalRunNotFound",
    "eval_run_batch_execute",
    "eval_run_cancel",
    "eval_run_get",
    "eval_run_list",
    "eval_run_resume",
    "eval_run_start",
]

TIME_LIMIT = "time_limit"  # error_class of the cases of a batch stopped by its time limit
ENDED = (EvalRun.Status.FINISHED, EvalRun.Status.FAILED, EvalRun.Status.CANCELLED)
IN_PROGRESS = (EvalRun.Status.QUEUED, EvalRun.Status.RUNNING)
DETAIL_CHARS = 2000  # a failed case's detail stays readable in a report row
NO_GUARDRAILS = GuardrailPolicy()


# --- errors -----------------------------------------------------------------------------------


class DatasetEmpty(RegistryError):
    message = "The dataset has no cases to run."


class EvalRunNotFound(RegistryError):
    message = "There is no eval run with that id."


class EvalRunEnded(RegistryError):
    message = "The eval run has ended already."


class EvalRunDatasetChanged(RegistryError):
    message = "The dataset's cases changed since the eval run read them."


# --- lookups ----------------------------------------------------------------------------------


def eval_run_list(*, prompt: Prompt | None = None) -> QuerySet[EvalRun]:
    """Runs, newest first, with their progress and pass counts and their baseline's, in one
    query whatever their number (counts and subqueries, never a loop)."""
    baseline_results = EvalResult.objects.filter(run=OuterRef("baseline")).values("run")
    qs = EvalRun.objects.select_related(
        "prompt", "version", "dataset", "environment", "baseline__version"
    ).annotate(
        done=Count("results"),
        passed=Count("results", filter=Q(results__passed=True)),
        baseline_done=Subquery(baseline_results.annotate(n=Count("pk")).values("n")[:1]),
        baseline_passed=Subquery(
            baseline_results.filter(passed=True).annotate(n=Count("pk")).values("n")[:1]
        ),
    )
    if prompt is not None:
        qs = qs.filter(prompt=prompt)
    return qs.order_by("-created_at", "-id")


def eval_run_get(*, run_id: int) -> EvalRun:
    try:
        return eval_run_list().get(pk=run_id)
    except EvalRun.DoesNotExist as exc:
        raise EvalRunNotFound(f"There is no eval run {run_id}.") from exc


# --- starting ---------------------------------------------------------------------------------


def _baseline_version(
    *, prompt: Prompt, environment: Environment | None
) -> tuple[Environment | None, PromptVersion | None]:
    """Whose stable version a run is compared with: the named environment's, else
    ``EVAL_BASELINE_ENVIRONMENT``'s, else the highest environment that has a stable version."""
    releases = Release.objects.filter(prompt=prompt, stable_version__isnull=False).select_related(
        "environment", "stable_version"
    )
    if environment is not None:
        release = releases.filter(environment=environment).first()
        return environment, release.stable_version if release else None
    release = (
        releases.filter(environment__name=settings.EVAL_BASELINE_ENVIRONMENT).first()
        or releases.order_by("-environment__position").first()
    )
    if release is None:
        return None, None
    return release.environment, release.stable_version


def eval_run_start(
    *,
    prompt: Prompt,
    version: int,
    dataset_name: str,
    actor: Actor,
    include_holdout: bool = False,
    environment: str | None = None,
) -> EvalRun:
    """Start a run of ``version`` (a draft too) over the dataset, and its baseline if needed.

    1. Look up the version, the dataset and the environment (each a 404 problem when missing).
    2. Pick the baseline: the stable version of the environment (see ``_baseline_version``); none
       when there is none, or when it is the version evaluated.
    3. Under the dataset's row lock (an import holds it too), read the cases (holdout ones only
       for a gate run, ``include_holdout``) and the dataset's ``updated_at``, so the run records
       the dataset exactly as it scored it. No cases: ``DatasetEmpty``.
    4. Reuse a baseline run of the stable version on the same cases (same dataset state, same
       holdout choice, started after its commit) that finished or is still going; else start
       one too.
    5. Queue the batches once the transaction commits (a worker must find the rows).
    """
    evaluated = version_get(prompt=prompt, number=version)
    dataset = dataset_get(prompt=prompt, name=dataset_name)
    chosen = environment_get(name=environment) if environment else None
    baseline_environment, stable = _baseline_version(prompt=prompt, environment=chosen)
    if stable is not None and stable.pk == evaluated.pk:
        stable = None

    with transaction.atomic():
        locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
        cases = dict(
            dataset_cases(locked, include_holdout=include_holdout).values_list("key", "pk")
        )
        if not cases:
            which = "cases" if include_holdout else "cases outside the holdout"
            raise DatasetEmpty(f"{dataset} has no {which} to run.")
        fields: dict[str, Any] = {
            "prompt": prompt,
            "dataset": locked,
            "include_holdout": include_holdout,
            "environment": baseline_environment,
            "total_cases": len(cases),
            "dataset_updated_at": locked.updated_at,
            "created_by_label": actor.label,
        }
        queued: list[EvalRun] = []
        baseline = None
        if stable is not None:
            baseline = (
                EvalRun.objects.filter(
                    version=stable,
                    dataset=locked,
                    include_holdout=include_holdout,
                    dataset_updated_at=locked.updated_at,
                    status__in=[EvalRun.Status.FINISHED, *IN_PROGRESS],
                    # A run started while it was a draft may have scored other content.
                    created_at__gte=stable.committed_at,
                )
                .order_by("-created_at", "-id")
                .first()
            )
            if baseline is None:
                baseline = EvalRun.objects.create(version=stable, **fields)
                queued.append(baseline)
        run = EvalRun.objects.create(version=evaluated, baseline=baseline, **fields)
        queued.insert(0, run)
        transaction.on_commit(lambda: [_batches_queue(run_id=r.pk, cases=cases) for r in queued])
    logger.info(
        "Eval run started: run=%s prompt=%s version=%d dataset=%s cases=%d baseline=%s actor=%s",
        run.pk,
        prompt.key,
        evaluated.number,
        dataset.name,
        len(cases),
        baseline.pk if baseline else None,
        actor.label,
    )
    return run


def _batches_queue(*, run_id: int, cases: Mapping[str, int]) -> None:
    """One task per ``EVAL_BATCH_SIZE`` cases, keyed ``{case key: case id}``: the key names a case
    removed from the dataset meanwhile, so the run still reaches its total."""
    items = list(cases.items())
    size = settings.EVAL_BATCH_SIZE
    try:
        for start in range(0, len(items), size):
            eval_run_batch.apply_async(
                kwargs={"run_id": run_id, "cases": dict(items[start : start + size])},
                queue=settings.CELERY_TASK_DEFAULT_QUEUE,
                # A batch's own limits, longer than a shadow run's (CELERY_TASK_*_TIME_LIMIT).
                soft_time_limit=settings.EVAL_BATCH_SOFT_TIME_LIMIT,
                time_limit=settings.EVAL_BATCH_TIME_LIMIT,
            )
    except BrokerUnavailable:
        # The run is committed: leave it queued and say how to go on, rather than answer the
        # caller an error for a run that exists. Resuming queues exactly the unscored cases.
        logger.exception("Eval run %s: the task queue is unavailable", run_id)
        EvalRun.objects.filter(pk=run_id).update(
            error="The task queue was unavailable when the run was queued; once it is back, "
            f"`manage.py evaluate resume {run_id}` queues the cases that have no result."
        )


def eval_run_resume(*, run: EvalRun, actor: Actor) -> int:
    """Queue again the cases of a run still in progress that have no result yet (after the broker
    itself lost its queue, say); returns how many. Safe to repeat: scored cases are skipped."""
    if run.status in ENDED:
        raise EvalRunEnded(f"Eval run {run.pk} is {run.status} already; start a new one.")
    # The run's cases are the dataset's as it read them; after an import, the cases it still
    # lacks are not known (a removed one would never be scored, a new one was never its own).
    now = Dataset.objects.filter(pk=run.dataset_id).values_list("updated_at", flat=True).first()
    if now != run.dataset_updated_at:
        raise EvalRunDatasetChanged(
            f"Eval run {run.pk}: the cases of {run.dataset.name!r} changed since the run read "
            "them, so the cases it has still to score are not known; cancel it and start a new "
            "run."
        )
    done = set(EvalResult.objects.filter(run=run).values_list("case_key", flat=True))
    cases = {
        key: pk
        for key, pk in dataset_cases(run.dataset, include_holdout=run.include_holdout).values_list(
            "key", "pk"
        )
        if key not in done
    }
    EvalRun.objects.filter(pk=run.pk).update(error="")
    transaction.on_commit(lambda: _batches_queue(run_id=run.pk, cases=cases))
    logger.info("Eval run resumed: run=%s cases=%d actor=%s", run.pk, len(cases), actor.label)
    return len(cases)


def eval_run_cancel(*, run: EvalRun, actor: Actor) -> EvalRun:
    """Stop a queued or running run: batches still queued or running skip its remaining cases.
    Cancelling a cancelled run changes nothing; a finished or failed one cannot be cancelled."""
    # Compare-and-swap: a run finishing at this moment either finishes or is cancelled, not both.
    changed = EvalRun.objects.filter(pk=run.pk, status__in=IN_PROGRESS).update(
        status=EvalRun.Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db(fields=["status", "finished_at"])
    if not changed and run.status != EvalRun.Status.CANCELLED:
        raise EvalRunEnded(f"Eval run {run.pk} is {run.status} already.")
    if changed:
        _ended(EvalRun.Status.CANCELLED)
        logger.info("Eval run cancelled: run=%s actor=%s", run.pk, actor.label)
    return run


# --- running a batch (the worker's side) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """What every case of a batch shares: the version's content and its providers."""

    version: PromptVersion
    binding: ModelBinding
    providers: Mapping[str, Provider]
    # How its includes that follow a snippet resolve: the snippet's stable version in the run's
    # environment, as a release there would serve them (no environment: the latest committed).
    following: Following = latest_committed
    prompt: str = ""  # the prompt's key, which the model call is counted under
    # The version's guardrail policy (runs.guardrails) and the moderation its output checks use.
    guardrails: GuardrailPolicy = NO_GUARDRAILS
    moderate: Moderator | None = None


def eval_run_batch_execute(*, run_id: int, cases: Mapping[str, int]) -> int:
    """Score a batch of a run's cases (``{case key: case id}``); returns how many it scored.

    1. A run that has ended (cancelled, say) or is gone: nothing to do. Otherwise it is running.
    2. Skip the cases that have a result already (an earlier delivery scored them).
    3. For each case: render, call the model (retries, fallbacks), score; outside any
       transaction. A render or model failure is a failed result saying why, never an exception.
       The result is inserted at once, so a worker killed later loses only the case in hand.
    4. Finish the run when its results reach its total.
    """
    run = (
        EvalRun.objects.filter(pk=run_id)
        .only("status", "version_id", "total_cases", "environment_id")
        .first()
    )
    if run is None or run.status in ENDED:
        return 0
    if run.status == EvalRun.Status.QUEUED:
        EvalRun.objects.filter(pk=run_id, status=EvalRun.Status.QUEUED).update(
            status=EvalRun.Status.RUNNING, started_at=timezone.now()
        )
    done = set(
        EvalResult.objects.filter(run_id=run_id, case_key__in=list(cases)).values_list(
            "case_key", flat=True
        )
    )
    todo = {key: pk for key, pk in cases.items() if key not in done}
    scored = 0
    if todo:
        version = PromptVersion.objects.select_related("prompt").get(pk=run.version_id)
        prompt = version.prompt
        version = version_get(prompt=prompt, number=version.number)
        binding = version_content(version).model
        environment = (
            Environment.objects.filter(pk=run.environment_id).values_list("name", flat=True).first()
        )
        following = stable_following(environment) if environment else latest_committed
        providers = binding_providers(binding)
        # The version's own policy, without an environment's floor: an eval run scores the
        # version, served nowhere (its environment only names the baseline and how snippets
        # resolve), and a floor is what serving in an environment adds (decision 0052).
        guardrails = (
            GuardrailPolicy.of(binding.guardrails, None, response_schema=binding.response_schema)
            if binding.guardrails
            else NO_GUARDRAILS
        )
        target = _Target(
            version,
            binding,
            providers,
            following,
            prompt.key,
            guardrails=guardrails,
            # As a run moderates: a provider named by the policy, not only the binding's, and a
            # classifier prompt in the run's environment (failing, to on_error, without one).
            moderate=(
                moderation_prepare(policy=guardrails, environment=environment, locale=None)
                if guardrails
                else None
            ),
        )
        rows = Case.objects.in_bulk(list(todo.values()))
        for key, pk in todo.items():
            # Checked per case, so a cancel stops a batch within one model call.
            if EvalRun.objects.filter(pk=run_id, status__in=ENDED).exists():
                break
            try:
                result = _case_result(run_id=run_id, key=key, case=rows.get(pk), target=target)
            except SoftTimeLimitExceeded:
                raise  # the batch's time is up: eval_run_batch_timed_out fails the rest
            except Exception as exc:
                # A bug of ours (a scorer, say) must not crash the batch over and over and leave
                # the run short of its total: the case fails, saying so, and the log has why.
                logger.exception("Eval case failed: run=%s case=%s", run_id, key)
                result = _failed(run_id, key, rows.get(pk), "internal_error", repr(exc))
            # ignore_conflicts: another delivery of this batch scored the case meanwhile.
            EvalResult.objects.bulk_create([result], ignore_conflicts=True)
            scored += 1
    _finish_if_complete(run_id=run_id, total=run.total_cases)
    return scored


def eval_run_batch_timed_out(*, run_id: int, cases: Mapping[str, int]) -> int:
    """The batch ran past its time limit (EVAL_BATCH_*_TIME_LIMIT): every case of it with no
    result yet gets a failed one saying so, so the run still reaches its total and finishes
    rather than stay running for ever. Returns how many cases it failed."""
    run = EvalRun.objects.filter(pk=run_id).only("status", "total_cases").first()
    if run is None or run.status in ENDED:
        return 0
    done = set(
        EvalResult.objects.filter(run_id=run_id, case_key__in=list(cases)).values_list(
            "case_key", flat=True
        )
    )
    rows = Case.objects.in_bulk([pk for key, pk in cases.items() if key not in done])
    detail = "The batch ran past its time limit before this case was scored."
    failed = [
        _failed(run_id, key, rows.get(pk), TIME_LIMIT, detail)
        for key, pk in cases.items()
        if key not in done
    ]
    # ignore_conflicts: a case scored by another delivery meanwhile keeps its real result.
    EvalResult.objects.bulk_create(failed, ignore_conflicts=True)
    logger.warning("Eval batch timed out: run=%s cases failed=%d", run_id, len(failed))
    _finish_if_complete(run_id=run_id, total=run.total_cases)
    return len(failed)


def _finish_if_complete(*, run_id: int, total: int) -> None:
    if EvalResult.objects.filter(run_id=run_id).count() < total:
        return
    # One transaction: the run finishes and its event is queued together, or neither.
    with transaction.atomic():
        # Compare-and-swap: two batches ending together both see the total; one finishes it.
        if EvalRun.objects.filter(pk=run_id, status__in=IN_PROGRESS).update(
            status=EvalRun.Status.FINISHED, finished_at=timezone.now()
        ):
            _ended(EvalRun.Status.FINISHED)
            run = EvalRun.objects.select_related("prompt", "version", "dataset", "environment")
            _finished_announce(run.get(pk=run_id))
            logger.info("Eval run finished: run=%s cases=%d", run_id, total)


def _finished_announce(run: EvalRun) -> None:
    """``eval_run.finished`` (docs/webhooks.md): the run's figures, never a case's variables or
    outputs."""
    results = EvalResult.objects.filter(run=run)
    passed = results.filter(passed=True).count()
    must_pass_failed = results.filter(must_pass=True, passed=False).count()
    environment = run.environment.name if run.environment else None
    event_emit(
        EventType.EVAL_RUN_FINISHED,
        {
            "prompt": run.prompt.key,
            "run_id": run.pk,
            "version": run.version.number,
            "version_committed": run.version.is_committed,
            "dataset": run.dataset.name,
            "environment": environment,
            "include_holdout": run.include_holdout,
            "total_cases": run.total_cases,
            "passed_cases": passed,
            "pass_rate": round(100 * passed / run.total_cases, 2) if run.total_cases else None,
            "must_pass_failed": must_pass_failed,
            "baseline_run_id": run.baseline_id,
            "started_by": run.created_by_label,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
        },
        prompt_id=run.prompt_id,
        environment=environment,
    )


def _ended(status: str) -> None:
    """Counts a run that ended, once its transaction (if any) has committed."""
    transaction.on_commit(EVAL_RUNS_FINISHED.labels(status=status).inc)


def _failed(
    run_id: int, key: str, case: Case | None, error_class: str, detail: str, **fields: Any
) -> EvalResult:
    return EvalResult(
        run_id=run_id,
        case=case,
        case_key=key,
        must_pass=case.must_pass if case else False,
        holdout=case.holdout if case else False,
        variables=case.variables if case else None,
        expectation=case.expectation if case else None,
        passed=False,
        score=0.0,
        error_class=error_class,
        detail=_short(detail),
        **fields,
    )


def _short(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _problems_text(exc: RegistryError) -> str:
    if isinstance(exc, ProblemsError) and exc.problems:
        return exc.message + " " + "; ".join(p.detail for p in exc.problems)
    return exc.message


def _case_result(*, run_id: int, key: str, case: Case | None, target: _Target) -> EvalResult:
    """Render, call and score one case; every way it can fail is a failed result.

    The version's guardrails apply as in a run (``runs.execution``): the input checks on the
    case's variables before rendering (redacting where they say so), the tokens check on the
    rendered messages, the output checks on the answer. A check that refuses or answers the
    fallback before the call decides the case without a model call; either way the checks that
    fired are the result's record, what a ``guardrails`` scorer judges. They are not counted in
    ``promptregistry_guardrail_triggers_total``: that counts what traffic met, not test cases."""
    if case is None:
        detail = "The case was removed from the dataset while the run was going."
        return _failed(run_id, key, None, "case_removed", detail)
    policy = target.guardrails
    variables: Mapping[str, Any] = case.variables
    triggered: tuple[Triggered, ...] = ()
    if policy:
        verdict = input_checks(policy, case.variables)
        variables, triggered = verdict.variables, verdict.triggered
    try:
        rendered = version_render(
            version=target.version,
            locale=case.locale or None,
            variables=variables,
            following=target.following,
        )
    except RegistryError as exc:
        # The draft declares other variables than the cases have: a finding about the version.
        return _failed(
            run_id, key, case, "render_invalid", _problems_text(exc), guardrails=_record(triggered)
        )
    if policy:
        triggered += tuple(tokens_check(policy, rendered.messages))
    decided = deciding(triggered)
    if decided is not None:  # an input guardrail decides the case: no model call
        output = policy.fallback if decided.action == FALLBACK else ""
        return _scored(
            run_id, key, case, output, triggered, input_tokens=0, output_tokens=0, cost=Decimal(0)
        )
    observed = {
        "source": "eval",
        "prompt": target.prompt,
        "version": target.version.number,
        "variant": "",
        "primary": (target.binding.provider, target.binding.model),
    }
    started = time.perf_counter()
    try:
        completion = complete(
            binding=target.binding, messages=rendered.messages, providers=target.providers
        )
    except ProviderUnavailable as failure:
        latency_ms = (time.perf_counter() - started) * 1000
        # Answers the schema refused were billed all the same (the result keeps no cost of them).
        call_observe(
            **observed,
            completion=None,
            failure=failure,
            latency_ms=latency_ms,
            cost=attempts_cost(failure.attempts),
        )
        last = failure.attempts[-1].outcome if failure.attempts else "no_targets"
        return _failed(
            run_id,
            key,
            case,
            str(last),
            str(failure),
            latency_ms=latency_ms,
            guardrails=_record(triggered),
        )
    cost = completion_cost(completion)
    call_observe(
        **observed, completion=completion, failure=None, latency_ms=completion.latency_ms, cost=cost
    )
    if policy.stage(OUTPUT):
        # The answer as a caller would get it: redacted, or the fallback; a refused one is kept
        # (redacted where the checks said so) to show why.
        checked = output_checks(policy, completion, moderate=target.moderate)
        completion, triggered = checked.completion, triggered + checked.triggered
    output = answer_with_tool_calls(completion.text, completion.tool_calls)
    return _scored(
        run_id,
        key,
        case,
        output,
        triggered,
        latency_ms=completion.latency_ms,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost=cost,
    )


def _scored(
    run_id: int,
    key: str,
    case: Case,
    output: str,
    triggered: tuple[Triggered, ...],
    *,
    latency_ms: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cost: Decimal | None = None,
) -> EvalResult:
    """The case's output scored, with the record of the guardrail checks that fired."""
    record = _record(triggered)
    verdict = score(
        output, case.expectation, judge=registry_judge, inputs=case.variables, guardrails=record
    )
    return EvalResult(
        run_id=run_id,
        case=case,
        case_key=key,
        must_pass=case.must_pass,
        holdout=case.holdout,
        variables=case.variables,
        expectation=case.expectation,
        passed=verdict.passed,
        score=verdict.score,
        detail=_short(verdict.detail),
        output=output,
        latency_ms=latency_ms,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        guardrails=record,
    )


def _record(triggered: tuple[Triggered, ...]) -> list[dict[str, str]]:
    return [t.as_dict() for t in triggered]
