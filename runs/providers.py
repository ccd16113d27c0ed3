"""Calling a model: the only module that imports ``openai`` (DESIGN "Failure rules", issue #4).

Every outbound call has a timeout, retries with backoff and jitter, and a fallback, and a model's
answer is untrusted input. ``complete()`` walks a binding's targets (primary, then fallbacks) and
records every attempt, failed or not, so a call record and a 502 problem document can say exactly
what was tried. The client's own retries are off (``max_retries=0``): retries it made would be
invisible to us, and ours honour ``Retry-After`` with a cap we choose.

Call it outside any transaction (STYLE R6): it does network I/O and may sleep for seconds.

One client per provider per process (``clients``): building one costs a TLS context (the CA bundle
read and parsed, tens of milliseconds) and a new connection pool, so every call would pay for a
handshake too. See ``ProviderClients`` for when a client is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import ssl
import threading
import time
import urllib.request
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

import httpcore2
import httpx2
import jsonschema
import openai
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from registry.content import MODEL_PARAMETERS, ModelBinding, ModelTarget
from registry.json_schemas import schema_validator
from registry.strictjson import storable, strict_json_loads
from registry.tools import response_format
from runs import egress
from runs.cancel import Cancellation
from runs.models import Provider
from runs.provider_cache import provider_cache
from runs.retries import RETRY_AFTER_CAP_SECONDS, backoff_seconds, retry_after_seconds
from runs.tool_calls import MAX_TOOL_CALLS, ToolCallsInvalid, tool_calls_checked
from runs.tracing import model_call_end, model_call_start, trace_headers, tracing_on

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1_000_000  # an answer longer than this is treated as malformed, never parsed
# A plain answer's body is read up to this (its text at four bytes a character, and the rest).
MAX_ANSWER_BYTES = 4 * MAX_ANSWER_CHARS + 1_000_000
DETAIL_CHARS = 300  # an Attempt's detail and the repair message's error stay short
NO_KEY = "not-needed"  # servers without keys (vLLM, Ollama, the fake) still need a non-empty key
REPAIR_MESSAGE = "Your answer did not match the JSON Schema: {error}. Answer again with JSON only."
# A stream cut before the provider's usage chunk still cost something: its tokens are estimated at
# OpenAI's rule of thumb (and the fake provider's count) of four characters a token.
CHARS_PER_TOKEN = 4
# The most tokens a call record holds per direction (its column, a PostgreSQL integer).
MAX_TOKENS = 2_147_483_647

# Faked by tests (monkeypatched to record the waits): retries then run instantly and the waits
# themselves can be asserted.
_sleep: Callable[[float], None] = time.sleep


class Outcome(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    MALFORMED = "malformed"
    SCHEMA_INVALID = "schema_invalid"
    BAD_REQUEST = "bad_request"
    UNKNOWN_PROVIDER = "unknown_provider"
    DISABLED = "disabled"
    REFUSED = "refused"  # the outbound policy (runs.egress) refuses the provider's URL or key
    STREAM_ERROR = (
        "stream_error"  # an error event (``data: {"error": …}``) in the middle of a stream
    )
    CANCELLED = "cancelled"  # stopped here: the client left, or the stream reached its maximum
    # Anything else: an exception no rule above names, from the client, the answer's shape or the
    # response schema. The walk goes on to the next target; the log has the traceback.
    UNEXPECTED = "unexpected_error"


# Failed attempts whose detail is the registry's own words (a timeout, a connection lost): the
# log line says it. Any other detail may quote the model's answer (a schema error, a malformed
# tool call) or the request (a provider's error message), and so a variable's value: the log
# names the outcome only, and the call's attempts keep the detail.
OWN_DETAIL = frozenset(
    {Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.CANCELLED, Outcome.UNEXPECTED}
)


def _detail_for_log(outcome: Outcome, detail: str) -> str:
    """What a failed attempt's log line says of its detail."""
    if outcome in OWN_DETAIL:
        return detail
    status, colon, _ = detail.partition(":")
    if colon and status.startswith("HTTP "):  # "HTTP 400: <the provider's message>"
        return f"({status}; the detail is in the call's attempts)"
    return "(the detail is in the call's attempts)"


