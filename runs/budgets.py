"""Budgets and rate limits on the run API, per API key, prompt and environment (decision 0051).

``budget_check`` runs before the model call of every run (``/run`` and the OpenAI-compatible
endpoints, through ``runs.execution.run_prepare`` when it is given the key): never on resolve,
render or the bundle, which spend nothing. A run over a limit raises ``BudgetExceeded`` (the API
answers 429 ``budget-exceeded`` with ``Retry-After``): no model is called and no call recorded,
and the refusal is counted (``promptregistry_budget_refusals_total{scope,limit}``).

- Requests per minute take a token from the shared bucket of ``api.ratelimit`` (its Lua script
  and leases, under its own ``budget:`` key namespace), after the spend check passed.
- Tokens and cost per UTC day and month are counters in Redis, one per scope, period and measure,
  all read by one ``MGET``. They are added to once per call, by ``run_record`` (``budget_spend_
  count``), whether the record is then written, kept for later (runs.spool) or lost: the model
  was paid either way. The spool's drain never counts, so a record written, then drained again
  (a write that did commit but failed on the way back), is counted once. Without Redis (the
  embedded default) each process keeps its own counters.
- A counter that is missing (a budget just added, Redis flushed, a new day) is rebuilt from the
  call records once per process and period (``SET NX``, so a counter that was there is kept).
- The budgets themselves are held in memory as the providers are (runs.provider_cache): while the
  release cache's listener is trusted a run with no budget costs nothing, neither a query nor a
  round trip; without it, one query.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from redis.exceptions import RedisError

from config.metrics import BUDGET_REFUSALS
from releases.cache import DATABASE_OUTAGE, publish, release_cache

from .models import Budget, Call

logger = logging.getLogger(__name__)

_PREFIX = "promptregistry:budget:"
_BUCKET_PREFIX = "budget:"  # under the rate limiter's own prefix
# Day counters outlive their day by one, month counters their month by a few days: long enough
# for a late record to land in the right one, short enough that Redis keeps only a few of them.
_DAY_TTL = 2 * 86400
_MONTH_TTL = 35 * 86400
_COOLDOWN_SECONDS = 5.0
SPEND_LIMITS = {  # limit → (period, measure)
    "tokens_per_day": ("day", "tokens"),
    "cost_per_day": ("day", "cost"),
    "tokens_per_month": ("month", "tokens"),
    "cost_per_month": ("month", "cost"),
}


class BudgetExceeded(Exception):
    """A run over one of its budgets' limits; ``retry_after``: seconds until it may pass."""

    def __init__(self, budget: Budget, limit: str, retry_after: float, detail: str) -> None:
        super().__init__(detail)
        self.scope = budget.scope
        self.scope_label = budget.scope_label
        self.limit = limit
        self.limit_value = str(getattr(budget, limit))
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Table:
    by_key: dict[int, Budget]
    by_prompt: dict[int, Budget]
    by_environment: dict[int, Budget]

    @classmethod
    def of(cls, budgets: list[Budget]) -> _Table:
        return cls(
            by_key={b.api_key_id: b for b in budgets if b.api_key_id is not None},
            by_prompt={b.prompt_id: b for b in budgets if b.prompt_id is not None},
            by_environment={b.environment_id: b for b in budgets if b.environment_id is not None},
        )

    def applying(self, *, key_id: int | None, prompt_id: int, environment_id: int) -> list[Budget]:
        found = [
            self.by_key.get(key_id) if key_id is not None else None,
            self.by_prompt.get(prompt_id),
            self.by_environment.get(environment_id),
        ]
        return [b for b in found if b is not None]


def _enabled() -> Any:
    return Budget.objects.filter(enabled=True).select_related("prompt", "environment")


