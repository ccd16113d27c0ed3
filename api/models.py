"""API keys: shown once, stored hashed, scoped, optionally limited to environments."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from enum import StrEnum

from django.conf import settings
from django.db import models

KEY_PREFIX = "pr"
# What ``key_generate`` makes a lookup id of (12 hex digits). A bearer token is checked against it
# before the id is looked up: anything else is an unknown key, and never reaches the database.
LOOKUP_ID = re.compile(r"[0-9a-f]{12}")


class Scope(StrEnum):
    PROMPTS_READ = "prompts:read"
    PROMPTS_WRITE = "prompts:write"
    RELEASES_WRITE = "releases:write"
    RUNS_EXECUTE = "runs:execute"
    EVENTS_WRITE = "events:write"


def key_hash(secret: str) -> str:
    """SHA-256 of the whole key. Keys carry 256 random bits, so a salt or a slow hash adds nothing;
    a fast hash keeps the per-request check cheap on the runtime path."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_generate() -> tuple[str, str]:
    """A new key as (lookup id, full key): ``pr_<id>_<secret>``. The id finds the row; only the
    hash of the full key is stored."""
    lookup = secrets.token_hex(6)
    return lookup, f"{KEY_PREFIX}_{lookup}_{secrets.token_urlsafe(32)}"


def key_lookup_id(raw: str) -> str | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not LOOKUP_ID.fullmatch(parts[1]):
        return None
    return parts[1]


class ApiKey(models.Model):
    name = models.CharField(max_length=100, help_text="Who uses it: a service, a CI job.")
    lookup_id = models.CharField(max_length=12, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="e.g. prompts:read, releases:write")
    # Empty: every environment. Otherwise the names of the environments the key may touch.
    environments = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A person's own key acts as them (``Actor.for_api_key``): it may review change requests where
    # they may (decision 0048). None: a service's or a CI job's key, which never reviews.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The person this key acts for, if any: it may review as they may.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.lookup_id}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def matches(self, raw: str) -> bool:
        return hmac.compare_digest(self.hashed_key, key_hash(raw))

    def has_scope(self, scope: Scope) -> bool:
        return str(scope) in self.scopes

    def allows_environment(self, environment: str) -> bool:
        return not self.environments or environment in self.environments