# Transient: the same request may well succeed a moment later. Anything else moves on to the
# next target at once, since asking again would get the same answer.
RETRYABLE = frozenset(
    {Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR}
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call to one model (or one target skipped without a call), as recorded for the caller."""

    provider: str
    model: str
    outcome: Outcome
    detail: str  # short and safe to show: never a stack trace, never the API key
    latency_ms: float
    # What the provider billed for this call: an answer refused by the schema costs as much as a
    # good one, so the call's tokens and cost add up every answered attempt, fallbacks included.
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer of the target that succeeded, and everything tried on the way.

    ``input_tokens``/``output_tokens`` add up every answered call, whichever target answered it
    (a schema repair is a second call, and a target that answered invalidly before a fallback was
    billed too; ``attempts`` has each call's own); ``latency_ms`` is the whole wait, retries and
    fallbacks included; ``time_to_first_token_ms`` is measured from the start of the winning call.
    """

    provider: str
    model: str
    text: str
    parsed: Any  # the JSON value when the binding has a response schema, else None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    time_to_first_token_ms: float | None  # None when not streamed
    attempts: tuple[Attempt, ...]
    # The tools the model called, each ``{id, name, arguments}`` with the arguments parsed (a JSON
    # object, checked): an answer of tool calls without text is a success, its text "".
    tool_calls: tuple[dict[str, Any], ...] = ()


class ProviderUnavailable(Exception):
    """Every target failed; ``attempts`` says what was tried, for a 502 problem document."""

    def __init__(self, attempts: tuple[Attempt, ...] | list[Attempt]) -> None:
        self.attempts = tuple(attempts)
        tried = "; ".join(
            f"{a.provider}/{a.model}: {a.outcome}" + (f" ({a.detail})" if a.detail else "")
            for a in self.attempts
        )
        super().__init__(
            f"No model answered after {len(self.attempts)} attempts: {tried or 'no targets'}."
        )


class _Failure(Exception):
    """One call failed: how (an Outcome), why (a safe detail), how long the server asks to wait,
    and the part of the answer that was streamed before it failed (its tokens were billed)."""

    def __init__(
        self,
        outcome: Outcome,
        detail: str,
        retry_after: float | None = None,
        answer: _Answer | None = None,
    ) -> None:
        super().__init__(detail)
        self.outcome, self.detail, self.retry_after = outcome, detail, retry_after
        self.answer = answer


@dataclass(frozen=True, slots=True)
class _Answer:
    text: str
    input_tokens: int
    output_tokens: int
    time_to_first_token_ms: float | None
    tool_calls: tuple[dict[str, Any], ...] = ()


def complete(
    *,
    binding: ModelBinding,
    messages: list[dict[str, str]],
    on_token: Callable[[str], None] | None = None,
    providers: Mapping[str, Provider] | None = None,
    cancel: Cancellation | None = None,
    on_tool_call: Callable[[dict[str, Any]], None] | None = None,
    span_attributes: Mapping[str, Any] | None = None,
) -> Completion:
    """Ask the binding's primary, then its fallbacks, until one answers (validly, given a schema).

    ``providers`` (from ``binding_providers``) saves the database reads, so a streaming call can run
    in a thread of its own that never touches the database.

    With ``on_token`` the answer is streamed and each content delta is passed on as it arrives. A
    stream that fails half-way is retried or falls back like any failed call, so ``on_token`` may
    see the start of an answer that is then abandoned; the Completion's text is the one to keep.
    ``on_tool_call`` likewise gets each streamed tool-call delta ``{index, id, name, arguments}``
    (the arguments' next piece of text).

    The binding's tools go with every call; an answer's tool calls are checked (``runs.tool_calls``):
    a declared name and arguments that are a JSON object, else the answer is malformed.

    Every attempt ends in an outcome, whatever was raised, so the walk always ends. ``cancel``
    (another thread's) stops it: the attempt under way ends ``cancelled`` and no other starts.
    Raises ProviderUnavailable when every target failed or the call was cancelled.

    Each model call is a span (``runs.tracing``), with ``span_attributes`` (the prompt's).
    """
    started = time.perf_counter()
    attempts: list[Attempt] = []
    if providers is None:
        providers = binding_providers(binding)
    for target in binding.targets:
        provider = providers.get(target.provider)
        if provider is None or not provider.enabled:
            outcome = Outcome.UNKNOWN_PROVIDER if provider is None else Outcome.DISABLED
            detail = f"No provider named {target.provider!r}." if provider is None else "Disabled."
            attempts.append(Attempt(target.provider, target.model, outcome, detail, 0.0))
            continue
        # Checked again at each call: a row saved before the policy, or written around it, is
        # refused here, before any key leaves the process.
        refusals = egress.provider_refusals(
            base_url=provider.base_url, api_key_env=provider.api_key_env, resolve=True
        )
        if refusals:
            # The reasons name hosts and addresses: the log has them, the caller only the fields.
            logger.warning("Provider refused: provider=%s %s", provider.name, refusals)
            detail = f"The outbound policy refuses its {' and '.join(refusals)} (see the log)."
            attempts.append(Attempt(target.provider, target.model, Outcome.REFUSED, detail, 0.0))
            continue
        completion = _complete_target(
            provider=provider,
            target=target,
            schema=binding.response_schema,
            messages=messages,
            on_token=on_token,
            attempts=attempts,
            started=started,
            cancel=cancel,
            tooling=_Tooling.of(binding, on_tool_call),
            span_attributes=span_attributes or {},
        )
        if completion is not None:
            return completion
        if cancel is not None and cancel.cancelled:
            break
    raise ProviderUnavailable(attempts)


def longest_seconds(binding: ModelBinding, providers: Mapping[str, Provider]) -> float:
    """The longest ``complete`` may take for ``binding`` when nothing cancels it: every target in
    turn, each attempt its provider's timeout, each retry after the longest wait we allow, and one
    repair of an answer the response schema refused."""
    total = 0.0
    for target in binding.targets:
        provider = providers.get(target.provider)
        if provider is None:
            continue  # not configured: refused at once
        calls = provider.max_retries + 1 + (1 if binding.response_schema is not None else 0)
        total += calls * provider.timeout_seconds + provider.max_retries * RETRY_AFTER_CAP_SECONDS
    return total


def binding_providers(binding: ModelBinding) -> Mapping[str, Provider]:
    """The configured providers a binding names (primary and fallbacks), held in memory while
    the copy is trusted (``runs.provider_cache``), else read from the database."""
    return provider_cache.binding(binding).providers


@dataclass(frozen=True, slots=True)
class _Tooling:
    """What a call sends of the binding's tools, and who hears the streamed tool-call deltas."""

    fields: Mapping[str, Any]  # tools, tool_choice, parallel_tool_calls: those the binding sets
    names: frozenset[str]  # the declared tools' names: a call to any other is malformed
    on_tool_call: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def of(
        cls, binding: ModelBinding, on_tool_call: Callable[[dict[str, Any]], None] | None = None
    ) -> _Tooling:
        fields = binding.tools_dict() if binding.tools else {}
        names = frozenset(
            str(tool["function"].get("name"))
            for tool in binding.tools
            if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping)
        )
        return cls(fields, names, on_tool_call)


