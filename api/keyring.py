"""API keys held in memory for the runtime path, so a warm resolve runs no SQL query.

The keyring trusts its copy while the release cache's Redis listener is connected: a key created or
revoked anywhere publishes an ``apikeys`` message after commit and every process drops its copy.
Without that listener (no Redis, or Redis down) it reads the key from the database each time.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from functools import partial

from django.db import transaction

from releases.cache import publish, release_cache

from .models import ApiKey, key_hash, key_lookup_id


@dataclass(frozen=True, slots=True)
class KeyEntry:
    pk: int
    name: str
    hashed_key: str
    scopes: frozenset[str]
    environments: frozenset[str]

    def allows_environment(self, environment: str) -> bool:
        return not self.environments or environment in self.environments


def _entry(key: ApiKey) -> KeyEntry:
    return KeyEntry(
        pk=key.pk,
        name=key.name,
        hashed_key=key.hashed_key,
        scopes=frozenset(key.scopes),
        environments=frozenset(key.environments),
    )


class Keyring:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, KeyEntry] | None = None

    def clear(self, _message: dict | None = None) -> None:
        with self._lock:
            self._keys = None

    def _active(self) -> dict[str, KeyEntry]:
        keys = self._keys
        if keys is None:
            keys = {k.lookup_id: _entry(k) for k in ApiKey.objects.filter(revoked_at__isnull=True)}
            with self._lock:
                self._keys = keys
        return keys

    def authenticate(self, raw: str) -> KeyEntry | None:
        lookup_id = key_lookup_id(raw)
        if lookup_id is None:
            return None
        if release_cache().trusted:
            entry = self._active().get(lookup_id)
        else:
            key = ApiKey.objects.filter(lookup_id=lookup_id, revoked_at__isnull=True).first()
            entry = _entry(key) if key is not None else None
        if entry is None or not hmac.compare_digest(entry.hashed_key, key_hash(raw)):
            return None
        return entry


keyring = Keyring()
release_cache().on("apikeys", keyring.clear)


def keys_changed_on_commit() -> None:
    """Every process drops its keyring once the change is committed."""
    transaction.on_commit(partial(publish, {"kind": "apikeys"}))
    transaction.on_commit(keyring.clear)
