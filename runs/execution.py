"""Running a prompt: render the resolved version, call its model, record the call, queue shadows.

Three steps, so the run endpoint can stream: ``run_prepare`` (rendering and provider lookup: may
read the database, raises the registry's validation errors), ``run_call`` (the model call: network
only, no database, safe in a thread of its own), ``run_record`` (the call record, and the shadows
queued once it is committed). The run endpoints call the three in order.

The model call happens outside any transaction (STYLE R6): it may take seconds, and holding a
transaction (or a row lock) open across it would stall everything else waiting on the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from promptregistry.core.history import HistoryBlock, history_block
from promptregistry.core.snippets import SnippetLibrary

from registry.content import ModelBinding
from registry.guardrails import FALLBACK, FLAG, INPUT, OUTPUT, REFUSE, GuardrailPolicy
from registry.rendering import Sections, conversation_messages, to_messages, with_conversation
from releases.cache import DATABASE_OUTAGE, served_snippets
from releases.resolution import Resolution, version_render, version_variables_check

from . import outbox
from .budgets import budget_check, budget_spend_count
from .calls import (
    attempts_as_dicts,
    attempts_cost,
    call_insert,
    call_observe,
    stored_output,
    stored_tool_calls,
    subject_hash,
)
from .cancel import Cancellation
from .guardrails import (
    Triggered,
    counted,
    deciding,
    input_checks,
    output_checks,
    run_policy,
    tokens_check,
)
from .models import Call, Provider
from .moderation import RunModerator, moderation_prepare
from .payloads import payload_seal
from .provider_cache import PricesByModel, provider_cache
from .providers import (
    Attempt,
    Completion,
    Outcome,
    ProviderUnavailable,
    complete,
    reraise_time_limit,
)
from .redaction import redact
from .response_cache import (
    CacheHit,
    CachePlan,
    CacheRequest,
    cache_lookup,
    cache_plan,
    cache_store,
)
from .semantic_cache import SEMANTIC, SemanticPlan, semantic_lookup, semantic_plan, semantic_store
from .spool import record_lost, spool_keep
from .tracing import prompt_attributes, tracer, tracing_on

logger = logging.getLogger(__name__)

NO_GUARDRAILS = GuardrailPolicy()


@dataclass(frozen=True, slots=True)
class PreparedRun:
    resolution: Resolution
    # As the caller sent them, redacted where an input guardrail said so (shadows get the same:
    # no model sees what the policy took out).
    variables: Mapping[str, Any]
    rendered: Sections
    messages: list[dict[str, str]]
    binding: ModelBinding
    providers: Mapping[str, Provider]
    prices: PricesByModel  # every target's, so the record prices the call without a read
    # The request's trace context where it was prepared: a streamed run calls the model from a
    # thread of its own, whose spans must still be the request's children.
    trace_context: Context | None = None
    source: str = "run"  # for the run's span: run or playground
    # Messages the caller appended after the prompt's own (the OpenAI-compatible endpoints'):
    # in ``messages`` already, kept here for the record and the shadows.
    conversation: HistoryBlock | None = None
    # The API key that ran it (the run API's; None for the playground and a judge): what its
    # budget counts, and what its record names.
    run_by_key_id: int | None = None
    run_by_key_label: str = ""
    # The response cache this run reads first and writes after a complete answer (None: none).
    cache: CachePlan | None = None
    # The semantic cache, read after the exact one misses (runs.semantic_cache; None: none).
    semantic: SemanticPlan | None = None
    # The guardrails (runs.guardrails): the policy, what the input checks found (the messages
    # are already redacted where they said so), and the moderation of the answers.
    guardrails: GuardrailPolicy = NO_GUARDRAILS
    input_triggered: tuple[Triggered, ...] = ()
    moderate: RunModerator | None = None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What the model call gave: a completion, or the failure with every attempt."""

    completion: Completion | None
    failure: ProviderUnavailable | None
    started_at: datetime
    latency_ms: float
    # Answered from the response cache: ``completion`` is the cached answer, no model was called.
    cache: CacheHit | None = None
    # Why the semantic cache was skipped ("": it was not, or there is none): for the record.
    cache_skipped: str = ""
    # The guardrail checks that fired, input and output (runs.guardrails), and the one that
    # refused the run, if one did (then ``completion`` is the answer refused, or None when the
    # input was refused before any model call).
    guardrails: tuple[Triggered, ...] = ()
    refused: Triggered | None = None

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        if self.completion is not None:
            return self.completion.attempts
        return self.failure.attempts if self.failure is not None else ()

    @property
    def model_called(self) -> bool:
        """Whether a model was called (and paid): not for a cache hit, nor for a run an input
        guardrail refused or answered with its fallback."""
        return (
            self.cache is None
            and deciding([t for t in self.guardrails if t.stage == INPUT]) is None
        )


