"""The response cache (issue 19, decision 0050): a version's answers kept and served again.

Opt-in per version: the model binding's ``cache`` (``registry.content.cache_policy_problems``).
This module is the exact cache (``runs.semantic_cache`` the semantic one, tried after it): the
same rendered request (messages, model, parameters, tools,
response format) for the same version, environment, locale and caller-chosen partition gets the
answer the model gave it, without a model call, until its TTL runs out.

The key is a SHA-256 of all of that in canonical JSON, the version's id and content hash first:
a new version (or the same text committed again as a new version) never reads an older one's
entries, and a tenant's partition never reads another's. Entries live in Django's default cache:
Redis when ``REDIS_URL`` is set (shared by every process), else this process's local memory.

A cache that cannot be read or written (Redis out of reach) is a miss and no store, logged: the
model answers as if there were no cache. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache as default_cache

from config.metrics import RESPONSE_CACHE_LOOKUPS
from registry.content import ModelBinding

from .providers import Completion

logger = logging.getLogger(__name__)

PARTITION_MAX_CHARS = 128
KEY_PREFIX = "response-cache:v1:"
EXACT = "exact"


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What the caller asked of the cache: its ``partition`` ("" for none), and whether to use
    the cache at all (``"cache": false`` in the run body bypasses it: no read, no store)."""

    partition: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class CachePlan:
    """The cache a prepared run reads before its model call and writes after a complete answer."""

    key: str
    ttl_seconds: int
    prompt: str


@dataclass(frozen=True, slots=True)
class CacheHit:
    kind: str  # exact or semantic
    similarity: float  # 1.0 for an exact hit; the cosine for a semantic one

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "similarity": self.similarity}


def cache_plan(
    *,
    binding: ModelBinding,
    request: CacheRequest | None,
    prompt: str,
    version_id: int,
    content_hash: str,
    environment: str,
    locale: str,
    messages: list[dict[str, Any]],
    guardrails: str = "",
) -> CachePlan | None:
    """The run's exact cache, or None: the version has none, or the caller bypassed it (or is
    not a caller that may use it: the playground, shadows and evaluations pass no request). The
    semantic cache is ``runs.semantic_cache``'s."""
    if request is None or not request.enabled or not binding.cache:
        return None
    exact = binding.cache.get("exact")
    if not isinstance(exact, Mapping):
        return None
    identity = {
        "version": version_id,
        "content_hash": content_hash,
        "environment": environment,
        "locale": locale,
        "partition": request.partition,
        # The guardrail policy with its environment's floor: an answer stored under one floor
        # is not served under another (decision 0052).
        "guardrails": guardrails,
        "provider": binding.provider,
        "model": binding.model,
        "messages": messages,
        "parameters": dict(binding.parameters),
        "response_schema": dict(binding.response_schema) if binding.response_schema else None,
        "tools": binding.tools_dict(),
        "fallbacks": [f.as_dict() for f in binding.fallbacks],
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = KEY_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return CachePlan(key=key, ttl_seconds=int(exact["ttl_seconds"]), prompt=prompt)


def cache_lookup(plan: CachePlan) -> tuple[Completion, CacheHit, float] | None:
    """The cached answer as a completion that cost nothing (no tokens, no attempts), the hit, and
    the lookup's milliseconds; None on a miss. The original call's token counts stay in the entry
    (``original_usage``), never in the completion: the model was paid once, by the call that
    stored it, and a hit must not count its tokens or cost again."""
    started = time.perf_counter()
    try:
        entry = default_cache.get(plan.key)
    except Exception:  # a cache out of reach is a miss: the model answers
        logger.warning("The response cache could not be read", exc_info=True)
        entry = None
    latency_ms = (time.perf_counter() - started) * 1000
    RESPONSE_CACHE_LOOKUPS.labels(plan.prompt, EXACT, "hit" if entry else "miss").inc()
    if not isinstance(entry, Mapping):
        return None
    return entry_completion(entry, latency_ms), CacheHit(EXACT, 1.0), latency_ms


def entry_completion(entry: Mapping[str, Any], latency_ms: float) -> Completion:
    """A stored entry as a completion that cost nothing: no tokens, no attempts."""
    return Completion(
        provider=entry["provider"],
        model=entry["model"],
        text=entry["text"],
        parsed=entry.get("parsed"),
        input_tokens=0,
        output_tokens=0,
        latency_ms=latency_ms,
        time_to_first_token_ms=None,
        attempts=(),
        tool_calls=tuple(entry.get("tool_calls") or ()),
    )


def entry_for(completion: Completion) -> dict[str, Any]:
    """What is stored of a complete answer (the exact and the semantic cache alike)."""
    return {
        "provider": completion.provider,
        "model": completion.model,
        "text": completion.text,
        "parsed": completion.parsed,
        "tool_calls": [dict(call) for call in completion.tool_calls],
        "original_usage": {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
        },
    }


def cache_store(plan: CachePlan, completion: Completion) -> None:
    """Keeps a complete, successful answer (a failed call, an answer its schema refused and a
    cancelled stream are failures, never given here)."""
    try:
        default_cache.set(plan.key, entry_for(completion), timeout=plan.ttl_seconds)
    except Exception:
        logger.warning("The response cache could not be written", exc_info=True)


def partition_problem(value: Any) -> tuple[str, str] | None:
    """What is wrong with a caller's ``cache_partition`` (a code and a detail), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        return "invalid", "cache_partition must be text."
    if len(value) > PARTITION_MAX_CHARS:
        return "max_length", (
            f"cache_partition is {len(value)} characters long; at most {PARTITION_MAX_CHARS}."
        )
    return None