_NO_TOOLS = _Tooling({}, frozenset())


def _complete_target(
    *,
    provider: Provider,
    target: ModelTarget,
    schema: Mapping[str, Any] | None,
    messages: list[dict[str, str]],
    on_token: Callable[[str], None] | None,
    attempts: list[Attempt],
    started: float,
    cancel: Cancellation | None,
    tooling: _Tooling = _NO_TOOLS,
    span_attributes: Mapping[str, Any] = MappingProxyType({}),
) -> Completion | None:
    """Retry transient failures, repair one invalid answer; None means "try the next target"."""
    api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
    conversation = list(messages)
    retries = 0
    repaired = False
    span = None

    def record(outcome: Outcome, detail: str, since: float, answer: _Answer | None = None) -> None:
        detail = _redact(detail, api_key)
        latency = (time.perf_counter() - since) * 1000
        tokens = (answer.input_tokens, answer.output_tokens) if answer else (0, 0)
        attempts.append(Attempt(provider.name, target.model, outcome, detail, latency, *tokens))
        if outcome is not Outcome.OK:
            logger.warning(
                "Model call %s/%s: %s %s",
                provider.name,
                target.model,
                outcome,
                _detail_for_log(outcome, detail),
            )
        if span is not None:  # every attempt records exactly once: its span ends here
            model_call_end(
                span,
                model=target.model,
                outcome=str(outcome),
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                ok=outcome is Outcome.OK,
            )

    with clients.lease(provider, api_key) as client:
        while True:
            call_started = time.perf_counter()
            span = (
                model_call_start(
                    provider=provider.name, model=target.model, attributes=span_attributes
                )
                if tracing_on()
                else None
            )
            if cancel is not None and cancel.cancelled:
                record(Outcome.CANCELLED, cancel.reason, call_started)
                return None
            try:
                answer = _call(
                    client=client,
                    target=target,
                    schema=schema,
                    messages=conversation,
                    on_token=on_token,
                    started=call_started,
                    cancel=cancel,
                    tooling=tooling,
                    strict_output=provider.strict_output,
                    headers=trace_headers(span),
                )
            except _Failure as failure:
                reraise_time_limit(failure)
                outcome, detail = failure.outcome, failure.detail
                if cancel is not None and cancel.cancelled:
                    # Cutting the answer's socket makes the read fail as a lost connection.
                    outcome, detail = Outcome.CANCELLED, cancel.reason
                record(outcome, detail, call_started, failure.answer)
                if outcome not in RETRYABLE or retries >= provider.max_retries:
                    return None
                _pause(backoff_seconds(retries, failure.retry_after), cancel)
                retries += 1
                continue
            except Exception as exc:
                reraise_time_limit(exc)
                # Whatever else the call raised (a bug in reading a strange answer, say) still
                # ends the attempt: a call that dies here would leave its caller waiting for ever.
                logger.exception(
                    "Model call %s/%s failed unexpectedly", provider.name, target.model
                )
                record(Outcome.UNEXPECTED, f"Unexpected {type(exc).__name__}.", call_started)
                return None
            # An answer of tool calls alone is not the final answer the schema describes: the
            # caller runs the tools and asks again.
            checked = schema is not None and not (answer.tool_calls and not answer.text)
            try:
                parsed, error = _validate(answer.text, schema) if checked else (None, None)
            except Exception as exc:
                reraise_time_limit(exc)
                # The schema itself cannot be applied (a dangling $ref, say): no answer can pass
                # it here, so this target is done; the answer was billed all the same.
                logger.exception("Response schema of %s/%s failed", provider.name, target.model)
                detail = f"The response schema could not be applied ({type(exc).__name__})."
                record(Outcome.UNEXPECTED, detail, call_started, answer)
                return None
            if error is not None:
                record(Outcome.SCHEMA_INVALID, error, call_started, answer)
                if repaired:
                    return None
                repaired = True
                conversation = [
                    *conversation,
                    {"role": "assistant", "content": answer.text},
                    {"role": "user", "content": REPAIR_MESSAGE.format(error=error)},
                ]
                continue
            record(Outcome.OK, "", call_started, answer)
            return Completion(
                provider=provider.name,
                model=target.model,
                text=answer.text,
                parsed=parsed,
                # ``attempts`` holds every target's calls so far, so these are the whole bill.
                input_tokens=sum(a.input_tokens for a in attempts),
                output_tokens=sum(a.output_tokens for a in attempts),
                latency_ms=(time.perf_counter() - started) * 1000,
                time_to_first_token_ms=answer.time_to_first_token_ms,
                attempts=tuple(attempts),
                tool_calls=answer.tool_calls,
            )


