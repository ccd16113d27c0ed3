"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec 1.0.0, symmetric scheme).

Pure: the standard library only. What the specification fixes, and the reference library
(``standard-webhooks/standard-webhooks``, ``libraries/python``) does:

- a secret is 24 to 64 random bytes, shown as ``whsec_`` + base64 (we make 32 bytes);
- the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``: the id, the attempt's Unix
  time in whole seconds, and the body exactly as sent (bytes, not a re-serialization);
- a signature is ``v1,`` + base64 of HMAC-SHA256 over it, keyed with the secret's bytes;
- ``webhook-signature`` is a space-separated list: during a rotation the message is signed with
  the new secret and the previous one, and a receiver accepts it if any signature matches;
- an id holds no ``.``: it is part of the signed content's framing.

Its test vector (the same in every language of the reference) is in tests/webhooks/test_signing.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification allows 24 to 64
SIGNATURE_VERSION = "v1"  # HMAC-SHA256; ``v1a`` would be ed25519


class SecretInvalid(ValueError):
    """Not a ``whsec_`` secret of 24 to 64 bytes."""


def secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The bytes a ``whsec_`` secret stands for (padding optional, as the reference accepts)."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretInvalid("A webhook secret starts with whsec_.")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError as exc:
        raise SecretInvalid("A webhook secret is whsec_ followed by base64.") from exc
    if not 24 <= len(key) <= 64:
        raise SecretInvalid("A webhook secret holds 24 to 64 bytes.")
    return key


def message_id_new() -> str:
    """A ``webhook-id``: unique, with no ``.``; the same for every attempt of one message."""
    return "msg_" + secrets.token_hex(16)


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(
    secrets_in_use: Sequence[str], *, message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one signature per secret in use, space-separated."""
    return " ".join(
        signature(secret, message_id=message_id, timestamp=timestamp, body=body)
        for secret in secrets_in_use
    )
