"""Writes of the api app: API keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from registry.errors import Problem, ProblemsError
from releases.selectors import environment_list

from .keyring import keys_changed_on_commit
from .models import ApiKey, Scope, key_generate, key_hash


class ApiKeyInvalid(ProblemsError):
    message = "The API key's settings are not valid."


@transaction.atomic
def apikey_create(
    *, name: str, scopes: Iterable[str], environments: Iterable[str] = (), owner: Any = None
) -> tuple[ApiKey, str]:
    """Creates a key and returns it with the full secret, which is never shown again. A key with
    an ``owner`` (a user) acts as that person: it may review change requests as they may."""
    scopes, environments = sorted(set(scopes)), sorted(set(environments))
    known = {str(s) for s in Scope}
    problems = [
        Problem(
            "unknown_scope", f"Unknown scope {s!r}; known: {', '.join(sorted(known))}.", "/scopes"
        )
        for s in scopes
        if s not in known
    ]
    if not scopes:
        problems.append(Problem("no_scope", "Give the key at least one scope.", "/scopes"))
    # The name is what audit labels show ("key:<name>#<id>"): no line breaks or other control
    # characters to forge a line with, no "#" to forge an id with.
    if not name.strip() or len(name) > 100 or not name.isprintable() or "#" in name:
        problems.append(
            Problem(
                "invalid_name",
                "Name the key (1 to 100 printable characters, without '#').",
                "/name",
            )
        )
    # A misspelt limit would make a key that silently fits no environment at all.
    existing = set(environment_list(names=environments).values_list("name", flat=True))
    problems += [
        Problem("unknown_environment", f"There is no environment {e!r}.", "/environments")
        for e in environments
        if e not in existing
    ]
    if problems:
        raise ApiKeyInvalid(problems)
    lookup_id, raw = key_generate()
    key = ApiKey.objects.create(
        name=name.strip(),
        lookup_id=lookup_id,
        hashed_key=key_hash(raw),
        scopes=scopes,
        environments=environments,
        owner=owner,
    )
    # After commit, so no web process reloads its keyring before the row exists.
    keys_changed_on_commit()
    return key, raw


@transaction.atomic
def apikey_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        keys_changed_on_commit()
    return key