# --- one client per provider per process --------------------------------------------------------

CLIENTS_CAPACITY = 64  # providers with a live client in one process; the least recently used goes
# The plain call's pool keeps the openai client's limits (its DEFAULT_CONNECTION_LIMITS).
PLAIN_MAX_CONNECTIONS, PLAIN_MAX_KEEPALIVE, PLAIN_KEEPALIVE_SECONDS = 1000, 100, 5.0


@dataclass(slots=True, eq=False)
class ProviderClient:
    """A provider's client in one process: the ``openai`` client, which streams, on the httpx
    pool it was given; and the pool a plain call is posted on (decision 0054): httpcore's, the one
    httpx itself would use for the URL, without httpx's request and response layer, which cost
    more than a local model's answer. When the environment names a proxy, ``plain`` is None and a
    plain call goes through httpx, which routes it (its proxy mounts, ``NO_PROXY``). Both pools
    share one TLS context; neither follows a redirect; both have the provider's timeout."""

    openai: openai.OpenAI
    http: httpx2.Client
    plain: httpcore2.ConnectionPool | None
    completions_url: str
    headers: Mapping[str, str]
    timeout: float
    # The same URL, headers (with httpx's Host: an IPv6 host in brackets) and timeout, as
    # httpcore takes them, built once rather than on each call.
    plain_url: httpcore2.URL
    plain_headers: tuple[tuple[bytes, bytes], ...]
    plain_extensions: Mapping[str, Any]

    def close(self) -> None:
        self.openai.close()  # and the pool it was given
        if self.plain is not None:
            self.plain.close()

    def is_closed(self) -> bool:
        return self.openai.is_closed()


def _plain_pool(tls: ssl.SSLContext) -> httpcore2.ConnectionPool | None:
    """A pool built as httpx builds one for a URL no proxy takes, on the httpx pool's TLS context
    (``tls``), or None when the environment names a proxy, read as httpx reads it
    (``urllib.request.getproxies``)."""
    proxies = urllib.request.getproxies()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    return httpcore2.ConnectionPool(
        ssl_context=tls,
        max_connections=PLAIN_MAX_CONNECTIONS,
        max_keepalive_connections=PLAIN_MAX_KEEPALIVE,
        keepalive_expiry=PLAIN_KEEPALIVE_SECONDS,
    )


def _build_client(provider: Provider, api_key: str | None) -> ProviderClient:
    key = api_key or NO_KEY
    # No redirects: one would take the key to a host runs.egress never checked (httpx's default
    # for the openai client follows them). A 3xx is then a failed call, like a 4xx.
    # One TLS context for both pools: building one reads the CA store (tens of milliseconds).
    # httpx's own: SSL_CERT_FILE or SSL_CERT_DIR when set, else the system's store.
    tls = httpx2.create_ssl_context()
    pool = openai.DefaultHttpxClient(follow_redirects=False, verify=tls)
    client = openai.OpenAI(
        base_url=provider.base_url,
        api_key=key,
        timeout=provider.timeout_seconds,
        max_retries=0,
        http_client=pool,
    )
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": client.user_agent,
    }
    completions_url = f"{str(client.base_url).rstrip('/')}/chat/completions"
    url = httpx2.URL(completions_url)  # parsed as httpx would, as its transport hands it on
    try:  # as httpx encodes them; a key it could not send fails each call there, as before
        plain_headers = (
            (b"Host", httpx2.Request("POST", url).headers["Host"].encode("ascii")),
            *((k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()),
        )
        plain = _plain_pool(tls)
    except UnicodeEncodeError:
        plain_headers, plain = (), None
    seconds = provider.timeout_seconds  # httpx's Timeout(seconds): each of the four phases
    return ProviderClient(
        openai=client,
        http=pool,
        plain=plain,
        completions_url=completions_url,
        headers=headers,
        timeout=seconds,
        plain_url=httpcore2.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        ),
        plain_headers=plain_headers,
        plain_extensions=MappingProxyType(
            {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), seconds)}
        ),
    )


def _client_key(provider: Provider, api_key: str | None) -> tuple[Any, ...]:
    """Everything a client is built from, and the outbound policy its pooled connections were
    checked under. The key's value only as a digest (the key itself stays in the client)."""
    return (
        provider.pk,
        provider.updated_at,  # any save of the row: its revision
        provider.base_url,
        hashlib.sha256(api_key.encode()).hexdigest() if api_key else None,
        provider.timeout_seconds,
        provider.max_retries,
        # A pooled connection goes to the address it was opened to, whatever the name resolves
        # to now: only reused under the policy that approved that address (runs.egress).
        tuple(settings.PROVIDER_ALLOWED_HOSTS),
        settings.PROVIDER_ALLOW_LOOPBACK,
    )


