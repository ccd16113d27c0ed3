"""API keys held in memory for the runtime path, so a warm resolve runs no SQL query.

The keyring trusts its copy while the release cache's Redis listener is connected: a key created or
revoked anywhere publishes an ``apikeys`` message after commit and every process drops its copy
(as it does whenever the listener reconnects, since messages may have been missed). Without that
listener (no Redis, or Redis down) it reads the key from the database each time.

- A key missing from a trusted copy is looked up in the database once before it is refused, so a
  lost "key created" message costs a query, never a wrongly refused key.
- Database down: the last entry read for that key answers (the runtime serves cached releases in
  the same way and says so); a key never seen by this process is refused.
"""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass
from functools import partial

from django.db import transaction

from releases.cache import DATABASE_OUTAGE, publish, release_cache

from .models import ApiKey, key_hash, key_lookup_id

logger = logging.getLogger(__name__)


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
        self._keys: dict[str, KeyEntry] | None = None  # every active key, while trusted
        self._last_known: dict[str, KeyEntry] = {}  # for when the database is down
        # Bumped by every ``clear``: a load that read the database before a key was revoked must
        # not store what it read after the revocation's message dropped the copy.
        self._generation = 0

    def clear(self, _message: dict | None = None) -> None:
        """A key changed somewhere (or the listener reconnected): read the keys again. The
        last-known entries stay for a database outage; each read refreshes them."""
        with self._lock:
            self._keys = None
            self._generation += 1

    def reset(self) -> None:
        """Forgets everything, the last-known entries too (tests start from nothing)."""
        with self._lock:
            self._keys = None
            self._last_known = {}
            self._generation += 1

    def _active(self) -> dict[str, KeyEntry]:
        keys = self._keys
        if keys is None:
            generation = self._generation
            keys = {k.lookup_id: _entry(k) for k in ApiKey.objects.filter(revoked_at__isnull=True)}
            with self._lock:
                if generation == self._generation:
                    self._keys = keys
                    self._last_known = dict(keys)
        return keys

    def _read(self, lookup_id: str) -> KeyEntry | None:
        generation = self._generation
        key = ApiKey.objects.filter(lookup_id=lookup_id, revoked_at__isnull=True).first()
        entry = _entry(key) if key is not None else None
        with self._lock:
            if generation == self._generation:
                if entry is None:
                    self._last_known.pop(lookup_id, None)
                else:
                    self._last_known[lookup_id] = entry
                    if self._keys is not None:
                        self._keys = {**self._keys, lookup_id: entry}
        return entry

    def authenticate(self, raw: str) -> KeyEntry | None:
        """The key's entry, or None when it is unknown or revoked. Raises ``DatabaseError`` when
        the database is down and this process has never seen the key."""
        lookup_id = key_lookup_id(raw)
        if lookup_id is None:
            return None
        try:
            if release_cache().trusted:
                entry = self._active().get(lookup_id) or self._read(lookup_id)
            else:
                entry = self._read(lookup_id)
        except DATABASE_OUTAGE:
            entry = self._last_known.get(lookup_id)
            if entry is None:
                # Never seen here and unreadable: whether the key is valid cannot be told, so the
                # caller hears of the outage (the caller answers 503), never that its key is wrong.
                raise
            logger.warning("Database unavailable: checking key %s from memory", lookup_id)
        if entry is None or not hmac.compare_digest(entry.hashed_key, key_hash(raw)):
            return None
        return entry


keyring = Keyring()
release_cache().on("apikeys", keyring.clear)


def keys_changed_on_commit() -> None:
    """Every process drops its keyring once the change is committed."""
    transaction.on_commit(partial(publish, {"kind": "apikeys"}))
    transaction.on_commit(keyring.clear)