class BudgetCache:
    """Every enabled budget, in memory while the release cache's listener is trusted (a save
    anywhere publishes ``budgets`` and each process drops its copy); else read per run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: _Table | None = None
        self._generation = 0

    def clear(self, _message: dict | None = None) -> None:
        with self._lock:
            self._table = None
            self._generation += 1

    def applying(self, *, key_id: int | None, prompt_id: int, environment_id: int) -> list[Budget]:
        if release_cache().trusted:
            table = self._table
            if table is None:
                generation = self._generation
                table = _Table.of(list(_enabled()))
                with self._lock:
                    if generation == self._generation:
                        self._table = table
        else:
            scope = Q(prompt_id=prompt_id) | Q(environment_id=environment_id)
            if key_id is not None:
                scope |= Q(api_key_id=key_id)
            table = _Table.of(list(_enabled().filter(scope)))
        return table.applying(key_id=key_id, prompt_id=prompt_id, environment_id=environment_id)


budget_cache = BudgetCache()
release_cache().on("budgets", budget_cache.clear)


@receiver(post_save, sender=Budget)
@receiver(post_delete, sender=Budget)
def _budgets_changed(**_kwargs) -> None:
    budget_cache.clear()
    transaction.on_commit(partial(publish, {"kind": "budgets"}))
    transaction.on_commit(budget_cache.clear)


# -- periods and counters -----------------------------------------------------------------------


def _periods(now: datetime) -> dict[str, str]:
    now = now.astimezone(UTC)
    return {"day": now.strftime("d%Y%m%d"), "month": now.strftime("m%Y%m")}


def seconds_to_next(period: str, now: datetime) -> float:
    """Seconds from ``now`` to the start of the next UTC day or month."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "day":
        following = start + timedelta(days=1)
    else:
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        following = datetime(year, month, 1, tzinfo=UTC)
    return (following - now).total_seconds()


def counter_key(scope: str, scope_id: int, period_label: str, measure: str) -> str:
    return f"{_PREFIX}{scope}:{scope_id}:{period_label}:{measure}"


class SpendCounters:
    """The counters: in Redis (one ``MGET`` to read any number, one pipeline to add), or in this
    process without Redis, and also while Redis fails (logged; a budget then fails open to what
    this process has counted, as the rate limiter does)."""

    def __init__(self) -> None:
        self._local: dict[str, Decimal] = {}
        self._lock = threading.Lock()
        self._rebuilt: set[str] = set()
        self._paused_until = 0.0
        self.round_trips = 0  # read by the tests: a run with no budget makes none

    def _redis(self) -> Any:
        """The rate limiter's client (0.25 s timeouts, no retries), unless Redis failed in the
        last few seconds: a run never waits on a Redis that is down more than once in a while."""
        if not settings.REDIS_URL or time.monotonic() < self._paused_until:
            return None
        from api.ratelimit import limiter

        return limiter.client()

    def _failed(self, exc: Exception) -> None:
        self._paused_until = time.monotonic() + _COOLDOWN_SECONDS
        logger.warning("Budgets: Redis failed (%s); counting in this process", type(exc).__name__)

    def read(self, keys: list[str]) -> list[Decimal | None]:
        client = self._redis()
        if client is not None:
            try:
                self.round_trips += 1
                values = client.mget(keys)
                return [None if v is None else Decimal(v.decode()) for v in values]
            except RedisError as exc:
                self._failed(exc)
        with self._lock:
            return [self._local.get(k) for k in keys]

    def add(self, amounts: dict[str, tuple[Decimal, int]]) -> None:
        """Adds ``amount`` to each counter, which expires ``ttl`` seconds after."""
        client = self._redis()
        if client is not None:
            try:
                pipe = client.pipeline(transaction=False)
                for key, (amount, ttl) in amounts.items():
                    pipe.incrbyfloat(key, float(amount))
                    pipe.expire(key, ttl)
                self.round_trips += 1
                pipe.execute()
                return
            except RedisError as exc:
                self._failed(exc)
        with self._lock:
            for key, (amount, _ttl) in amounts.items():
                self._local[key] = self._local.get(key, Decimal(0)) + amount

    def set_missing(self, key: str, value: Decimal, ttl: int) -> None:
        client = self._redis()
        if client is not None:
            try:
                self.round_trips += 1
                client.set(key, str(value), nx=True, ex=ttl)
                return
            except RedisError as exc:
                self._failed(exc)
        with self._lock:
            self._local.setdefault(key, value)

    def rebuild_once(self, key: str) -> bool:
        """True the first time this process meets ``key`` missing (then rebuilt), else False."""
        with self._lock:
            if key in self._rebuilt:
                return False
            self._rebuilt.add(key)
            return True

    def reset(self) -> None:
        """Forgets this process's counters (tests)."""
        with self._lock:
            self._local.clear()
            self._rebuilt.clear()
        self._paused_until = 0.0
        self.round_trips = 0


counters = SpendCounters()


def _scope_filter(budget: Budget) -> Q:
    if budget.scope == "key":
        return Q(run_by_key_id=budget.api_key_id)
    if budget.scope == "prompt":
        return Q(prompt_id=budget.prompt_id)
    return Q(environment_id=budget.environment_id)