@dataclass(slots=True, eq=False)
class _Entry:
    key: tuple[Any, ...]
    client: ProviderClient
    users: int = 0  # calls under way with this client
    retired: bool = False  # replaced or evicted: closed once its last call ends
    closed: bool = False


class ProviderClients:
    """One ``ProviderClient`` per provider per process, shared by its threads.

    - Rebuilt when anything it was built from changes: the provider's row (its ``updated_at``, so
      any save), the base URL, the key's value in its variable, the timeout, the outbound policy's
      settings (``_client_key``). The old one is closed once its last call under way ends.
    - Bounded: past ``capacity`` providers the least recently used client is retired the same way.
    - Thread-safe: a lock guards the table; the client itself (httpx's pool) is thread-safe.
    - After ``fork`` the child starts with an empty table and a new lock: the parent's pooled
      sockets are the parent's (two processes writing to one TLS connection corrupt it), and a
      lock held by a parent's thread at the fork would stay held in the child for ever.

    The egress check (``runs.egress``) still runs before each call, before the client is used.
    """

    def __init__(self, capacity: int = CLIENTS_CAPACITY) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.built = 0  # clients built by this process (tests and the bench count them)
        _tables.add(self)

    def reset(self) -> None:
        """Forget every client without closing it (the fork's child: they are the parent's)."""
        self._lock = threading.Lock()
        self._entries = OrderedDict()
        self.built = 0

    def clear(self) -> None:
        """Retire every client (closed once its calls end)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
            closing = [e for e in entries if self._retire(e)]
        for entry in closing:
            entry.client.close()

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def lease(self, provider: Provider, api_key: str | None) -> Iterator[ProviderClient]:
        """The provider's client for one call (built, or rebuilt, when needed)."""
        key = _client_key(provider, api_key)
        entry = self._take(provider.name, key)
        if entry is None:
            # Built outside the lock: it takes milliseconds, and other providers' calls go on.
            built = _Entry(key, _build_client(provider, api_key))
            entry, closing = self._put(provider.name, built)
            for old in closing:
                old.client.close()
        try:
            yield entry.client
        finally:
            with self._lock:
                entry.users -= 1
                close = self._closable(entry)
            if close:
                entry.client.close()

    def _take(self, name: str, key: tuple[Any, ...]) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.key != key:
                return None
            self._entries.move_to_end(name)
            entry.users += 1
            return entry

    def _put(self, name: str, built: _Entry) -> tuple[_Entry, list[_Entry]]:
        """Install a new client (or take the one another thread installed meanwhile); returns it
        and the entries to close now."""
        closing: list[_Entry] = []
        with self._lock:
            self.built += 1
            current = self._entries.get(name)
            if current is not None and current.key == built.key:
                closing.append(built)  # another thread built the same one first: use theirs
                built = current
            else:
                if current is not None and self._retire(current):
                    closing.append(current)
                self._entries[name] = built
            self._entries.move_to_end(name)
            built.users += 1
            while len(self._entries) > self.capacity:
                _, oldest = self._entries.popitem(last=False)
                if self._retire(oldest):
                    closing.append(oldest)
        return built, closing

    def _retire(self, entry: _Entry) -> bool:
        """Mark it retired; True when it may be closed now (no call under way). Under the lock."""
        entry.retired = True
        return self._closable(entry)

    @staticmethod
    def _closable(entry: _Entry) -> bool:
        if entry.retired and entry.users == 0 and not entry.closed:
            entry.closed = True
            return True
        return False


def _reset_after_fork() -> None:
    for table in list(_tables):
        table.reset()


_tables: weakref.WeakSet[ProviderClients] = weakref.WeakSet()
os.register_at_fork(after_in_child=_reset_after_fork)
clients = ProviderClients()


