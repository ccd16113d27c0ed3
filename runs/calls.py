"""What every call record shares, however it arrived (run here, or reported by a service)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connections

from config.metrics import MODEL_CALLS, MODEL_COST, MODEL_DURATION, MODEL_FIRST_TOKEN, MODEL_TOKENS
from registry.strictjson import storable

from .models import Call, ModelPrice
from .redaction import redact, redact_text

if TYPE_CHECKING:
    from .providers import Attempt, Completion, ProviderUnavailable

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class KeyRef:
    """The API key a report or a feedback came with, as a call record keeps it (runs may not
    import api, which owns the keys): its id, and its name at the time."""

    id: int
    label: str


# The longest subject a call may name (an email is at most 254): the same on the runtime path
# (resolve, render, run) and in reported events, so whatever the runtime path took, an SDK can
# report back. Only its hash is stored, so the bound is the contract's, not a column's.
SUBJECT_MAX_CHARS = 256


def subject_hash(subject: str | None) -> str:
    """A keyed hash of the subject: calls by one user can be grouped, the user cannot be read back.

    Keyed (HMAC with a key derived from ``SECRET_KEY``) because subjects are often small numbers or
    emails, which a plain hash would give away to anyone who can guess them. Empty for no subject.
    """
    if not subject:
        return ""
    key = hashlib.sha256(b"promptregistry.subject:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()


def call_cost(
    *, provider: str, model: str, input_tokens: int | None, output_tokens: int | None
) -> Decimal | None:
    """The call's cost from the provider's price table; None when the model has no price."""
    if input_tokens is None and output_tokens is None:
        return None
    price = ModelPrice.objects.filter(provider__name=provider, model=model).first()
    if price is None:
        return None
    return price_cost(price, input_tokens=input_tokens, output_tokens=output_tokens)


def completion_cost(completion: Any) -> Decimal | None:
    """``attempts_cost`` of a provider's answer (``runs.providers.Completion``)."""
    return attempts_cost(completion.attempts)


def billed_models(attempts: Sequence[Any]) -> dict[tuple[str, str], list[int]]:
    """The (provider, model) pairs that answered (``runs.providers.Attempt``), with their input
    and output tokens added up: what ``attempts_cost`` prices."""
    tokens: dict[tuple[str, str], list[int]] = {}
    for attempt in attempts:
        if attempt.input_tokens or attempt.output_tokens:
            counts = tokens.setdefault((attempt.provider, attempt.model), [0, 0])
            counts[0] += attempt.input_tokens
            counts[1] += attempt.output_tokens
    return tokens


def attempts_cost(
    attempts: Sequence[Any], prices: Mapping[tuple[str, str], ModelPrice | None] | None = None
) -> Decimal | None:
    """What every answered attempt cost (``runs.providers.Attempt``), each at its own model's
    price; None when nothing was answered or a model that answered has no price (a partial sum
    would read as the whole cost). ``prices``: those already read, by (provider, model), None for
    a model known to have none; the others are looked up."""
    tokens = billed_models(attempts)
    total = Decimal(0)
    for (provider, model), (given, taken) in tokens.items():
        if prices is not None and (provider, model) in prices:
            price = prices[provider, model]
            cost = (
                None
                if price is None
                else price_cost(price, input_tokens=given, output_tokens=taken)
            )
        else:
            cost = call_cost(
                provider=provider, model=model, input_tokens=given, output_tokens=taken
            )
        if cost is None:
            return None
        total += cost
    return total if tokens else None


def price_cost(
    price: ModelPrice, *, input_tokens: int | None, output_tokens: int | None
) -> Decimal:
    """The cost of the tokens at ``price`` (per million input and output tokens)."""
    return (
        Decimal(input_tokens or 0) * price.input_per_million
        + Decimal(output_tokens or 0) * price.output_per_million
    ) / MILLION


def stored_output(text: str, parsed: Any = None) -> str:
    """An answer as a call record keeps it: redacted. A schema answer (``parsed``) is redacted as
    a value and stored as JSON, so it still parses and compares as JSON (a card number written as
    a bare JSON number would otherwise become text that is no longer JSON)."""
    if parsed is None:
        return storable(redact_text(text))
    return json.dumps(redact(parsed), ensure_ascii=False, sort_keys=True)


