"""Scopes as permission classes, and the environment limits of a key."""

from __future__ import annotations

from functools import cache

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from .models import ApiKey, Scope
from .problems import ENVIRONMENT_FORBIDDEN, INSUFFICIENT_SCOPE, ProblemException


def request_key(request: Request) -> ApiKey:
    return request.auth


@cache
def HasScope(scope: Scope | str) -> type[BasePermission]:
    """``permission_classes = [HasScope(Scope.PROMPTS_WRITE)]``: the key must carry ``scope``."""
    scope = Scope(scope)

    class _HasScope(BasePermission):
        def has_permission(self, request: Request, view) -> bool:
            key = request.auth
            if not isinstance(key, ApiKey):
                return False  # unauthenticated: DRF answers 401 with the challenge
            key_scope_check(key, scope)
            return True

    _HasScope.__name__ = _HasScope.__qualname__ = f"HasScope({scope})"
    _HasScope.scope = scope  # the bucket api.ratelimit takes the request's token from
    return _HasScope


def scope_by_method(request: Request, *, read: Scope, write: Scope) -> list[BasePermission]:
    """``get_permissions`` of a view that reads and writes: ``read`` for the safe methods (GET,
    HEAD, OPTIONS: a HEAD is a GET without its body), ``write`` for the others."""
    return [HasScope(read if request.method in SAFE_METHODS else write)()]


def ensure_environment_allowed(request: Request, environment: str) -> None:
    """Object permissions do not cover lists or creates, so views call this with the environment
    named in the path or body before calling a service (STYLE R11)."""
    key = request.auth
    if isinstance(key, ApiKey):
        key_environment_check(key, environment)


def key_scope_check(key: ApiKey, scope: Scope) -> None:
    """Refuses (403 ``insufficient-scope``) a key without ``scope``: the API's views and the MCP
    server's tools alike."""
    if not key.has_scope(scope):
        raise ProblemException(
            INSUFFICIENT_SCOPE,
            f"This needs the {scope} scope; the key has {', '.join(key.scopes) or 'none'}.",
            required_scope=str(scope),
        )


def key_environment_check(key: ApiKey, environment: str) -> None:
    """Refuses (403 ``environment-forbidden``) a key limited to other environments."""
    if not key.allows_environment(environment):
        raise ProblemException(
            ENVIRONMENT_FORBIDDEN,
            f"The key is limited to {', '.join(key.environments)}; it may not touch {environment}.",
            environment=environment,
        )