def run_prepare(
    *,
    resolution: Resolution,
    variables: Mapping[str, Any],
    snippets: SnippetLibrary | None = None,
    conversation: HistoryBlock | None = None,
    degraded: str = "",
    key_id: int | None = None,
    key_label: str = "",
    cache: CacheRequest | None = None,
) -> PreparedRun:
    """Render the version for the caller's variables; raises the registry's validation errors.
    Its includes serve what its environment serves now, unless ``snippets`` says otherwise (the
    playground renders as the workbench does). A ``conversation``
    (``registry.variables.conversation_block``) goes after every message the prompt renders.
    ``cache``: the caller's use of the version's response cache (None: the cache is not read,
    as for the playground).

    Raises ``DatabaseError`` when the database must be asked and cannot answer (``_RecordWrites``;
    ``degraded``: the release came from a copy nothing vouches for, Redis being out of reach,
    which could then not keep a record either).

    Given the API key that runs it (the run API), checks the budgets of the key, the prompt and
    the environment last, before any model is called: raises ``runs.budgets.BudgetExceeded``."""
    binding = ModelBinding.from_dict(resolution.version.model)
    guardrails = run_policy(
        binding.guardrails,
        resolution.release.environment_id,
        response_schema=binding.response_schema,
    )
    triggered: tuple[Triggered, ...] = ()
    checked = variables
    if guardrails:  # the caller's values checked, and redacted where the policy says, first
        # A body the version refuses (an undeclared name, a wrong type) is refused before its
        # values are scanned: the scan reads every string, so a large refused body costs nothing.
        if guardrails.stage(INPUT):
            version_variables_check(resolution.version, variables)
        verdict = input_checks(
            guardrails, variables, conversation_messages(conversation) if conversation else None
        )
        checked, triggered = verdict.variables, verdict.triggered
        if conversation is not None and verdict.conversation is not None:
            conversation = history_block(conversation[0], verdict.conversation)
    rendered = version_render(
        resolution.version,
        locale=resolution.locale,
        variables=checked,
        snippets=served_snippets(resolution.release) if snippets is None else snippets,
    )
    rendered = with_conversation(rendered, conversation)
    found = provider_cache.binding(binding)
    if degraded or records.must_check():
        _database_reachable()
    if key_id is not None:
        budget_check(
            key_id=key_id,
            prompt_id=resolution.release.prompt_id,
            environment_id=resolution.release.environment_id,
        )
    messages = to_messages(rendered)
    if guardrails:
        triggered += tuple(tokens_check(guardrails, messages))
    return PreparedRun(
        resolution=resolution,
        variables=checked,
        rendered=rendered,
        messages=messages,
        binding=binding,
        providers=found.providers,
        prices=found.prices,
        trace_context=otel_context.get_current(),
        conversation=conversation,
        run_by_key_id=key_id,
        run_by_key_label=key_label,
        cache=cache_plan(
            binding=binding,
            request=cache,
            prompt=resolution.release.prompt,
            version_id=resolution.version.pk,
            content_hash=resolution.version.content_hash,
            environment=resolution.release.environment,
            locale=resolution.locale,
            messages=messages,
            guardrails=guardrails.identity,
        ),
        semantic=semantic_plan(
            binding=binding,
            request=cache,
            providers=found.providers,
            prompt=resolution.release.prompt,
            version_id=resolution.version.pk,
            content_hash=resolution.version.content_hash,
            environment=resolution.release.environment,
            locale=resolution.locale,
            messages=messages,
            guardrails=guardrails.identity,
        ),
        guardrails=guardrails,
        input_triggered=triggered,
        # What the moderation checks need, read now: the moderation runs in the call's thread.
        moderate=(
            moderation_prepare(
                policy=guardrails,
                environment=resolution.release.environment,
                locale=resolution.requested_locale,
            )
            if guardrails
            else None
        ),
    )