def _call(
    *,
    client: ProviderClient,
    target: ModelTarget,
    schema: Mapping[str, Any] | None,
    messages: list[dict[str, str]],
    on_token: Callable[[str], None] | None,
    started: float,
    cancel: Cancellation | None = None,
    tooling: _Tooling = _NO_TOOLS,
    strict_output: bool = False,
    headers: Mapping[str, str],
) -> _Answer:
    """One request, with ``headers`` beside the client's (the trace context); every way it can
    fail becomes a _Failure."""
    # Only the parameters a binding may hold (registry.content validates their values).
    kwargs: dict[str, Any] = {k: v for k, v in target.parameters.items() if k in MODEL_PARAMETERS}
    kwargs |= tooling.fields
    if schema is not None:
        # Strict where the provider accepts it (its flag); validated here all the same.
        kwargs["response_format"] = response_format(schema, strict=strict_output)
    if on_token is None:
        return _answer_of(
            _post_completion(
                client, {"model": target.model, "messages": messages, **kwargs}, headers
            ),
            tooling.names,
        )
    create: Any = (
        client.openai.chat.completions.create
    )  # Any: the messages' TypedDicts are the caller's
    with _translated():
        stream = create(
            model=target.model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=dict(headers) or None,
            **kwargs,
        )
    reading = _Reading(started=started, messages=messages, on_tool_call=tooling.on_tool_call)
    watching = cancel.watching(stream.response) if cancel is not None else contextlib.nullcontext()
    try:
        with watching, stream:
            _read_stream(iter(stream), reading, on_token, cancel)
    except _Failure as failure:
        failure.answer = reading.answer()  # what streamed before the failure was billed
        raise
    except Exception as exc:
        # Not the client's (``_translated`` took those): our reading of a strange chunk, or the
        # caller's ``on_token``. Still an outcome, with the answer's start billed.
        logger.exception("Reading the stream of %s failed unexpectedly", target.model)
        detail = f"Unexpected {type(exc).__name__} while reading the stream."
        raise _Failure(Outcome.UNEXPECTED, detail, answer=reading.answer()) from exc
    if not reading.finished:
        raise _Failure(
            Outcome.MALFORMED, "The stream ended before a finish reason.", answer=reading.answer()
        )
    answer = reading.answer()
    try:
        calls = _tool_calls(reading.tool_calls_raw(), tooling.names)
    except _Failure as failure:
        failure.answer = answer
        raise
    return _Answer(
        answer.text, answer.input_tokens, answer.output_tokens, answer.time_to_first_token_ms, calls
    )


def _post_completion(
    client: ProviderClient, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Any:
    """A plain chat completion: the JSON body as the client would send it, the answer read up to
    ``MAX_ANSWER_BYTES`` and parsed as JSON; every way it fails becomes a _Failure, as
    ``_translated`` makes them of the client's errors."""
    content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
    try:
        reply = _post(client, content, headers)
    except (httpx2.TimeoutException, httpcore2.TimeoutException) as exc:
        raise _Failure(Outcome.TIMEOUT, "No answer within the provider's timeout.") from exc
    except (httpx2.TransportError, *_TRANSPORT_ERRORS) as exc:  # refused, reset, or not HTTP
        reason = str(exc) or type(exc).__name__
        raise _Failure(Outcome.CONNECTION_ERROR, f"Connection failed: {reason}") from exc
    if not 200 <= reply.status < 300:  # a redirect too: it is not followed
        raise _status_failure(reply)
    try:
        return json.loads(reply.data)
    except (ValueError, RecursionError) as exc:
        raise _Failure(Outcome.MALFORMED, f"Unreadable answer: {type(exc).__name__}") from exc


# httpcore's errors of a connection (httpx's TransportError, before httpx wraps them).
_TRANSPORT_ERRORS = (
    httpcore2.NetworkError,
    httpcore2.ProtocolError,
    httpcore2.ProxyError,
    httpcore2.UnsupportedProtocol,
)


@dataclass(frozen=True, slots=True)
class _Reply:
    """A plain call's answer, whichever pool it came through: its header names in lower case."""

    status: int
    headers: Mapping[str, str]
    data: bytes


def _post(client: ProviderClient, content: bytes, extra: Mapping[str, str]) -> _Reply:
    """POST ``content`` to the completions URL with the client's headers and ``extra``, on the
    plain pool, or through httpx when a proxy is configured (``plain`` None)."""
    if client.plain is None:
        with client.http.stream(
            "POST",
            client.completions_url,
            content=content,
            headers={**client.headers, **extra},
            timeout=client.timeout,
        ) as response:
            data = _read_bounded(response.headers.get("content-length", ""), response.iter_bytes())
        return _Reply(response.status_code, response.headers, data)
    with client.plain.stream(
        "POST",
        client.plain_url,
        headers=[
            *client.plain_headers,
            *((name.encode("ascii"), value.encode("ascii")) for name, value in extra.items()),
        ],
        content=content,
        extensions=dict(client.plain_extensions),
    ) as answer:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in answer.headers
        }
        data = _read_bounded(headers.get("content-length", ""), answer.iter_stream())
    return _Reply(answer.status, headers, data)


def _reason(status: int) -> str:
    """The status code's standard phrase, as httpx gives it: never the server's own words."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _read_bounded(length: str, chunks: Iterable[bytes]) -> bytes:
    """The body, or MALFORMED past ``MAX_ANSWER_BYTES`` (announced or not): a hostile server's
    endless answer is never held whole."""
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise _Failure(Outcome.MALFORMED, f"The answer is larger than {MAX_ANSWER_BYTES} bytes.")
    kept, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _Failure(
                Outcome.MALFORMED, f"The answer is larger than {MAX_ANSWER_BYTES} bytes."
            )
        kept.append(chunk)
    return b"".join(kept)


def _status_failure(reply: _Reply) -> _Failure:
    """An answer that is not a 2xx: rate limited (429), the server's error (5xx), else refused."""
    status = reply.status
    try:
        body = json.loads(reply.data)
    except (ValueError, RecursionError):
        body = None
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    detail = f"HTTP {status}: {message if isinstance(message, str) else _reason(status)}"
    if status == 429:
        return _Failure(Outcome.RATE_LIMITED, detail, retry_after_seconds(reply))
    if status >= 500:
        return _Failure(Outcome.SERVER_ERROR, detail, retry_after_seconds(reply))
    return _Failure(Outcome.BAD_REQUEST, detail)


