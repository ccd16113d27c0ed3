"""One delivery attempt over HTTP: the outbound policy, then a signed POST with its limits.

1. The URL is checked again, resolving its host (``runs.egress`` under the webhooks' settings):
   a subscription saved before the rules, or whose name now resolves to a private address, is
   refused before anything is sent (outcome ``refused``, nothing connected to).
2. The body is POSTed with the Standard Webhooks headers, signed for this attempt's time with
   every secret in use (``webhooks.signing``).
3. Limits: ``WEBHOOK_CONNECT_TIMEOUT_SECONDS`` to connect, ``WEBHOOK_READ_TIMEOUT_SECONDS`` for
   each read; at most ``WEBHOOK_RESPONSE_EXCERPT_BYTES`` of the answer are read (undecoded:
   ``identity`` is asked for), and no more once the read timeout has passed since the headers;
   no redirect is followed (a 3xx is a failure, as the specification says); no proxy from the
   environment (the policy checked the host the request connects to). The Celery task's time
   limit stands behind them all.
4. A 2xx answer is delivered; anything else (an answer, a timeout, a connection error) failed.

Nothing here touches the database: the caller records the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from runs.egress import WEBHOOKS, url_refusal

from .models import ERROR_MAX, DeliveryAttempt
from .signing import signature_header

Outcome = DeliveryAttempt.Outcome
USER_AGENT = "prompt-registry-webhooks/1"
CHUNK_BYTES = 512


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: str  # an Outcome
    status_code: int | None = None
    latency_ms: int | None = None
    response_excerpt: str = ""
    error: str = ""
    # Seconds the receiver asked to wait (a 429 or 503's Retry-After), if it said.
    retry_after: float | None = None

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver wants no more (the specification: disable the endpoint)."""
        return self.status_code == 410


def attempt_send(
    *, url: str, message_id: str, body: bytes, secrets_in_use: Sequence[str]
) -> AttemptResult:
    """One attempt; the numbered steps are in the module docstring."""
    why = url_refusal(url, resolve=True, policy=WEBHOOKS)
    if why:
        return AttemptResult(Outcome.REFUSED, error=_short(f"Refused: {why}"))
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets_in_use, message_id=message_id, timestamp=timestamp, body=body
        ),
    }
    read_seconds = settings.WEBHOOK_READ_TIMEOUT_SECONDS
    timeout = httpx.Timeout(
        connect=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS,
        read=read_seconds,
        write=read_seconds,
        pool=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS,
    )
    started = time.perf_counter()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            excerpt = _excerpt(response, deadline=time.monotonic() + read_seconds)
    except httpx.TimeoutException as exc:
        return _failed(started, f"Timed out ({type(exc).__name__}): no answer in time.")
    except httpx.HTTPError as exc:
        return _failed(started, f"Could not deliver: {type(exc).__name__}: {exc}")
    except SoftTimeLimitExceeded:
        # The receiver held the request past the task's time limit (a trickling answer).
        return _failed(started, "Timed out: the answer outlasted the task's time limit.")
    latency_ms = _elapsed_ms(started)
    code = response.status_code
    if 200 <= code < 300:
        return AttemptResult(Outcome.DELIVERED, code, latency_ms, excerpt)
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        error = (
            f"HTTP {code}: redirects are not followed (to {location or 'nowhere'}); update the URL."
        )
    else:
        error = f"HTTP {code}."
    return AttemptResult(
        Outcome.FAILED,
        code,
        latency_ms,
        excerpt,
        _short(error),
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def _excerpt(response: httpx.Response, *, deadline: float) -> str:
    limit = settings.WEBHOOK_RESPONSE_EXCERPT_BYTES
    kept = bytearray()
    if limit:
        for chunk in response.iter_raw(CHUNK_BYTES):
            kept += chunk
            if len(kept) >= limit or time.monotonic() > deadline:
                break
    return _text(bytes(kept[:limit]).decode("utf-8", "replace"))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _failed(started: float, error: str) -> AttemptResult:
    return AttemptResult(Outcome.FAILED, latency_ms=_elapsed_ms(started), error=_short(error))


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _text(text: str) -> str:
    # What the receiver sent is stored: PostgreSQL's text takes no NUL, and a row the log cannot
    # take would leave the attempt unrecorded, and tried again, for ever.
    return text.replace("\x00", "\ufffd")


def _short(text: str) -> str:
    text = _text(text)
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"
