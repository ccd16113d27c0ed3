"""Sealed shadow payloads: the caller's variables cross the broker encrypted, and expire.

A shadow run must see the variables the live call had, unredacted (a call record keeps only the
redacted ones), and the job waits in Redis until a worker takes it. So the variables and the locale
travel as one Fernet token (AES-128-CBC with HMAC-SHA256, and the time it was sealed): what sits in
Redis, in its snapshots and in its replicas is ciphertext, and a token older than
``SHADOW_JOB_TTL_SECONDS`` is refused when opened. The Celery message carries the same expiry
(``expires``), so a worker drops a job that waited too long without looking at it
(decision 0016).

Keys. ``SHADOW_PAYLOAD_KEYS`` lists secrets, newest first; with none, the keys are derived from
``SECRET_KEY`` and then ``SECRET_KEY_FALLBACKS``, so rotating Django's secret the documented way
(new key first, the old one among the fallbacks until queued jobs are gone) rotates these too. Each
secret becomes a Fernet key through HKDF-SHA256 with a purpose of its own, so a payload key is never
the secret itself nor any other key derived from it. The first key seals; every key opens.

Pure module: no models, only the settings and the system-check framework.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core import checks

# Changing it makes every queued payload unreadable: a new purpose is a new key, never an edit.
HKDF_INFO = b"promptregistry.runs.shadow-payload.v1"
MIN_SECRET_LENGTH = 32


class PayloadRefused(StrEnum):
    """Why a sealed payload could not be opened: what the shadow run records as its error."""

    EXPIRED = "payload_expired"
    UNREADABLE = "payload_unreadable"  # another key (rotated away), tampered with, or not a token


class PayloadError(Exception):
    def __init__(self, reason: PayloadRefused) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ShadowPayload:
    variables: dict[str, Any]
    locale: str
    # The messages the live call appended after the prompt's (decision 0042); none in a payload
    # sealed before there were any.
    conversation: tuple[dict[str, Any], ...] = ()


def _fernet_key(secret: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
        secret.encode("utf-8")
    )
    return base64.urlsafe_b64encode(derived)


def _secrets() -> list[str]:
    configured = list(settings.SHADOW_PAYLOAD_KEYS)
    if configured:
        return configured
    return [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]


def _fernet() -> MultiFernet:
    # Derived at call time (microseconds), so override_settings and a rotation take effect at once.
    return MultiFernet([Fernet(_fernet_key(secret)) for secret in _secrets()])


def payload_seal(
    *,
    variables: Mapping[str, Any],
    locale: str,
    conversation: Sequence[Mapping[str, Any]] = (),
    now: float | None = None,
) -> str:
    """The variables, locale and conversation as a token for the broker; ``now`` (a Unix time)
    for tests."""
    data: dict[str, Any] = {"variables": dict(variables), "locale": locale}
    if conversation:
        data["conversation"] = [dict(message) for message in conversation]
    plain = json.dumps(data, ensure_ascii=False).encode("utf-8")
    at = int(time.time() if now is None else now)
    return _fernet().encrypt_at_time(plain, at).decode("ascii")


def payload_open(token: str, *, now: float | None = None) -> ShadowPayload:
    """The payload a token seals; ``PayloadError`` when it is older than
    ``SHADOW_JOB_TTL_SECONDS`` or no key in force opens it."""
    at = int(time.time() if now is None else now)
    fernet = _fernet()
    try:
        plain = fernet.decrypt_at_time(token, ttl=settings.SHADOW_JOB_TTL_SECONDS, current_time=at)
    except InvalidToken as exc:
        # Fernet says only "invalid"; opening without the age limit tells expired from unreadable.
        try:
            fernet.extract_timestamp(token)
        except (InvalidToken, TypeError, ValueError):
            raise PayloadError(PayloadRefused.UNREADABLE) from exc
        raise PayloadError(PayloadRefused.EXPIRED) from exc
    except (TypeError, ValueError) as exc:  # not even text
        raise PayloadError(PayloadRefused.UNREADABLE) from exc
    data = json.loads(plain)
    return ShadowPayload(
        variables=data["variables"],
        locale=data["locale"],
        conversation=tuple(data.get("conversation", ())),
    )


def shadow_payload_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``SHADOW_PAYLOAD_KEYS`` holds secrets long enough to be keys (runs.E010), and a job outlives
    the broker's visibility timeout, so a job a dead worker held still runs once (runs.W010)."""
    messages: list[checks.CheckMessage] = []
    keys = settings.SHADOW_PAYLOAD_KEYS
    if isinstance(keys, str) or not isinstance(keys, list | tuple):
        keys = [keys]
    for index, secret in enumerate(keys):
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            messages.append(
                checks.Error(
                    f"SHADOW_PAYLOAD_KEYS[{index}] is not a secret of at least "
                    f"{MIN_SECRET_LENGTH} characters.",
                    hint="Generate one with: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'",
                    id="runs.E010",
                )
            )
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    if visibility >= settings.SHADOW_JOB_TTL_SECONDS:
        messages.append(
            checks.Warning(
                f"SHADOW_JOB_TTL_SECONDS ({settings.SHADOW_JOB_TTL_SECONDS}) is not longer than "
                f"the broker's visibility timeout ({visibility}).",
                hint="A shadow job held by a worker that died expires before it is delivered "
                "again, and is recorded as payload_expired.",
                id="runs.W010",
            )
        )
    return messages