def _answer_of(answer: Any, tool_names: frozenset[str] = frozenset()) -> _Answer:
    """A chat completion's text, tool calls and usage, from its JSON; anything not shaped like
    one is malformed (the body may be any JSON, or text under another content type). An answer
    of tool calls has no text (``content`` null): its text is ""."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    text = message.get("content") if isinstance(message, dict) else None
    raw_calls = message.get("tool_calls") if isinstance(message, dict) else None
    if text is None and raw_calls:
        text = ""
    if not isinstance(text, str):
        raise _Failure(Outcome.MALFORMED, "The answer has no text content.")
    _check_size(len(text))
    input_tokens, output_tokens = _usage(answer.get("usage"))
    calls = _tool_calls(raw_calls, tool_names) if raw_calls is not None else ()
    return _Answer(text, input_tokens, output_tokens, time_to_first_token_ms=None, tool_calls=calls)


def _tool_calls(raw: Any, names: frozenset[str]) -> tuple[dict[str, Any], ...]:
    """``runs.tool_calls.tool_calls_checked``, its refusal a malformed answer."""
    try:
        return tool_calls_checked(raw, names)
    except ToolCallsInvalid as exc:
        raise _Failure(Outcome.MALFORMED, _short(str(exc))) from exc


class _Reading:
    """A streamed answer as it arrives: its text, when it started, whether it finished, its usage."""

    def __init__(
        self,
        *,
        started: float,
        messages: list[dict[str, str]],
        on_tool_call: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.started, self.messages = started, messages
        self.parts: list[str] = []
        self.size, self.first_token, self.finished, self.usage = 0, None, False, None
        self.on_tool_call = on_tool_call
        # Tool calls as they stream: by index, the id, the name and the arguments' pieces.
        self.calls: dict[int, dict[str, Any]] = {}

    def tool_call_delta(self, delta: Any) -> None:
        """One streamed piece of a tool call: the first names it, the next add argument text."""
        index = getattr(delta, "index", None)
        function = getattr(delta, "function", None)
        call_id = getattr(delta, "id", None)
        name = getattr(function, "name", None)
        arguments = getattr(function, "arguments", None)
        if not isinstance(index, int) or not 0 <= index < MAX_TOOL_CALLS:
            raise _Failure(Outcome.MALFORMED, "A streamed tool call has no valid index.")
        if any(v is not None and not isinstance(v, str) for v in (call_id, name, arguments)):
            raise _Failure(Outcome.MALFORMED, "A streamed tool call's fields are not text.")
        call = self.calls.setdefault(index, {"id": None, "name": None, "arguments": []})
        call["id"] = call["id"] or call_id
        call["name"] = call["name"] or name
        if arguments:
            self.size += len(arguments)
            _check_size(self.size)
            call["arguments"].append(arguments)
        if self.first_token is None:
            self.first_token = (time.perf_counter() - self.started) * 1000
        if self.on_tool_call is not None:
            self.on_tool_call(
                {"index": index, "id": call_id, "name": name, "arguments": arguments or ""}
            )

    def tool_calls_raw(self) -> list[dict[str, Any]] | None:
        """The streamed tool calls in the shape of a whole answer's, for ``_tool_calls``."""
        if not self.calls:
            return None
        return [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
            }
            for _, call in sorted(self.calls.items())
        ]

    def answer(self) -> _Answer:
        """The answer so far. Without the provider's usage (a stream cut before its last chunk),
        its tokens are estimated: the prompt's once any text came back, and the text's."""
        text = "".join(self.parts)
        if self.usage is not None:
            input_tokens, output_tokens = _usage(self.usage)
        elif text or self.calls:
            prompt = sum(len(m.get("content") or "") for m in self.messages)
            input_tokens, output_tokens = _estimated(prompt), _estimated(self.size)
        else:
            input_tokens = output_tokens = 0
        return _Answer(text, input_tokens, output_tokens, self.first_token)


def _read_stream(
    chunks: Iterator[Any],
    reading: _Reading,
    on_token: Callable[[str], None],
    cancel: Cancellation | None,
) -> None:
    while True:
        with _translated():
            chunk = next(chunks, None)
        if cancel is not None and cancel.cancelled:
            raise _Failure(Outcome.CANCELLED, cancel.reason)
        if chunk is None:
            return
        reading.usage = getattr(chunk, "usage", None) or reading.usage
        for choice in (getattr(chunk, "choices", None) or [])[:1]:
            reading.finished = (
                reading.finished or getattr(choice, "finish_reason", None) is not None
            )
            tool_deltas = getattr(getattr(choice, "delta", None), "tool_calls", None)
            if tool_deltas:
                if not isinstance(tool_deltas, list):
                    raise _Failure(Outcome.MALFORMED, "A chunk's tool calls are not a list.")
                for tool_delta in tool_deltas:
                    reading.tool_call_delta(tool_delta)
            delta = getattr(getattr(choice, "delta", None), "content", None)
            if not delta:
                continue
            if not isinstance(delta, str):  # the client's lenient parsing lets any JSON through
                raise _Failure(Outcome.MALFORMED, "A chunk's content is not text.")
            if reading.first_token is None:
                reading.first_token = (time.perf_counter() - reading.started) * 1000
            reading.size += len(delta)
            _check_size(reading.size)
            reading.parts.append(delta)
            on_token(delta)  # outside _translated(): the caller's errors are not the provider's