def stored_tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls as a call record keeps them: the arguments redacted as a value, like a schema
    answer (``stored_output``), so they stay a JSON object."""
    return [{"id": c["id"], "name": c["name"], "arguments": redact(c["arguments"])} for c in calls]


def attempts_as_dicts(attempts: Sequence[Attempt]) -> list[dict[str, Any]]:
    """Every attempt of a call as its record and the run API show it."""
    return [
        {
            "provider": a.provider,
            "model": a.model,
            "outcome": str(a.outcome),
            "detail": a.detail,
            "latency_ms": round(a.latency_ms, 1),
            "input_tokens": a.input_tokens,
            "output_tokens": a.output_tokens,
        }
        for a in attempts
    ]


def call_observe(
    *,
    source: str,
    prompt: str,
    version: int,
    variant: str,
    primary: tuple[str, str],
    completion: Completion | None,
    failure: ProviderUnavailable | None,
    latency_ms: float,
    cost: Decimal | None,
) -> None:
    """Counts one model call in the metrics (``config.metrics``), whoever made it: ``source`` is
    ``run`` or ``playground`` (``Call.Source``), ``shadow``, ``eval`` or ``judge``. As its call
    record would: the provider and model that answered, or, failed, the binding's ``primary``
    with the last attempt's outcome; the tokens and cost of every answered attempt. Never a
    subject, a request id or a key: those would make a series per caller."""
    if completion is not None:
        provider, model, outcome = completion.provider, completion.model, "ok"
        tokens = (completion.input_tokens, completion.output_tokens)
        first_token_ms = completion.time_to_first_token_ms
    else:
        assert failure is not None
        provider, model = primary
        outcome = str(failure.attempts[-1].outcome) if failure.attempts else "no_targets"
        tokens = (
            sum(a.input_tokens for a in failure.attempts),
            sum(a.output_tokens for a in failure.attempts),
        )
        first_token_ms = None
    labels = (source, prompt, str(version), variant, provider, model)
    timed = (source, prompt, str(version), provider, model)
    MODEL_CALLS.labels(*labels, outcome).inc()
    MODEL_DURATION.labels(*timed).observe(latency_ms / 1000)
    if first_token_ms is not None:
        MODEL_FIRST_TOKEN.labels(*timed).observe(first_token_ms / 1000)
    for direction, count in zip(("input", "output"), tokens, strict=True):
        if count:
            MODEL_TOKENS.labels(*labels, direction).inc(count)
    if cost:
        MODEL_COST.labels(*labels).inc(float(cost))


def call_insert(call: Call, *, using: str = "default") -> Call:
    """Writes a new call record in one ``INSERT … RETURNING id``, the statement built once from
    the model's columns (so a new field needs nothing here) and every value prepared by its field
    as ``save`` would. The run path's record, without the ORM's save machinery around a single
    statement: that machinery cost more than the statement itself (issue 14, item 7). No signal
    is sent: nothing listens for a call's save."""
    connection = connections[using]
    fields = _insert_fields()
    values = [f.get_db_prep_save(f.pre_save(call, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection), values)
        call.pk = (
            cursor.fetchone()[0]
            if connection.features.can_return_columns_from_insert
            else cursor.lastrowid
        )
    call._state.adding, call._state.db = False, using
    return call


def _insert_fields() -> list[Any]:
    return [f for f in Call._meta.concrete_fields if not f.primary_key]


_INSERT_SQL: dict[str, str] = {}


def _insert_sql(connection: Any) -> str:
    sql = _INSERT_SQL.get(connection.vendor)
    if sql is None:
        name = connection.ops.quote_name
        columns = ", ".join(name(f.column) for f in _insert_fields())
        placeholders = ", ".join(["%s"] * len(_insert_fields()))
        sql = f"INSERT INTO {name(Call._meta.db_table)} ({columns}) VALUES ({placeholders})"
        if connection.features.can_return_columns_from_insert:
            sql += f" RETURNING {name(Call._meta.pk.column)}"
        _INSERT_SQL[connection.vendor] = sql
    return sql
