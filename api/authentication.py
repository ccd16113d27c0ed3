"""Bearer API keys for DRF views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from config.logs import note
from registry.actors import Actor

from .models import ApiKey, key_lookup_id

# Recording every use would make every read a write; a minute's precision is enough to tell a key
# that is still in use from one that can be revoked.
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """``request.user`` for a request authenticated by an API key."""

    key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def actor(self) -> Actor:
        return Actor.for_api_key(
            name=self.key.name,
            key_id=self.key.pk,
            environments=self.key.environments,
            owner=self.key.owner,
        )


def bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def apikey_authenticate(raw: str) -> ApiKey | None:
    lookup_id = key_lookup_id(raw)
    if lookup_id is None:
        return None
    # From the primary, even for a GET whose reads go to the replica (api.replica): a key
    # revoked a moment ago is refused at once, whatever the replica's lag. Named, not routed, so
    # the bookkeeping write below does not send the rest of the request to the primary too.
    keys = ApiKey.objects.using(DEFAULT_DB_ALIAS)
    key = keys.filter(lookup_id=lookup_id).first()
    if key is None or not key.is_active or not key.matches(raw):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_PRECISION:
        keys.filter(pk=key.pk).update(last_used_at=now)
    return key


def header_key(header: str) -> ApiKey:
    """The active key an ``Authorization`` header sends, or ``AuthenticationFailed`` (a 401):
    what the DRF views and the MCP server (``api.mcpserver``) authenticate with."""
    raw = bearer_token(header)
    if raw is None:
        raise exceptions.AuthenticationFailed("Send the key as 'Authorization: Bearer <key>'.")
    key = apikey_authenticate(raw)
    if key is None:
        raise exceptions.AuthenticationFailed("The API key is unknown or revoked.")
    note(key_id=key.pk)
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[KeyPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        key = header_key(header)
        return KeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with this challenge) rather than 403 when no key is sent.
        return 'Bearer realm="api"'
