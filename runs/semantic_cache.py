"""The semantic response cache (issue 19 item 2, decision 0050): a similar question's answer.

A version whose binding has ``cache: {"semantic": {ttl_seconds, threshold, provider, model}}``
answers a request whose question is near enough (cosine similarity at least ``threshold``) to one
it answered before, in the same namespace, without a model call.

**What is compared.** The text of the rendered messages a caller fills, the ``user``,
``assistant`` and ``tool`` turns (a conversation's included), joined by newlines: that is the
question. The ``system`` and ``developer`` messages are not embedded (the prompt's constant
instructions would make every question look alike) but are part of the namespace: two requests
are compared only when their instructions are the same text, so a variable rendered into the
system message is never answered by another value's answer.

**The namespace** is a SHA-256 of the version's id and content hash, the environment, the served
locale, the caller's partition and those instructions: no other version, environment, locale or
tenant is ever compared.

**Where the vectors are.** In Redis (``REDIS_URL``), one stream per namespace, each entry the
vector (float32), its answer's key and its expiry; the stream is capped at ``MAX_ENTRIES`` (the
oldest dropped) and expires with its last entry's TTL. The answers live in Django's default cache
under their own key, with the TTL. Each process searches its own numpy matrix per namespace,
refreshed before each lookup by reading only the entries added since its last read (``XRANGE``
from the last id): measured in ``bench/cache_vectors.py``, reading every vector per lookup costs
hundreds of milliseconds at 100,000 entries, a matrix already held about ten. Without Redis the
matrix is the process's own, and so are its entries.

**Failures.** The question is embedded through the cache's provider (its client, its timeout, the
outbound policy checked first, as for a model call). A provider gone, disabled, refused, failing
or slow, or Redis out of reach, skips the cache: the model answers, nothing is stored, and the
call's record says why (``cache_skipped``). Never an error to the caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache as default_cache

from config.metrics import RESPONSE_CACHE_LOOKUPS
from registry.content import ModelBinding

from . import egress, response_cache
from .models import Provider
from .providers import Completion, clients

logger = logging.getLogger(__name__)

SEMANTIC = "semantic"
MAX_ENTRIES = 100_000  # per namespace; past it the oldest entry goes
NAMESPACES_HELD = 256  # namespaces whose matrix one process keeps; the least recently used goes
INSTRUCTION_ROLES = frozenset({"system", "developer"})
SKIP_DETAIL_MAX = 200


@dataclass(frozen=True, slots=True)
class SemanticPlan:
    """The semantic cache a prepared run reads (after the exact cache) and writes."""

    namespace: str
    question: str
    ttl_seconds: int
    threshold: float
    provider: Provider | None  # None: no longer configured
    model: str
    prompt: str


@dataclass(slots=True)
class SemanticLookup:
    """What the lookup found: a hit's answer and similarity, else the question's vector (kept for
    the store after the model answers) or why the cache was skipped."""

    completion: Completion | None = None
    similarity: float | None = None
    vector: np.ndarray | None = None
    skipped: str = ""


class CacheSkipped(Exception):
    """The semantic cache could not be used for this run; the message says why, for the record."""


def question_text(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(the question: every non-instruction message's text, joined by newlines; the instructions:
    the system and developer messages' text, which go into the namespace)."""
    question, instructions = [], []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            text = "\n".join(
                part.get("text", "")
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
        else:
            text = content if isinstance(content, str) else ""
        (instructions if message.get("role") in INSTRUCTION_ROLES else question).append(text)
    return "\n".join(question), "\n".join(instructions)


def semantic_plan(
    *,
    binding: ModelBinding,
    request: response_cache.CacheRequest | None,
    providers: Mapping[str, Provider],
    prompt: str,
    version_id: int,
    content_hash: str,
    environment: str,
    locale: str,
    messages: list[dict[str, Any]],
    guardrails: str = "",
) -> SemanticPlan | None:
    """The run's semantic cache, or None (no semantic policy, or the caller bypassed the cache)."""
    if request is None or not request.enabled or not binding.cache:
        return None
    policy = binding.cache.get(SEMANTIC)
    if not isinstance(policy, Mapping):
        return None
    question, instructions = question_text(messages)
    identity = {
        "version": version_id,
        "content_hash": content_hash,
        "environment": environment,
        "locale": locale,
        "partition": request.partition,
        # The guardrail policy with its environment's floor: an answer stored under one floor
        # is not served under another (decision 0052).
        "guardrails": guardrails,
        "instructions": instructions,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return SemanticPlan(
        namespace=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        question=question,
        ttl_seconds=int(policy["ttl_seconds"]),
        threshold=float(policy["threshold"]),
        provider=providers.get(policy["provider"]),
        model=str(policy["model"]),
        prompt=prompt,
    )


def embed(plan: SemanticPlan) -> np.ndarray:
    """The question's unit vector, from the cache's provider; raises CacheSkipped."""
    provider = plan.provider
    if provider is None:
        raise CacheSkipped("the embedding provider is no longer configured")
    if not provider.enabled:
        raise CacheSkipped(f"the embedding provider {provider.name} is disabled")
    refusals = egress.provider_refusals(
        base_url=provider.base_url, api_key_env=provider.api_key_env, resolve=True
    )
    if refusals:
        logger.warning("Embedding provider refused: provider=%s %s", provider.name, refusals)
        raise CacheSkipped(
            f"the outbound policy refuses the embedding provider's {' and '.join(refusals)}"
        )
    api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
    try:
        with clients.lease(provider, api_key) as client:
            answer = client.openai.embeddings.create(
                model=plan.model,
                input=plan.question or " ",
                encoding_format="float",
                timeout=provider.timeout_seconds,
            )
        vector = np.asarray(answer.data[0].embedding, dtype=np.float32)
    except Exception as exc:  # any failure of the provider: the model answers instead
        logger.warning("The semantic cache could not embed a question", exc_info=True)
        raise CacheSkipped(
            f"the embedding provider {provider.name} failed ({type(exc).__name__})"
        ) from exc
    norm = float(np.linalg.norm(vector))
    if vector.ndim != 1 or not vector.size or not np.isfinite(norm) or norm == 0.0:
        raise CacheSkipped(f"the embedding provider {provider.name} gave no usable vector")
    return vector / norm


@dataclass(slots=True)
class _Namespace:
    """One namespace's vectors as this process holds them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    matrix: np.ndarray | None = None  # rows: unit vectors, float32
    keys: list[str] = field(default_factory=list)  # each row's answer key
    expires: np.ndarray = field(default_factory=lambda: np.empty(0))  # epoch seconds
    last_id: str = "0-0"  # the last stream entry read

    def add(self, vectors: list[np.ndarray], keys: list[str], expires: list[float]) -> None:
        if not vectors:
            return
        rows = np.vstack(vectors).astype(np.float32, copy=False)
        if self.matrix is not None and self.matrix.shape[1] != rows.shape[1]:
            # The provider's model changed its dimensions: the old vectors are not comparable.
            self.matrix, self.keys, self.expires = None, [], np.empty(0)
        self.matrix = rows if self.matrix is None else np.vstack([self.matrix, rows])
        self.keys += keys
        self.expires = np.concatenate([self.expires, np.asarray(expires, dtype=float)])
        self._bound(time.time())

    def _bound(self, now: float) -> None:
        """Drop the expired rows and, past ``MAX_ENTRIES``, the oldest."""
        if self.matrix is None:
            return
        keep = self.expires > now
        if keep.sum() > MAX_ENTRIES:
            keep[: np.flatnonzero(keep)[-MAX_ENTRIES]] = False
        if keep.all():
            return
        self.matrix = self.matrix[keep]
        self.keys = [key for key, kept in zip(self.keys, keep, strict=True) if kept]
        self.expires = self.expires[keep]

    def nearest(self, vector: np.ndarray) -> tuple[str, float] | None:
        self._bound(time.time())
        if self.matrix is None or not len(self.keys) or self.matrix.shape[1] != vector.shape[0]:
            return None
        scores = self.matrix @ vector
        best = int(np.argmax(scores))
        return self.keys[best], float(scores[best])


class _Namespaces:
    """Every namespace this process holds, the least recently used dropped past the bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: OrderedDict[str, _Namespace] = OrderedDict()

    def get(self, name: str) -> _Namespace:
        with self._lock:
            held = self._held.get(name)
            if held is None:
                held = self._held[name] = _Namespace()
                while len(self._held) > NAMESPACES_HELD:
                    self._held.popitem(last=False)
            self._held.move_to_end(name)
            return held

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


namespaces = _Namespaces()


def _redis() -> Any | None:
    """The raw Redis client behind the default cache, or None without Redis."""
    if not settings.REDIS_URL:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _stream_key(plan: SemanticPlan) -> str:
    return f"{response_cache.KEY_PREFIX}semantic:{plan.namespace}"


def _pack(vector: np.ndarray) -> bytes:
    return struct.pack(f"<{vector.size}f", *vector.tolist())


def _refresh(held: _Namespace, stream: str, client: Any) -> None:
    """Read the entries added to the namespace's stream since this process last read it."""
    entries = client.xrange(stream, min=f"({held.last_id}", max="+")
    if not entries:
        return
    vectors, keys, expires = [], [], []
    for entry_id, fields in entries:
        vectors.append(np.frombuffer(fields[b"v"], dtype="<f4"))
        keys.append(fields[b"k"].decode())
        expires.append(float(fields[b"e"]))
        held.last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    held.add(vectors, keys, expires)


def semantic_lookup(plan: SemanticPlan) -> SemanticLookup:
    """Embed the question and search the namespace: a hit at ``threshold`` or above, else a miss
    with the vector to store, else why the cache was skipped. Never raises."""
    started = time.perf_counter()
    try:
        vector = embed(plan)
    except CacheSkipped as skipped:
        RESPONSE_CACHE_LOOKUPS.labels(plan.prompt, SEMANTIC, "skipped").inc()
        return SemanticLookup(skipped=str(skipped)[:SKIP_DETAIL_MAX])
    held = namespaces.get(_stream_key(plan))
    try:
        with held.lock:
            client = _redis()
            if client is not None:
                _refresh(held, _stream_key(plan), client)
            found = held.nearest(vector)
        entry = None
        if found is not None and found[1] >= plan.threshold:
            entry = default_cache.get(found[0])
    except Exception:  # Redis out of reach: the model answers, and nothing is stored
        logger.warning("The semantic cache could not be read", exc_info=True)
        RESPONSE_CACHE_LOOKUPS.labels(plan.prompt, SEMANTIC, "skipped").inc()
        return SemanticLookup(skipped="the cache could not be read")
    if not isinstance(entry, Mapping):
        RESPONSE_CACHE_LOOKUPS.labels(plan.prompt, SEMANTIC, "miss").inc()
        return SemanticLookup(vector=vector)
    RESPONSE_CACHE_LOOKUPS.labels(plan.prompt, SEMANTIC, "hit").inc()
    latency_ms = (time.perf_counter() - started) * 1000
    similarity = min(1.0, round(found[1], 6))  # float32 rounding may pass 1 by an ulp
    return SemanticLookup(
        completion=response_cache.entry_completion(entry, latency_ms), similarity=similarity
    )


def semantic_store(plan: SemanticPlan, vector: np.ndarray, completion: Completion) -> None:
    """Keep a complete answer under its question's vector; a failure to write is logged only."""
    key = f"{response_cache.KEY_PREFIX}semantic-answer:{plan.namespace}:{uuid.uuid4().hex}"
    expires = time.time() + plan.ttl_seconds
    try:
        default_cache.set(key, response_cache.entry_for(completion), timeout=plan.ttl_seconds)
        client = _redis()
        stream = _stream_key(plan)
        if client is None:
            held = namespaces.get(stream)
            with held.lock:
                held.add([vector], [key], [expires])
            return
        pipe = client.pipeline(transaction=False)
        fields = {"v": _pack(vector), "k": key, "e": repr(expires)}
        pipe.xadd(stream, fields, maxlen=MAX_ENTRIES, approximate=False)
        pipe.expire(stream, plan.ttl_seconds)
        pipe.execute()
    except Exception:
        logger.warning("The semantic cache could not be written", exc_info=True)
