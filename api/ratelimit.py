"""Rate limits per API key and scope: a token bucket, shared by every web node through Redis.

Each request takes one token from the bucket of its key and the scope it needs (``prompts:read``
for resolve, render, bundle and the stream; ``runs:execute`` for run; the scope a DRF view's
``HasScope`` names; ``default`` for a view that names none). A bucket holds at most N tokens and
refills at N per period (``API_RATE_LIMITS``: ``"1000/s"``, ``"600/min"``, ``"off"``), so a key may
burst N requests and then keep to N per period. An empty bucket answers 429 ``throttled`` with
``Retry-After``: the seconds until a token is back.

- With Redis (``REDIS_URL``), the bucket lives there and one Lua script reads, refills and takes
  it atomically, on Redis's clock: every web node sees the same bucket. A request costs at most
  one round trip (``EVALSHA``), and a busy key far less: each process leases a few tokens at a
  time, more while it spends them fast (see ``RateLimiter``).
- Without Redis (the embedded default), each process keeps its own buckets.
- Redis failing never fails a request: the limiter has its own client (a 0.25 s timeout, no
  retries), logs the failure, and for ``_COOLDOWN_SECONDS`` limits with the process's own buckets
  instead of trying Redis again, so an outage costs at most one short timeout per process every
  few seconds, never one per request.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rest_framework.throttling import BaseThrottle

from config.redisclients import redis_client

logger = logging.getLogger(__name__)

DEFAULT_SCOPE = "default"
_KEY_PREFIX = "promptregistry:ratelimit:"
_COOLDOWN_SECONDS = 5.0
_TIMEOUT_SECONDS = 0.25
_MAX_LEASE = 20
_MAX_GROWN_LEASE = 1000
_LEASE_SECONDS = 1.0
_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")

# KEYS[1]: the bucket; ARGV: capacity, refill rate (tokens per second), tokens wanted. Returns
# {tokens granted (at least 1, at most wanted), "0"}, or {0, seconds until a token is back}.
# Redis's own clock (TIME) is every node's.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local granted = math.min(wanted, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = (1 - tokens) / rate
end
-- Lua's tostring keeps 14 significant digits: the time to the tenth of a millisecond only,
-- and every call rounding it would refill a fraction of a token more than the clock did.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {granted, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    capacity: int
    per_second: float


@lru_cache(maxsize=64)
def limit_parse(spec: str) -> Limit | None:
    """``"600/min"`` → 600 tokens, refilled at 10 per second; ``"off"`` or ``""`` → None."""
    if spec.strip().lower() in {"", "off", "none"}:
        return None
    match = _SPEC.match(spec.lower())
    if match is None or match.group(2) not in _PERIODS or int(match.group(1)) < 1:
        raise ImproperlyConfigured(
            f"API_RATE_LIMITS: {spec!r} is not a limit; write N/s, N/min or N/hour, or off."
        )
    count = int(match.group(1))
    return Limit(capacity=count, per_second=count / _PERIODS[match.group(2)])


# Each scope's limit, read from the settings once (the runtime path asks on every request);
# ``override_settings`` and any other change through ``setting_changed`` drop them.
_limits: dict[str, Limit | None] = {}


def limit_for(scope: str) -> Limit | None:
    try:
        return _limits[scope]
    except KeyError:
        pass
    if not settings.API_RATE_LIMITS_ENABLED:
        limit = None
    else:
        limits = settings.API_RATE_LIMITS
        limit = limit_parse(limits.get(scope, limits.get(DEFAULT_SCOPE, "off")))
    _limits[scope] = limit
    return limit


@receiver(setting_changed)
def _limits_changed(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("API_RATE_LIMITS"):
        _limits.clear()


def lease_size(limit: Limit) -> int:
    """How many tokens a process takes from the shared bucket at once: a fiftieth of the burst,
    so up to 50 processes can hold a lease of a full bucket, and 1 (exact) below 100."""
    return max(1, min(_MAX_LEASE, limit.capacity // 50))


def lease_max(limit: Limit) -> int:
    """The most a lease grows to while a process spends its leases before they expire: still at
    most a fiftieth of the burst, and a fiftieth of what the bucket refills in a lease's time, so
    what a process may lose when it stops spending is a small share of either."""
    grown = min(
        _MAX_GROWN_LEASE, limit.capacity // 50, int(limit.per_second * _LEASE_SECONDS) // 50
    )
    return max(lease_size(limit), grown)


class LocalBuckets:
    """One process's buckets (no Redis, or Redis failing). Keys are authenticated API keys times
    scopes, so the dict is bounded by the keys that exist."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, bucket: str, limit: Limit) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(bucket, (limit.capacity, now))
            tokens = min(limit.capacity, tokens + max(0.0, now - at) * limit.per_second)
            if tokens >= 1:
                self._buckets[bucket] = (tokens - 1, now)
                return 0.0
            self._buckets[bucket] = (tokens, now)
            return (1 - tokens) / limit.per_second

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