class _RecordWrites:
    """Whether a run must ask the database before its model call (decision 0046).

    A model call is paid for, so one whose record could not be written is refused before it is
    made (a 503), not kept in Redis by the thousand through an outage. But asking costs a round
    trip on every run, and the record's own write asks anyway (Django's health check, after the
    answer): so the database is asked before the call only when a record could not be kept
    otherwise (no Redis: the embedded default; Redis out of reach: ``run_prepare``'s
    ``degraded``), or while this process's last record failed to reach it. At the start of an
    outage, the runs already under way in a process when it learns of it have their records
    kept in Redis (runs.spool); from then on it refuses until the database answers again (each
    refusal asks). Shared by the process's threads."""

    def __init__(self) -> None:
        self.failing = False

    def must_check(self) -> bool:
        return self.failing or not settings.REDIS_URL

    def written(self) -> None:
        self.failing = False

    def failed(self) -> None:
        self.failing = True


records = _RecordWrites()


def _database_reachable() -> None:
    """Raises ``DatabaseError`` when the database cannot be reached. The check is Django's own
    health check of a connection kept from an earlier request (a ``SELECT 1`` once per request,
    which the record's write would otherwise pay), and a new connection is its own proof; a
    second ``SELECT 1`` here would be a round trip for nothing."""
    if connection.health_check_enabled:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    else:
        with connection.cursor() as cursor:  # health checks turned off: ask
            cursor.execute("SELECT 1")
    records.written()  # it answers: the next runs need not ask before their calls


