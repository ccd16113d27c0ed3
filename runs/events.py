"""Outcomes reported by services that call the model themselves (``POST /api/v1/events``).

A batch holds up to ``MAX_EVENTS`` outcomes. Each is checked on its own: the valid ones are stored,
the others come back with every problem found, so one bad event never costs a service the rest of
its batch. Storage is idempotent by the service's ``event_id`` (a unique column): a retried batch
stores nothing twice and answers the ids it had stored as duplicates.

Every look-up is done for the whole batch at once (prompts, versions, environments, prices), so a
batch costs the same few queries whatever its size. Inputs and outputs are stored redacted and the
subject only as its keyed hash, exactly as for calls the registry runs itself.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.errors import LocaleInvalid, Problem, RegistryError
from registry.labels import id_valid
from registry.locales import locale_normalize
from registry.models import PROMPT_KEY_MAX, Prompt, PromptVersion
from releases.models import Environment

from .calls import SUBJECT_MAX_CHARS, KeyRef, price_cost, subject_hash
from .models import Call, ModelPrice
from .redaction import redact, redact_text

logger = logging.getLogger(__name__)

MAX_EVENTS = 1000
# Clocks drift: an event stamped a little ahead of ours is a skewed clock, not a bad event.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# PostgreSQL's ``integer``, which PositiveIntegerField maps to.
MAX_INTEGER = 2_147_483_647
# ``Call.cost`` is DECIMAL(14, 8): below a million, to the hundred-millionth.
COST_PLACES = Decimal("0.00000001")
MAX_COST = Decimal(1_000_000)
INSERT_BATCH_SIZE = 500

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class EventBatchTooLarge(RegistryError):
    """More events than one request may carry; nothing of the batch is stored."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.limit = MAX_EVENTS
        super().__init__(f"The batch holds {count} events; send at most {MAX_EVENTS} per request.")


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event that was not stored. ``event_id`` is the id it was sent with, when that id was
    valid; the problems' pointers lead into ``{"events": [...]}``."""

    index: int
    event_id: str | None
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """``accepted``: the ids stored by this batch; ``duplicates``: the ids that were stored
    already, or came earlier in the same batch (each id once); ``rejected``: the rest."""

    accepted: tuple[str, ...]
    duplicates: tuple[str, ...]
    rejected: tuple[RejectedEvent, ...]