def _spent_since(budget: Budget, since: datetime, measure: str) -> Decimal:
    """What the call records say the scope spent since ``since`` (run calls only)."""
    calls = Call.objects.filter(
        _scope_filter(budget), source=Call.Source.RUN, created_at__gte=since
    )
    if measure == "cost":
        return calls.aggregate(v=Sum("cost"))["v"] or Decimal(0)
    totals = calls.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
    return Decimal((totals["i"] or 0) + (totals["o"] or 0))


def _period_start(period: str, now: datetime) -> datetime:
    now = now.astimezone(UTC)
    if period == "day":
        return datetime(now.year, now.month, now.day, tzinfo=UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


# -- the check ----------------------------------------------------------------------------------


def budget_check(
    *, key_id: int | None, prompt_id: int, environment_id: int, now: datetime | None = None
) -> None:
    """Raises ``BudgetExceeded`` for a run one of its budgets refuses; free when none applies."""
    budgets = budget_cache.applying(
        key_id=key_id, prompt_id=prompt_id, environment_id=environment_id
    )
    if not budgets:
        return
    now = now or timezone.now()
    periods = _periods(now)
    wanted: list[tuple[Budget, str, str]] = []  # (budget, limit, counter key)
    for budget in budgets:
        for limit, (period, measure) in SPEND_LIMITS.items():
            if getattr(budget, limit) is not None:
                key = counter_key(budget.scope, budget.scope_id, periods[period], measure)
                wanted.append((budget, limit, key))
    if wanted:
        values = counters.read([key for _, _, key in wanted])
        for (budget, limit, key), value in zip(wanted, values, strict=True):
            period, measure = SPEND_LIMITS[limit]
            if value is None and counters.rebuild_once(key):
                value = _spent_since(budget, _period_start(period, now), measure)
                ttl = _DAY_TTL if period == "day" else _MONTH_TTL
                counters.set_missing(key, value, ttl)
            if value is not None and value >= getattr(budget, limit):
                unit = "tokens" if measure == "tokens" else "in cost"
                _refuse(
                    budget,
                    limit,
                    seconds_to_next(period, now),
                    f"The {budget.scope_label} has spent {value.normalize():f} {unit} this UTC "
                    f"{period}, its budget's {limit} being {getattr(budget, limit)}: no model "
                    "was called.",
                )
    for budget in budgets:
        if budget.requests_per_minute is not None:
            wait = _bucket_take(budget)
            if wait > 0:
                _refuse(
                    budget,
                    "requests_per_minute",
                    wait,
                    f"The {budget.scope_label} has made {budget.requests_per_minute} runs in a "
                    "minute, its budget's requests_per_minute: no model was called.",
                )


def _bucket_take(budget: Budget) -> float:
    from api.ratelimit import Limit, limiter

    per_minute = budget.requests_per_minute
    assert per_minute is not None
    limit = Limit(capacity=per_minute, per_second=per_minute / 60)
    return limiter.take_bucket(
        bucket=f"{_BUCKET_PREFIX}{budget.scope}:{budget.scope_id}", limit=limit
    )


def _refuse(budget: Budget, limit: str, wait: float, detail: str) -> None:
    BUDGET_REFUSALS.labels(scope=budget.scope, limit=limit).inc()
    raise BudgetExceeded(budget, limit, wait, detail)


# -- counting -----------------------------------------------------------------------------------


def budget_spend_count(call: Call) -> None:
    """Adds a run call's tokens and cost to the counters of the budgets that apply to it (none
    kept for a scope with no spend limit). Called once per call, by ``run_record``; never
    raises: the call is answered already."""
    if call.source != Call.Source.RUN:
        return
    try:
        budgets = budget_cache.applying(
            key_id=call.run_by_key_id, prompt_id=call.prompt_id, environment_id=call.environment_id
        )
        budgets = [b for b in budgets if any(getattr(b, limit) for limit in SPEND_LIMITS)]
        if not budgets:
            return
        tokens = Decimal((call.input_tokens or 0) + (call.output_tokens or 0))
        cost = call.cost or Decimal(0)
        periods = _periods(call.created_at)
        amounts: dict[str, tuple[Decimal, int]] = {}
        for budget in budgets:
            for period, ttl in (("day", _DAY_TTL), ("month", _MONTH_TTL)):
                label = periods[period]
                amounts[counter_key(budget.scope, budget.scope_id, label, "tokens")] = (tokens, ttl)
                amounts[counter_key(budget.scope, budget.scope_id, label, "cost")] = (cost, ttl)
        counters.add(amounts)
    except DATABASE_OUTAGE:
        logger.warning("Budgets: the call %s could not be counted", call.request_id)


def budget_day(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date()