def run_call(
    prepared: PreparedRun,
    *,
    on_token: Callable[[str], None] | None = None,
    cancel: Cancellation | None = None,
    on_tool_call: Callable[[dict[str, Any]], None] | None = None,
) -> CallOutcome:
    """The model call, with the binding's retries and fallbacks. No database: thread-safe.

    Never raises an Exception: whatever goes wrong is an outcome the caller answers and records
    (a streamed run's thread that raised would leave its client waiting for an end that never
    comes)."""
    started_at = timezone.now()
    started = time.perf_counter()
    triggered = prepared.input_triggered
    if (decided := deciding(triggered)) is not None:  # an input guardrail decides: no model call
        latency_ms = (time.perf_counter() - started) * 1000
        if decided.action == FALLBACK:
            completion = _fallback(prepared, latency_ms)
            _replay(completion, on_token=on_token, on_tool_call=None)
            return CallOutcome(completion, None, started_at, latency_ms, guardrails=triggered)
        return CallOutcome(
            None, None, started_at, latency_ms, guardrails=triggered, refused=decided
        )
    if prepared.cache is not None and (
        found := cache_lookup(prepared.cache)
    ):  # answered without a model call
        completion, hit, latency_ms = found
        _replay(completion, on_token=on_token, on_tool_call=on_tool_call)
        return CallOutcome(
            completion, None, started_at, latency_ms, cache=hit, guardrails=triggered
        )
    similar = semantic_lookup(prepared.semantic) if prepared.semantic is not None else None
    if similar is not None and similar.completion is not None:
        assert similar.similarity is not None
        _replay(similar.completion, on_token=on_token, on_tool_call=on_tool_call)
        hit = CacheHit(SEMANTIC, similar.similarity)
        latency_ms = similar.completion.latency_ms
        return CallOutcome(
            similar.completion, None, started_at, latency_ms, cache=hit, guardrails=triggered
        )
    # Output checks that may change the answer hold a stream's text until they have read it
    # whole: the caller never gets tokens a check then takes back (docs/guardrails.md).
    held = on_token is not None and _output_rewritable(prepared.guardrails)
    skipped = similar.skipped if similar is not None else ""
    resolution = prepared.resolution
    attributes: dict[str, Any] = {}
    span: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if tracing_on():
        attributes = prompt_attributes(
            prompt=resolution.release.prompt,
            version=resolution.version.number,
            environment=resolution.release.environment,
            revision=resolution.release.revision,
            variant=resolution.assignment.label,
            bucket=resolution.assignment.bucket,
            source=prepared.source,
        )
        span = tracer.start_as_current_span(
            f"run {resolution.release.prompt}",
            context=prepared.trace_context,
            attributes=attributes,
        )
    try:
        with span:
            completion = complete(
                binding=prepared.binding,
                messages=prepared.messages,
                on_token=None if held else on_token,
                providers=prepared.providers,
                cancel=cancel,
                on_tool_call=None if held else on_tool_call,
                span_attributes=attributes,
            )
    except ProviderUnavailable as failure:
        latency_ms = (time.perf_counter() - started) * 1000
        return CallOutcome(
            None, failure, started_at, latency_ms, cache_skipped=skipped, guardrails=triggered
        )
    except Exception as exc:
        reraise_time_limit(exc)
        # ``complete`` turns every attempt's failure into an outcome; this is the last guard,
        # for a fault in the walk itself.
        logger.exception("The model call of %s failed unexpectedly", prepared.binding.model)
        return failed_outcome(
            prepared,
            outcome=Outcome.UNEXPECTED,
            detail=f"Unexpected {type(exc).__name__}.",
            started_at=started_at,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    decided, latency_ms, fired = None, completion.latency_ms, ()
    if prepared.guardrails.stage(OUTPUT):
        verdict = output_checks(prepared.guardrails, completion, moderate=prepared.moderate)
        completion, fired = verdict.completion, verdict.triggered
        triggered, decided = triggered + fired, deciding(fired)
        # The caller waited for the checks too (a moderation's round trip): the run's latency.
        latency_ms = (time.perf_counter() - started) * 1000
    if held and (decided is None or decided.action != REFUSE):
        _replay(completion, on_token=on_token, on_tool_call=on_tool_call)
    outcome = CallOutcome(
        completion,
        None,
        started_at,
        latency_ms,
        cache_skipped=skipped,
        guardrails=triggered,
        refused=decided if decided is not None and decided.action == REFUSE else None,
    )
    # Only an answer no output check fired on is kept: a refused one or the fallback is not the
    # model's answer; one an output check redacted or flagged would be served by a hit without
    # the checks that shaped it (a hit runs no output check); one no moderation could check would
    # be served unmoderated.
    if fired:
        return outcome
    # A completion is a whole, valid answer: a failed call, an answer its schema refused and a
    # cancelled stream are failures, so never stored. Stored as the output checks left it.
    if prepared.cache is not None:
        cache_store(prepared.cache, completion)
    if prepared.semantic is not None and similar is not None and similar.vector is not None:
        semantic_store(prepared.semantic, similar.vector, completion)
    return outcome


def _output_rewritable(policy: GuardrailPolicy) -> bool:
    return any(c.action != FLAG for c in policy.stage(OUTPUT))


def _fallback(prepared: PreparedRun, latency_ms: float) -> Completion:
    """The policy's fallback text as the answer, no model called."""
    return Completion(
        provider=prepared.binding.provider,
        model=prepared.binding.model,
        text=prepared.guardrails.fallback,
        parsed=prepared.guardrails.fallback_parsed,
        input_tokens=0,
        output_tokens=0,
        latency_ms=latency_ms,
        time_to_first_token_ms=None,
        attempts=(),
    )


def _replay(
    completion: Completion,
    *,
    on_token: Callable[[str], None] | None,
    on_tool_call: Callable[[dict[str, Any]], None] | None,
) -> None:
    """A cached answer streamed as the model's would be: its text as one token, each tool call
    as one whole delta (``{index, id, name, arguments}``, the arguments as JSON text)."""
    if on_token is not None and completion.text:
        on_token(completion.text)
    if on_tool_call is not None:
        for index, call in enumerate(completion.tool_calls):
            on_tool_call(
                {
                    "index": index,
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "arguments": json.dumps(call.get("arguments"), ensure_ascii=False),
                }
            )


def failed_outcome(
    prepared: PreparedRun, *, outcome: Outcome, detail: str, started_at: datetime, latency_ms: float
) -> CallOutcome:
    """A failed call whose attempts are unknown (the walk itself failed, or never reported back):
    one attempt on the primary, with what is known."""
    binding = prepared.binding
    attempt = Attempt(binding.provider, binding.model, outcome, detail, latency_ms)
    return CallOutcome(None, ProviderUnavailable([attempt]), started_at, latency_ms)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """What became of a call's record: written (``call``), kept in Redis for the worker to write
    (``kept`` without a ``call``: runs.spool), or lost (neither). ``shadows``: the shadow jobs
    queued, which need the written row."""

    call: Call | None
    kept: bool
    shadows: tuple[int, ...] = ()


def run_record(
    *,
    prepared: PreparedRun,
    outcome: CallOutcome,
    subject: str | None,
    request_id: str,
    source: Call.Source = Call.Source.RUN,
) -> RecordedCall:
    """Record the call (``source``: the run API's, or the playground's, which no release served
    and so names no release revision); once committed, queue its shadows. Never raises for a
    record that cannot be written: the model has answered (and been paid for) already.

    The database out of reach (a failover, a connection lost mid-run): the record is kept in
    Redis and written by the worker once the database is back (runs.spool), unshadowed. The
    database refusing the row for what it holds, or a text no UTF-8 encoder can write (a NUL and
    a lone surrogate are stored as U+FFFD before that, ``runs.calls.stored_output``): it would be
    refused again, so it is lost, logged at ERROR with the request id and counted."""
    call = _call_build(
        prepared=prepared, outcome=outcome, subject=subject, request_id=request_id, source=source
    )
    # Counted here, once, whatever becomes of the record: the model was paid either way, and the
    # spool's drain (which may meet a record that was written after all) never counts again.
    budget_spend_count(call)
    try:
        call_insert(call)
    except DATABASE_OUTAGE:
        logger.warning("The database could not take the call %s", request_id, exc_info=True)
        records.failed()
        return RecordedCall(None, kept=spool_keep(call))
    except (DatabaseError, UnicodeEncodeError):
        logger.exception("The database refused the call %s", request_id)
        record_lost(request_id)
        return RecordedCall(None, kept=False)
    records.written()
    # No shadow for a run no model answered (an input guardrail's fallback): nothing to compare.
    shadows = (
        prepared.resolution.shadow
        if outcome.completion is not None and outcome.model_called
        else ()
    )
    if shadows:
        _shadows_queue(call=call, prepared=prepared, shadows=shadows)
    return RecordedCall(call, kept=True, shadows=shadows)


def run_cost(prepared: PreparedRun, outcome: CallOutcome) -> Decimal | None:
    """What the call cost, every answered attempt at the prices held with the providers; a cache
    hit nothing (the call that stored the answer paid for it), nor a run an input guardrail
    decided."""
    if not outcome.model_called:
        return Decimal(0)
    return attempts_cost(outcome.attempts, prepared.prices)


def _call_build(
    *,
    prepared: PreparedRun,
    outcome: CallOutcome,
    subject: str | None,
    request_id: str,
    source: Call.Source,
) -> Call:
    """The call's record, counted in the metrics; not yet written."""
    resolution = prepared.resolution
    release = resolution.release
    completion, failure = outcome.completion, outcome.failure
    fields: dict[str, Any] = {}
    if outcome.refused is not None and completion is None:  # refused before any model call
        fields = {
            "status": Call.Status.REFUSED,
            "provider": prepared.binding.provider,
            "model": prepared.binding.model,
            "error_class": _refused_class(outcome.refused),
            "input_tokens": 0,
            "output_tokens": 0,
            "cost": Decimal(0),
        }
    elif completion is not None:
        fields = {
            "status": Call.Status.OK,
            "provider": completion.provider,
            "model": completion.model,
            "time_to_first_token_ms": completion.time_to_first_token_ms,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cost": run_cost(prepared, outcome),
            # A fallback in plain text (an environment's, under a version with a schema) is not.
            "schema_valid": (
                completion.parsed is not None
                if prepared.binding.response_schema is not None
                else None
            ),
            "output": stored_output(completion.text, completion.parsed),
            "tool_calls": stored_tool_calls(completion.tool_calls),
        }
        if outcome.cache is not None:
            fields |= {"cache": outcome.cache.kind, "cache_similarity": outcome.cache.similarity}
        if outcome.refused is not None:  # the answer an output guardrail refused: kept, redacted
            fields |= {
                "status": Call.Status.REFUSED,
                "error_class": _refused_class(outcome.refused),
                "schema_valid": None,
            }
    else:
        assert failure is not None
        last = failure.attempts[-1] if failure.attempts else None
        fields = {
            "status": Call.Status.ERROR,
            "provider": prepared.binding.provider,
            "model": prepared.binding.model,
            "error_class": str(last.outcome) if last else "no_targets",
            # Answers the schema refused were billed all the same.
            "input_tokens": sum(a.input_tokens for a in failure.attempts),
            "output_tokens": sum(a.output_tokens for a in failure.attempts),
            "cost": run_cost(prepared, outcome),
            # Every target answered, none validly: the schema is what failed.
            "schema_valid": (
                False
                if prepared.binding.response_schema is not None
                and last is not None
                and last.outcome == "schema_invalid"
                else None
            ),
        }
    if outcome.cache_skipped:
        fields["cache_skipped"] = outcome.cache_skipped
    if outcome.guardrails:
        fields["guardrails"] = [t.as_dict() for t in outcome.guardrails]
        counted(outcome.guardrails, release.prompt)
    # Counted whether or not the record can be written: the model was called, and paid. A cache
    # hit called no model: runs.response_cache counted it; nor did a run an input guardrail
    # decided.
    if outcome.model_called:
        call_observe(
            source=str(source),
            prompt=release.prompt,
            version=resolution.version.number,
            variant=resolution.assignment.label,
            primary=(prepared.binding.provider, prepared.binding.model),
            completion=completion,
            failure=failure,
            latency_ms=outcome.latency_ms,
            cost=fields["cost"],
        )
    # Written by one INSERT in autocommit, the record's only round trip: the rows it points at
    # come with the served release, the prices with the providers. A transaction around it would
    # add a BEGIN and a COMMIT for a single statement that is atomic anyway.
    return Call(
        request_id=request_id,
        source=source,
        created_at=outcome.started_at,
        prompt_id=release.prompt_id,
        version_id=resolution.version.pk,
        environment_id=release.environment_id,
        variant=resolution.assignment.label,
        sticky=resolution.assignment.sticky,
        release_revision=None if source == Call.Source.PLAYGROUND else release.revision,
        locale=resolution.locale,
        subject_hash=subject_hash(subject) if resolution.assignment.sticky else "",
        latency_ms=outcome.latency_ms,
        inputs=redact(dict(prepared.variables)),
        conversation=(
            redact(conversation_messages(prepared.conversation)) if prepared.conversation else []
        ),
        attempts=attempts_as_dicts(outcome.attempts),
        run_by_key_id=prepared.run_by_key_id,
        run_by_key_label=prepared.run_by_key_label,
        model_called=outcome.model_called,
        **fields,
    )


def _refused_class(refused: Triggered) -> str:
    return f"guardrail_{refused.stage}_{refused.check}"


def _shadows_queue(*, call: Call, prepared: PreparedRun, shadows: tuple[int, ...]) -> None:
    """One shadow job per shadow version, and on a sample of calls the noise floor: the version
    that answered live, run again on the same inputs. Queued in memory (``outbox``), never waited
    for: a broker or worker that is down must not slow or fail the live call."""
    # The variables go unredacted (the shadow must answer what live answered), so sealed: the
    # broker holds ciphertext that expires (runs.payloads, decision 0016).
    sealed = payload_seal(
        variables=prepared.variables,
        locale=prepared.resolution.requested_locale,
        conversation=(
            conversation_messages(prepared.conversation) if prepared.conversation else ()
        ),
    )
    base = {"call_id": call.pk, "payload": sealed}
    jobs = [{**base, "version": number, "kind": "candidate"} for number in shadows]
    if random.uniform(0, 100) < settings.SHADOW_NOISE_FLOOR_PERCENT:
        jobs.append({**base, "version": prepared.resolution.version.number, "kind": "noise"})
    # After commit: the worker must find the call it compares with.
    transaction.on_commit(lambda: [outbox.shadow_enqueue(job) for job in jobs])