class _Invalid(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --- Field rules: each takes the value sent (never None) and returns the value to store ----------


def _utf8(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which no UTF-8 column can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid("invalid_unicode", "The text holds a lone surrogate.") from exc
    return text


def _text(value: Any, *, max_length: int | None = None, allow_blank: bool = True) -> str:
    if not isinstance(value, str):
        raise _Invalid("wrong_type", "Send a string.")
    if not allow_blank and not value.strip():
        raise _Invalid("blank", "This may not be blank.")
    if max_length is not None and len(value) > max_length:
        raise _Invalid("too_long", f"At most {max_length} characters.")
    return _utf8(value)


def _event_id(value: Any) -> str:
    text = _text(value, max_length=100, allow_blank=False)
    if not id_valid(text):
        raise _Invalid(
            "not_printable", "The event id may not hold control or invisible characters."
        )
    return text


def _number(value: Any, *, minimum: float, maximum: float | None = None) -> float:
    # bool is an int to Python, never a number to a client.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("wrong_type", "Send a number.")
    try:
        number = float(value)
    except OverflowError as exc:  # an integer beyond any float
        raise _Invalid("out_of_range", "The number is too large.") from exc
    if number < minimum or (maximum is not None and number > maximum):
        bounds = (
            f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        )
        raise _Invalid("out_of_range", f"Send a number {bounds}.")
    return number


def _integer(value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("wrong_type", "Send a whole number.")
    if not minimum <= value <= MAX_INTEGER:
        raise _Invalid("out_of_range", f"Send a whole number between {minimum} and {MAX_INTEGER}.")
    return value


def _cost(value: Any) -> Decimal:
    _number(value, minimum=0)
    try:
        cost = Decimal(str(value)).quantize(COST_PLACES)
    except InvalidOperation as exc:  # too many digits to quantize
        raise _Invalid("out_of_range", f"Send a cost below {MAX_COST}.") from exc
    if cost >= MAX_COST:
        raise _Invalid("out_of_range", f"Send a cost below {MAX_COST}.")
    return cost


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("wrong_type", "Send true or false.")
    return value


def _status(value: Any) -> Call.Status:
    if value not in Call.Status.values:
        raise _Invalid("invalid_choice", f"Send one of: {', '.join(Call.Status.values)}.")
    return Call.Status(value)


def _locale(value: Any) -> str:
    try:
        return locale_normalize(value)
    except LocaleInvalid as exc:
        raise _Invalid("invalid_locale", exc.message) from exc


def _inputs(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid("wrong_type", "Send an object: the variables by name.")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid("invalid_unicode", "A text in the inputs holds a lone surrogate.") from exc
    return value


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise _Invalid(
            "invalid_datetime", "Send an RFC 3339 date-time with an offset: 2025-05-01T12:00:00Z."
        )
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:  # well formed, impossible: month 13, 25 o'clock
        raise _Invalid("invalid_datetime", f"There is no such time: {exc}.") from exc


_REQUIRED = object()
_NO_VALUE = object()

# name -> (rule, default). ``_REQUIRED`` fields must be present and not null; for the others,
# null is the same as leaving the field out.
_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "event_id": (_event_id, _REQUIRED),
    "prompt": (partial(_text, max_length=PROMPT_KEY_MAX, allow_blank=False), _REQUIRED),
    "version": (partial(_integer, minimum=1), _REQUIRED),
    "environment": (partial(_text, max_length=50, allow_blank=False), _REQUIRED),
    "status": (_status, _REQUIRED),
    "occurred_at": (_timestamp, _NO_VALUE),
    "variant": (partial(_text, max_length=64), ""),
    "sticky": (_boolean, _NO_VALUE),
    "subject": (partial(_text, max_length=SUBJECT_MAX_CHARS), ""),
    "locale": (_locale, ""),
    "request_id": (partial(_text, max_length=100), _NO_VALUE),
    "release_revision": (partial(_integer, minimum=0), None),
    "provider": (partial(_text, max_length=63), ""),
    "model": (partial(_text, max_length=200), ""),
    "latency_ms": (partial(_number, minimum=0), None),
    "time_to_first_token_ms": (partial(_number, minimum=0), None),
    "input_tokens": (partial(_integer, minimum=0), None),
    "output_tokens": (partial(_integer, minimum=0), None),
    "cost": (_cost, None),
    "error_class": (partial(_text, max_length=100), ""),
    "feedback": (partial(_number, minimum=-1, maximum=1), None),
    "schema_valid": (_boolean, None),
    "inputs": (_inputs, _NO_VALUE),
    "output": (_text, ""),
}


@dataclass(slots=True)
class _Checked:
    """One event on its way through: the values parsed so far and the problems found."""

    index: int
    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def pointer(self, name: str = "") -> str:
        return f"/events/{self.index}" + (f"/{name}" if name else "")

    def refuse(self, name: str, code: str, detail: str) -> None:
        self.problems.append(Problem(code, detail, self.pointer(name)))


def _parse(index: int, event: Any, *, now: datetime) -> _Checked:
    """Shape and values of one event, without the database."""
    checked = _Checked(index)
    if not isinstance(event, dict):
        checked.problems.append(Problem("wrong_type", "Send an event object.", checked.pointer()))
        return checked
    for name in sorted(event.keys() - _FIELDS.keys()):
        token = name.replace("~", "~0").replace("/", "~1")
        checked.refuse(token, "unknown_field", f"Unknown field; known: {', '.join(_FIELDS)}.")
    for name, (rule, default) in _FIELDS.items():
        value = event.get(name)
        if value is None:
            if default is _REQUIRED:
                checked.refuse(name, "required", "This field is required.")
            elif default is not _NO_VALUE:
                checked.values[name] = default
            continue
        try:
            checked.values[name] = rule(value)
        except _Invalid as exc:
            checked.refuse(name, exc.code, exc.detail)
    occurred_at = checked.values.get("occurred_at")
    if occurred_at is not None:
        if occurred_at > now + MAX_CLOCK_SKEW:
            checked.refuse("occurred_at", "in_the_future", "The event lies in the future.")
        elif occurred_at < now - timedelta(days=settings.CALL_RETENTION_DAYS):
            checked.refuse(
                "occurred_at",
                "too_old",
                f"Calls are kept {settings.CALL_RETENTION_DAYS} days; this one is older.",
            )
    return checked


@dataclass(frozen=True, slots=True)
class _References:
    """What the batch names, looked up once for all its events."""

    prompts: dict[str, int]
    versions: dict[tuple[int, int], tuple[int, bool]]  # (prompt id, number) -> (id, committed)
    environments: dict[str, int]
    prices: dict[tuple[str, str], ModelPrice]

    @classmethod
    def load(cls, events: list[_Checked]) -> _References:
        values = [e.values for e in events]
        keys = {v["prompt"] for v in values if "prompt" in v}
        numbers = {v["version"] for v in values if "version" in v}
        names = {v["environment"] for v in values if "environment" in v}
        providers = {v["provider"] for v in values if v.get("provider") and v.get("model")}
        models = {v["model"] for v in values if v.get("provider") and v.get("model")}
        # An empty ``__in`` runs no query at all, so a batch with nothing valid costs none.
        prompts = dict(Prompt.objects.filter(key__in=keys).values_list("key", "pk"))
        versions = PromptVersion.objects.filter(
            prompt_id__in=prompts.values(), number__in=numbers
        ).values_list("prompt_id", "number", "pk", "status")
        prices = ModelPrice.objects.filter(
            provider__name__in=providers, model__in=models
        ).select_related("provider")
        environments = Environment.objects.filter(name__in=names).values_list("name", "pk")
        return cls(
            prompts=prompts,
            versions={
                (prompt, number): (pk, status == PromptVersion.Status.COMMITTED)
                for prompt, number, pk, status in versions
            },
            environments=dict(environments),
            prices={(price.provider.name, price.model): price for price in prices},
        )


def _resolve(
    checked: _Checked, refs: _References, allowed_environments: Collection[str] | None
) -> None:
    """Checks what the event names against the database, and records the ids it resolved to."""
    values = checked.values
    if "environment" in values:
        name = values["environment"]
        if allowed_environments is not None and name not in allowed_environments:
            checked.refuse(
                "environment",
                "environment_forbidden",
                f"The key is limited to {', '.join(sorted(allowed_environments))}.",
            )
        elif name not in refs.environments:
            checked.refuse("environment", "unknown_environment", f"No environment {name!r}.")
        else:
            values["environment_id"] = refs.environments[name]
    if "prompt" not in values:
        return
    prompt_id = refs.prompts.get(values["prompt"])
    if prompt_id is None:
        checked.refuse("prompt", "unknown_prompt", f"No prompt {values['prompt']!r}.")
        return
    values["prompt_id"] = prompt_id
    if "version" not in values:
        return
    version = refs.versions.get((prompt_id, values["version"]))
    if version is None:
        checked.refuse("version", "unknown_version", "The prompt has no version with that number.")
    elif not version[1]:
        checked.refuse("version", "version_not_committed", "That version is a draft.")
    else:
        values["version_id"] = version[0]


def _price(checked: _Checked, refs: _References) -> None:
    """Fills a missing cost in from the model's price, when the event names a priced model and
    tokens, from the prices loaded with the batch (``call_cost`` would look each one up)."""
    values = checked.values
    price = refs.prices.get((values["provider"], values["model"]))
    tokens = (values["input_tokens"], values["output_tokens"])
    if values["cost"] is not None or price is None or tokens == (None, None):
        return
    cost = price_cost(price, input_tokens=tokens[0], output_tokens=tokens[1])
    if cost >= MAX_COST:  # the column's bound: absurd token counts would overflow it
        checked.refuse(
            "cost", "out_of_range", f"The tokens at the model's price cost {MAX_COST} or more."
        )
    else:
        values["cost"] = cost.quantize(COST_PLACES)


def _call(values: dict[str, Any], *, now: datetime, key: KeyRef | None) -> Call:
    subject = values["subject"]
    vouched = values["feedback"] is not None and key is not None
    return Call(
        event_id=values["event_id"],
        source=Call.Source.REPORTED,
        request_id=values.get("request_id") or values["event_id"],
        created_at=values.get("occurred_at", now),
        prompt_id=values["prompt_id"],
        version_id=values["version_id"],
        environment_id=values["environment_id"],
        variant=values["variant"],
        # Only a caller that sent a subject was bucketed stably (DESIGN: traffic split contract).
        sticky=values.get("sticky", bool(subject)),
        release_revision=values["release_revision"],
        locale=values["locale"],
        subject_hash=subject_hash(subject),
        provider=values["provider"],
        model=values["model"],
        latency_ms=values["latency_ms"],
        time_to_first_token_ms=values["time_to_first_token_ms"],
        input_tokens=values["input_tokens"],
        output_tokens=values["output_tokens"],
        cost=values["cost"],
        status=values["status"],
        error_class=values["error_class"],
        feedback=values["feedback"],
        schema_valid=values["schema_valid"],
        inputs=redact(values.get("inputs", {})),
        output=redact_text(values["output"]),
        reported_by_key_id=key.id if key else None,
        reported_by_key_label=key.label if key else "",
        feedback_key_id=key.id if vouched else None,
        feedback_key_label=key.label if vouched else "",
    )


def events_ingest(
    *,
    events: Sequence[Any],
    allowed_environments: Collection[str] | None = None,
    key: KeyRef | None = None,
) -> IngestResult:
    """Stores the valid events of a batch, once each; returns what became of every event.

    ``allowed_environments``: the environments the caller may report for; None for every one.
    ``key``: the API key that sent the batch, stored on every call (and its feedback) it reports,
    so a canary analysis can count only the reports of keys it trusts.

    1. Refuse a batch of more than ``MAX_EVENTS`` whole (``EventBatchTooLarge``), storing nothing.
    2. Check each event's shape and values on its own, without the database.
    3. Look up the prompts, versions, environments and prices the batch names: one query each.
    4. Check each event's references; build its redacted row. An id seen earlier in the batch is
       a duplicate: the first valid copy wins.
    5. In one transaction, read which ids are stored already, and insert the others.
    """
    if len(events) > MAX_EVENTS:
        raise EventBatchTooLarge(len(events))
    now = timezone.now()
    checked = [_parse(index, event, now=now) for index, event in enumerate(events)]
    refs = _References.load([c for c in checked if not c.problems])
    allowed = None if allowed_environments is None else frozenset(allowed_environments)

    rejected: list[RejectedEvent] = []
    calls: dict[str, Call] = {}
    repeated: set[str] = set()
    for event in checked:
        if not event.problems:
            _resolve(event, refs, allowed)
            _price(event, refs)
        if event.problems:
            event_id = event.values.get("event_id")
            rejected.append(RejectedEvent(event.index, event_id, tuple(event.problems)))
        elif event.values["event_id"] in calls:
            repeated.add(event.values["event_id"])
        else:
            calls[event.values["event_id"]] = _call(event.values, now=now, key=key)

    stored: set[str] = set()
    if calls:
        with transaction.atomic():
            stored = set(
                Call.objects.filter(event_id__in=list(calls)).values_list("event_id", flat=True)
            )
            # A concurrent batch may insert one of these ids between the read above and the
            # insert: the unique event_id with ON CONFLICT DO NOTHING keeps its row and drops
            # ours, so the id is stored once, and both answers count it as accepted (it is
            # stored, which is what a client needs to know).
            Call.objects.bulk_create(
                [call for event_id, call in calls.items() if event_id not in stored],
                ignore_conflicts=True,
                batch_size=INSERT_BATCH_SIZE,
            )
    accepted = tuple(event_id for event_id in calls if event_id not in stored)
    duplicates = tuple(event_id for event_id in calls if event_id in stored or event_id in repeated)
    logger.info(
        "Events ingested: accepted=%d duplicates=%d rejected=%d",
        len(accepted),
        len(duplicates),
        len(rejected),
    )
    return IngestResult(accepted=accepted, duplicates=duplicates, rejected=tuple(rejected))
