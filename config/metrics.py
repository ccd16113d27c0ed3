"""The registry's Prometheus metrics: every one is declared here, with its labels and what it
counts, so the list in docs/metrics.md can be checked against this module (tests/test_metrics.py).

Labels are bounded: a route is a URL pattern of the URLconf, never a path; a prompt is a key and a
version a number (both exist before a call can name them); a provider, model, outcome, status or
task comes from the registry's own code or configuration. A subject, a request id, an API key or
anything else a caller chooses freely is never a label: each new value would be a new series, and
some are personal data.

Each process counts in memory, or, when ``PROMETHEUS_MULTIPROC_DIR`` names a directory (gunicorn's
workers, Celery's prefork children), in a file per process under it, which ``exposition`` adds up:
a scrape reaches one worker, and must see them all. prometheus_client reads the variable when it
is imported, so it is set in the environment before the process starts, never in settings.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

# No ``_created`` series beside each counter and histogram: they double the series for a figure
# Prometheus does not need (it sees resets itself), and multiprocess mode has none, so a scrape
# reads the same either way.
disable_created_metrics()

NAMESPACE = "promptregistry"
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. The runtime path answers in about a millisecond, the admin in tens, a stream ends after
# minutes: fine buckets low, a few high.
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MODEL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 1800)

# --- HTTP -----------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "http_requests",
    "Requests answered, by route (the URL pattern; unmatched: none), method and status.",
    ["route", "method", "status"],
    namespace=NAMESPACE,
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Seconds from a request's arrival to its answer's headers, by route and method.",
    ["route", "method"],
    namespace=NAMESPACE,
    buckets=HTTP_BUCKETS,
)

# --- the release cache (releases.cache) -----------------------------------------------------------

CACHE_HITS = Counter(
    "release_cache_hits",
    "Release lookups answered from this process's memory, without a query.",
    namespace=NAMESPACE,
)
CACHE_LOADS = Counter(
    "release_cache_loads",
    "Reads of releases from the database: a whole environment, or one release.",
    ["scope"],
    namespace=NAMESPACE,
)
CACHE_DEGRADED = Counter(
    "release_cache_degraded",
    "Lookups answered from the copy held while the database could not be read (maybe stale).",
    namespace=NAMESPACE,
)
CACHE_CONFIRMED = Gauge(
    "release_cache_confirmed_timestamp_seconds",
    "When this process last read its release revisions from the database (Unix time; 0: never).",
    namespace=NAMESPACE,
    multiprocess_mode="liveall",  # one series per live process: each has its own copy
)

# --- model calls (runs) ---------------------------------------------------------------------------

MODEL_LABELS = ["source", "prompt", "version", "variant", "provider", "model"]
MODEL_CALLS = Counter(
    "model_calls",
    "Model calls (retries and fallbacks included) by where they came from, prompt, version, "
    "variant, the provider and model that answered (or the binding's, failed), and outcome.",
    [*MODEL_LABELS, "outcome"],
    namespace=NAMESPACE,
)
MODEL_DURATION = Histogram(
    "model_call_duration_seconds",
    "Seconds a model call took, retries and fallbacks included.",
    ["source", "prompt", "version", "provider", "model"],
    namespace=NAMESPACE,
    buckets=MODEL_BUCKETS,
)
MODEL_FIRST_TOKEN = Histogram(
    "model_time_to_first_token_seconds",
    "Seconds from the start of the answering call to its first token (streamed calls only).",
    ["source", "prompt", "version", "provider", "model"],
    namespace=NAMESPACE,
    buckets=FIRST_TOKEN_BUCKETS,
)
MODEL_TOKENS = Counter(
    "model_tokens",
    "Tokens billed, every answered attempt included, by direction (input or output).",
    [*MODEL_LABELS, "direction"],
    namespace=NAMESPACE,
)
MODEL_COST = Counter(
    "model_cost",
    "What model calls cost, in the currency of the price table (runs.ModelPrice); calls of a "
    "model with no price add nothing.",
    MODEL_LABELS,
    namespace=NAMESPACE,
)

# --- the response cache (runs.response_cache) ----------------------------------------------------

RESPONSE_CACHE_LOOKUPS = Counter(
    "response_cache_lookups",
    "Response cache lookups of runs whose version caches its answers, by prompt, kind (exact, "
    "semantic) and result (hit: answered without a model call; miss; skipped: the semantic cache "
    "could not embed the question or read its vectors).",
    ["prompt", "kind", "result"],
    namespace=NAMESPACE,
)
GUARDRAIL_TRIGGERS = Counter(
    "guardrail_triggers",
    "Guardrail checks that fired on runs (decision 0052), by prompt, stage (input, output), check "
    "(max_tokens, deny_patterns, pii, injection, moderation) and action taken (refuse, fallback, "
    "redact, flag).",
    ["prompt", "stage", "check", "action"],
    namespace=NAMESPACE,
)

# --- the shadow outbox (runs.outbox) --------------------------------------------------------------

OUTBOX_DEPTH = Gauge(
    "shadow_outbox_depth",
    "Shadow jobs waiting in memory to be handed to the broker.",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",  # the jobs every live process holds
)
OUTBOX_DROPPED = Counter(
    "shadow_outbox_dropped",
    "Shadow jobs dropped: the queue was full, or the broker refused them.",
    ["reason"],
    namespace=NAMESPACE,
)

# --- call records written late (runs.spool) ------------------------------------------------------

BUDGET_REFUSALS = Counter(
    "budget_refusals",
    "Runs refused before the model call by a budget (runs.budgets): by the budget's scope (key, "
    "prompt, environment) and the limit it reached.",
    ["scope", "limit"],
    namespace=NAMESPACE,
)
SPEND_ANOMALIES = Counter(
    "spend_anomalies",
    "Prompts' and models' spend found far outside its trailing baseline (runs.anomalies), by "
    "kind (prompt or model).",
    ["kind"],
    namespace=NAMESPACE,
)
CALL_RECORDS = Counter(
    "call_records",
    "Call records the database could not take when written: kept in Redis (spooled), written "
    "from there later (drained), or lost (Redis could not keep them, or the database refused the "
    "row itself).",
    ["outcome"],
    namespace=NAMESPACE,
)

# --- Celery tasks (config.worker_metrics) ---------------------------------------------------------

TASK_DURATION = Histogram(
    "task_duration_seconds",
    "Seconds a Celery task ran, by task name, whatever its end.",
    ["task"],
    namespace=NAMESPACE,
    buckets=TASK_BUCKETS,
)
TASK_FAILURES = Counter(
    "task_failures",
    "Celery tasks that raised (time limits included), by task name.",
    ["task"],
    namespace=NAMESPACE,
)

# --- evaluations ----------------------------------------------------------------------------------

EVAL_RUNS_FINISHED = Counter(
    "eval_runs_finished",
    "Eval runs that ended, by status (finished: every case scored; cancelled).",
    ["status"],
    namespace=NAMESPACE,
)
CANARY_VERDICTS = Counter(
    "canary_verdicts",
    "Verdicts stored by canary analysis, by prompt, environment and verdict.",
    ["prompt", "environment", "verdict"],
    namespace=NAMESPACE,
)


# --- events and webhooks (registry.events, webhooks) ----------------------------------------------

EVENT_LISTENER_FAILURES = Counter(
    "event_listener_failures",
    "Events a listener failed on (logged with the error; the change that emitted them stands), "
    "by event type.",
    ["event_type"],
    namespace=NAMESPACE,
)
WEBHOOK_ATTEMPTS = Counter(
    "webhook_attempts",
    "Webhook delivery attempts, by event type and outcome (delivered: a 2xx answer; failed: any "
    "other answer, a redirect, a timeout or a connection error; refused: the outbound policy "
    "refused the URL).",
    ["event_type", "outcome"],
    namespace=NAMESPACE,
)
WEBHOOK_SUBSCRIPTIONS_DISABLED = Counter(
    "webhook_subscriptions_disabled",
    "Webhook subscriptions disabled by the sender, by reason (failures: too many failed attempts "
    "in a row; gone: the receiver answered 410).",
    ["reason"],
    namespace=NAMESPACE,
)

# --- exposition -----------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The directory processes share their values through, or None (each serves its own)."""
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def metrics_registry() -> CollectorRegistry:
    """What a scrape reads. In multiprocess mode a fresh registry over every process's files, made
    per scrape as prometheus_client advises (the default registry would show only the process
    that happens to answer); otherwise the default registry, which adds the process's own CPU,
    memory and garbage collector figures."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)
    return registry


def exposition() -> tuple[bytes, str]:
    """Every metric in the Prometheus text format, and its content type."""
    return generate_latest(metrics_registry()), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Forget a process that ended (gunicorn's ``child_exit``, Celery's child shutdown): its gauges
    of live processes go; its counters stay in the sums, as they must."""
    if multiprocess_dir() is not None:
        _multiprocess.mark_process_dead(pid)