def limiter_client() -> redis.Redis:
    """The limiter's own client: short timeouts and no retries (redis-py's default retries with
    backoff for seconds), since a request waits on it and the limiter fails open anyway."""
    return redis_client(
        socket_connect_timeout=_TIMEOUT_SECONDS,
        socket_timeout=_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


class _Lease:
    """Tokens this process took from a shared bucket ahead of need, and the refusal it was
    last given (so a key over its limit is refused here, with no round trip, until then)."""

    __slots__ = ("expires", "refused_until", "size", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.expires = 0.0
        self.refused_until = 0.0
        self.size = 0  # the tokens the last lease granted


class RateLimiter:
    """Takes a token for (key, scope); answers 0 when the request may go on, else the seconds to
    wait. ``client`` is a redis-py client, or None for in-process buckets only.

    With Redis, a process takes tokens from the shared bucket a few at a time (``lease_size``:
    1 for small limits, so they are exact; up to ``_MAX_LEASE`` for large ones) and spends them
    locally for up to ``_LEASE_SECONDS``: a busy key costs one round trip per lease, not per
    request. A process that spent its whole lease before it expired asks for twice as many next
    time, up to ``lease_max`` (for a large limit, a round trip every thousand requests); one that
    let a lease expire, or was refused, starts again from ``lease_size``. No key ever gets more than its limit (every request spends a token taken from the
    shared bucket); leased tokens a process does not use in time are lost, which can only
    refuse a little early, never let more through. A refusal is remembered for the wait Redis
    gave, so a key hammering past its limit costs no round trips either.
    """

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._script: Any = None
        self._local = LocalBuckets()
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._redis_paused_until = 0.0

    def take(self, *, key_id: int, scope: str) -> float:
        limit = limit_for(scope)
        if limit is None:
            return 0.0
        return self._take(f"{_KEY_PREFIX}{key_id}:{scope}", limit)

    def take_bucket(self, *, bucket: str, limit: Limit) -> float:
        """A token from a bucket of another namespace than the keys' scopes (``budget:...``: the
        requests per minute of runs.budgets), with the same script, leases and fallback."""
        return self._take(f"{_KEY_PREFIX}{bucket}", limit)

    def _take(self, bucket: str, limit: Limit) -> float:
        client = self._redis()
        now = time.monotonic()
        if client is None or now < self._redis_paused_until:
            return self._local.take(bucket, limit)
        with self._lock:
            lease = self._leases.get(bucket)
            if lease is None:
                lease = self._leases[bucket] = _Lease()
            if lease.tokens > 0 and now < lease.expires:
                lease.tokens -= 1
                return 0.0
            if now < lease.refused_until:
                return lease.refused_until - now
            wanted = lease_size(limit)
            if now < lease.expires:  # the last lease was spent before it expired: a busy key
                wanted = max(wanted, min(lease_max(limit), lease.size * 2))
        try:
            if self._script is None:
                self._script = client.register_script(_TAKE)
            granted, wait = self._script(
                keys=[bucket], args=[limit.capacity, limit.per_second, wanted]
            )
        except RedisError as exc:
            # Fail open: a limiter must never be why a request fails. Limit locally meanwhile.
            self._redis_paused_until = time.monotonic() + _COOLDOWN_SECONDS
            logger.warning(
                "Rate limiter: Redis failed (%s); limiting in this process for %s s",
                type(exc).__name__,
                _COOLDOWN_SECONDS,
            )
            return self._local.take(bucket, limit)
        with self._lock:
            if int(granted) >= 1:
                lease.size = int(granted)
                lease.tokens, lease.expires = lease.size - 1, now + _LEASE_SECONDS
                return 0.0
            lease.tokens, lease.size, lease.refused_until = 0, 0, now + float(wait)
            lease.expires = 0.0
            return float(wait)

    def client(self) -> Any:
        """The limiter's Redis client (short timeouts, no retries), or None without Redis."""
        return self._redis()

    def _redis(self) -> Any:
        if self._client is None and settings.REDIS_URL:
            self._client = limiter_client()
        return self._client

    def reset(self) -> None:
        """Forgets the in-process buckets, leases and any pause (tests)."""
        self._local.clear()
        _limits.clear()
        with self._lock:
            self._leases.clear()
        self._redis_paused_until = 0.0


limiter = RateLimiter()


def retry_after(wait: float) -> str:
    """``Retry-After`` in whole seconds, never 0 (a client would retry at once and be refused)."""
    return str(max(1, math.ceil(wait)))


class ApiKeyRateThrottle(BaseThrottle):
    """DRF's side: runs after authentication and the scope check, so only a valid key with the
    scope spends its tokens (an unauthenticated request is answered 401 before)."""

    def allow_request(self, request, view) -> bool:
        key = request.auth
        if getattr(key, "pk", None) is None:
            return True
        scope = next(
            (p.scope for p in view.get_permissions() if getattr(p, "scope", None)), DEFAULT_SCOPE
        )
        self._wait = limiter.take(key_id=key.pk, scope=str(scope))
        return self._wait <= 0

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