def _usage(usage: Any) -> tuple[int, int]:
    """(input, output) tokens of a usage object (a streamed chunk's) or its JSON (an answer's); a
    count that is not an integer, or past what a call record can hold, counts as 0 (a provider's
    nonsense must not make the record one the database refuses)."""
    read = (
        usage.get
        if isinstance(usage, dict)
        else lambda name, default: getattr(usage, name, default)
    )
    counts = (read("prompt_tokens", 0), read("completion_tokens", 0))
    return tuple(n if isinstance(n, int) and 0 <= n <= MAX_TOKENS else 0 for n in counts)  # type: ignore[return-value]


def _estimated(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def reraise_time_limit(exc: BaseException) -> None:
    """A worker task's soft time limit ends the task, never just one attempt: Celery raises it in
    whatever code was running, and the openai client wraps it like any error of the connection,
    so it is looked for along the chain of causes and raised again as itself."""
    seen: BaseException | None = exc
    for _ in range(16):  # a chain of causes is short; a cycle must not loop
        if seen is None:
            return
        if isinstance(seen, SoftTimeLimitExceeded):
            raise seen
        seen = seen.__cause__ or seen.__context__


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Map the client's exceptions to outcomes; keep only a short message, never a traceback."""
    try:
        yield
    except openai.APIStatusError as exc:
        status = exc.status_code
        detail = f"HTTP {status}: {_error_message(exc)}"
        if status == 429:
            raise _Failure(Outcome.RATE_LIMITED, detail, retry_after_seconds(exc.response)) from exc
        if status >= 500:
            raise _Failure(Outcome.SERVER_ERROR, detail, retry_after_seconds(exc.response)) from exc
        raise _Failure(Outcome.BAD_REQUEST, detail) from exc
    except openai.APITimeoutError as exc:  # before APIConnectionError, its base class
        raise _Failure(Outcome.TIMEOUT, "No answer within the provider's timeout.") from exc
    except openai.APIConnectionError as exc:
        raise _Failure(Outcome.CONNECTION_ERROR, f"Connection failed: {exc}") from exc
    except (openai.APIResponseValidationError, ValueError) as exc:
        # openai 3.x raises a bare json.JSONDecodeError (a ValueError) on a body that is not JSON.
        raise _Failure(Outcome.MALFORMED, f"Unreadable answer: {type(exc).__name__}") from exc
    except openai.APIError as exc:
        # What is left of the client's own errors: an error event in the middle of a stream (it
        # raises the bare APIError for ``data: {"error": …}``, as OpenAI sends on an overload).
        raise _Failure(Outcome.STREAM_ERROR, f"Error event mid-stream: {exc.message}") from exc
    except httpx2.TimeoutException as exc:
        # Mid-stream the client reads the body itself and passes httpx's errors on unwrapped.
        raise _Failure(Outcome.TIMEOUT, "No data within the provider's timeout.") from exc
    except httpx2.TransportError as exc:  # the connection dropped, reset, or broke HTTP mid-answer
        reason = str(exc) or type(exc).__name__
        raise _Failure(Outcome.CONNECTION_ERROR, f"Connection lost: {reason}") from exc


def _error_message(exc: openai.APIStatusError) -> str:
    # The client passes on the body's "error" object (or the whole body when it has none).
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else exc.response.reason_phrase


def _pause(seconds: float, cancel: Cancellation | None) -> None:
    """A retry's backoff; a cancellation ends it at once (the caller is gone)."""
    if cancel is None:
        _sleep(seconds)
    else:
        cancel.wait(seconds)


def _check_size(size: int) -> None:
    if size > MAX_ANSWER_CHARS:
        raise _Failure(
            Outcome.MALFORMED, f"The answer is longer than {MAX_ANSWER_CHARS} characters."
        )


def _validate(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(value, None) when the text is JSON valid against the schema, else (None, what is wrong)."""
    try:
        # The strict parser the API reads bodies with: a model's NaN, Infinity or NUL would pass
        # json.loads, then fail the answer's JSON and the call record's jsonb (no record kept).
        value = strict_json_loads(text)
    except (ValueError, RecursionError) as exc:
        return None, _short(f"it is not valid JSON ({exc})")
    validator = schema_validator(schema)  # references stay inside the schema: never a fetch
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        return None, _short(error.message)
    return value, None


def _short(text: str) -> str:
    text = storable(text)  # a detail is stored with the call: a provider's message may hold a NUL
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _redact(detail: str, api_key: str | None) -> str:
    """An error message may echo the key (a 401's "Incorrect API key provided: sk-..."): hide it."""
    return _short(detail.replace(api_key, "[redacted]") if api_key else detail)
