"""Shadow runs: a shadowed version answers a live call's inputs, off the live path, and is compared.

A job arrives from ``runs.tasks.shadow_run_task`` (late acknowledgement: a job may be delivered
twice after a worker restart). The ``ShadowRun`` row, unique per (call, version, kind), is claimed
first, under the release's row lock that also guards the hourly budget; a second delivery finds
the row finished and does nothing, or finds it still pending (the first worker died mid-run) and
runs it. Shadows never call tools or write anywhere but their own row: the model is asked for text
and nothing acts on the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.content import ModelBinding
from registry.errors import RegistryError
from registry.locales import locale_pick
from registry.models import PromptVersion
from registry.rendering import to_messages, with_conversation
from registry.snippets import library_for_templates
from registry.variables import conversation_block
from releases.models import Release
from releases.resolution import version_render
from releases.selectors import served_version, stable_following
from releases.state import release_state, shadow_budget

from .calls import (
    attempts_as_dicts,
    attempts_cost,
    call_observe,
    completion_cost,
    stored_output,
    stored_tool_calls,
)
from .comparison import compare
from .models import Call, ShadowRun
from .payloads import PayloadError, PayloadRefused, payload_open
from .providers import Outcome, ProviderUnavailable, complete, reraise_time_limit
from .tool_calls import answer_with_tool_calls

logger = logging.getLogger(__name__)

BUDGET_WINDOW = timedelta(hours=1)
TIME_LIMIT = "time_limit"  # error_class of a job stopped by its Celery time limit


def shadow_run_execute(*, call_id: int, version: int, kind: str, payload: str) -> ShadowRun | None:
    """Run one shadow job; returns its row (None when the live call is gone, e.g. expired).

    ``payload`` is the sealed variables, locale and conversation (``runs.payloads``). One that has
    expired or that no key in force opens ends the run as an error naming why, and calls no
    model."""
    claimed = _claim_job(call_id=call_id, number=version, kind=kind)
    if not isinstance(claimed, tuple):
        return claimed
    call, run = claimed
    try:
        opened = payload_open(payload)
    except PayloadError as exc:
        return _finish(run, status=ShadowRun.Status.ERROR, error_class=exc.reason.value)
    try:
        return _run(
            run=run,
            call=call,
            variables=opened.variables,
            locale=opened.locale,
            conversation=opened.conversation,
        )
    except Exception as exc:
        reraise_time_limit(exc)  # the job's time is up: the task_failure hook records time_limit
        # A claimed run never stays pending: a pending row is what a redelivery runs again, so
        # a job failing the same way each time would come back for ever (and the report would
        # wait on it). If even this write fails (the database is down), the task fails, and is
        # acknowledged as failed: never retried in a loop.
        logger.exception("Shadow run %s failed unexpectedly", run.pk)
        return _finish(run, status=ShadowRun.Status.ERROR, error_class=str(Outcome.UNEXPECTED))


def shadow_run_refuse(
    *, call_id: int, version: int, kind: str, reason: PayloadRefused
) -> ShadowRun | None:
    """A job the worker dropped unopened (its Celery expiry passed): its run ends as an error
    naming ``reason``, so the report counts the lost sample and no run stays pending."""
    claimed = _claim_job(call_id=call_id, number=version, kind=kind)
    if not isinstance(claimed, tuple):
        return claimed
    return _finish(claimed[1], status=ShadowRun.Status.ERROR, error_class=reason.value)


def _claim_job(
    *, call_id: int, number: int, kind: str
) -> tuple[Call, ShadowRun] | ShadowRun | None:
    """The live call and its pending run, to be run now; else the run as it stands (finished, or
    None when the call is gone or the shadow stopped)."""
    call = Call.objects.select_related("prompt", "environment").filter(pk=call_id).first()
    if call is None:
        return None
    claimed = _claim(call=call, number=number, kind=kind)
    if claimed is None or claimed.status != ShadowRun.Status.PENDING:
        return claimed
    return call, claimed


def _claim(*, call: Call, number: int, kind: str) -> ShadowRun | None:
    version = PromptVersion.objects.filter(prompt=call.prompt, number=number).first()
    if version is None:
        return None
    now = timezone.now()
    with transaction.atomic():
        # The release lock serializes the budget check: two workers counting at once would both
        # see room for one more run and both take it.
        release = Release.objects.select_for_update().get(
            prompt_id=call.prompt_id, environment_id=call.environment_id
        )
        state = release_state(release)
        still_shadowed = state.shadow is not None and (
            kind == ShadowRun.Kind.NOISE or number in state.shadow.versions
        )
        if not still_shadowed:
            # The shadow stopped (or changed versions) while the job waited: nothing to compare.
            return ShadowRun.objects.filter(call=call, version=version, kind=kind).first()
        run, created = ShadowRun.objects.get_or_create(
            call=call,
            version=version,
            kind=kind,
            defaults={"release": release, "created_at": now},
        )
        if not created:
            return run  # delivered again: finished (nothing to do) or pending (the first died)
        used = (
            ShadowRun.objects.filter(release=release, created_at__gte=now - BUDGET_WINDOW)
            .exclude(status=ShadowRun.Status.OVER_BUDGET)
            .exclude(pk=run.pk)
            .count()
        )
        if used >= shadow_budget(state):
            run.status = ShadowRun.Status.OVER_BUDGET
            run.finished_at = now
            run.save(update_fields=["status", "finished_at"])
    return run


def _run(
    *,
    run: ShadowRun,
    call: Call,
    variables: Mapping[str, Any],
    locale: str,
    conversation: Sequence[Mapping[str, Any]] = (),
) -> ShadowRun:
    served = served_version(prompt_id=call.prompt_id, number=run.version.number)
    assert served is not None  # the version row exists (claimed above), so its content does
    binding = ModelBinding.from_dict(served.model)
    try:
        used_locale = locale_pick(
            locale, served.templates.keys(), default=call.prompt.default_locale
        )
        # Its includes serve what the call's environment serves of each snippet now.
        snippets = library_for_templates(
            served.templates, following=stable_following(call.environment.name)
        )
        rendered = version_render(
            served, locale=used_locale, variables=variables, snippets=snippets
        )
        # The messages the live call appended after its prompt's go after the shadow's too.
        if conversation:
            block = conversation_block(
                conversation,
                pointer="/conversation",
                max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
                max_chars=settings.PROMPT_HISTORY_MAX_CHARS,
            )
            rendered = with_conversation(rendered, block)
    except RegistryError as exc:
        # The shadow version declares other variables than the live call had: a finding, not a crash.
        return _finish(run, status=ShadowRun.Status.ERROR, error_class="render_invalid", detail=exc)
    # Counted as the shadow's kind (candidate, noise) in place of a release's variant.
    observed = {
        "source": "shadow",
        "prompt": call.prompt.key,
        "version": run.version.number,
        "variant": run.kind,
        "primary": (binding.provider, binding.model),
    }
    started = time.perf_counter()
    try:
        completion = complete(binding=binding, messages=to_messages(rendered))
    except ProviderUnavailable as failure:
        # Answers the schema refused were billed all the same (the row keeps no cost of them).
        call_observe(
            **observed,
            completion=None,
            failure=failure,
            latency_ms=(time.perf_counter() - started) * 1000,
            cost=attempts_cost(failure.attempts),
        )
        last = failure.attempts[-1].outcome if failure.attempts else "no_targets"
        return _finish(
            run,
            status=ShadowRun.Status.ERROR,
            error_class=str(last),
            attempts=attempts_as_dicts(failure.attempts),
        )
    # Both sides redacted the same way, so an email in both answers still compares equal. An
    # answer that called tools compares (and is kept) as the JSON of its calls.
    output = answer_with_tool_calls(
        stored_output(completion.text, completion.parsed),
        stored_tool_calls(completion.tool_calls),
    )
    cost = completion_cost(completion)
    call_observe(
        **observed,
        completion=completion,
        failure=None,
        latency_ms=completion.latency_ms,
        cost=cost,
    )
    comparison = compare(
        answer_with_tool_calls(call.output, call.tool_calls),
        output,
        structured=binding.response_schema is not None
        or bool(call.tool_calls or completion.tool_calls),
    )
    return _finish(
        run,
        status=ShadowRun.Status.OK,
        provider=completion.provider,
        model=completion.model,
        latency_ms=completion.latency_ms,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost=cost,
        output=output,
        exact_match=comparison.exact_match,
        similarity=comparison.similarity,
        structure_diff=comparison.structure_diff,
        attempts=attempts_as_dicts(completion.attempts),
    )


def _finish(run: ShadowRun, *, detail: Exception | None = None, **fields: Any) -> ShadowRun:
    if detail is not None:
        logger.info("Shadow run %s: %s", run.pk, detail)
    for name, value in fields.items():
        setattr(run, name, value)
    run.finished_at = timezone.now()
    run.save(update_fields=[*fields, "finished_at"])
    return run


def shadow_run_timed_out(*, call_id: int, version: int, kind: str) -> int:
    """The job ran past its Celery time limit: its row, if still pending, is an error saying so.

    Called by the worker when the job was interrupted (soft limit) or its process killed (hard
    limit); a row that finished meanwhile is left as it is. Returns how many rows it changed."""
    changed = ShadowRun.objects.filter(
        call_id=call_id, version__number=version, kind=kind, status=ShadowRun.Status.PENDING
    ).update(status=ShadowRun.Status.ERROR, error_class=TIME_LIMIT, finished_at=timezone.now())
    if changed:
        logger.warning("Shadow run timed out: call=%s version=%s kind=%s", call_id, version, kind)
    return changed
