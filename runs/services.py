"""Writes of the runs app: providers (calls, shadows and outcomes arrive with the rest of issue 4)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from registry.errors import Problem, ProblemsError

from .models import Provider


class ProviderInvalid(ProblemsError):
    message = "The provider's settings are not valid."


@transaction.atomic
def provider_save(
    *,
    name: str,
    base_url: str,
    api_key_env: str = "",
    timeout_seconds: float = 30.0,
    max_retries: int = 2,
    enabled: bool = True,
) -> tuple[Provider, bool]:
    """Creates the provider, or updates the one with that name; returns it and whether it is new.

    Idempotent, so ``make run`` can configure the local provider every time."""
    provider = Provider.objects.select_for_update().filter(name=name).first()
    created = provider is None
    provider = provider or Provider(name=name)
    provider.base_url = base_url
    provider.api_key_env = api_key_env
    provider.timeout_seconds = timeout_seconds
    provider.max_retries = max_retries
    provider.enabled = enabled
    try:
        provider.full_clean()
    except ValidationError as exc:
        raise ProviderInvalid(
            [
                Problem(
                    "invalid_" + field if field != "__all__" else "invalid", message, f"/{field}"
                )
                for field, messages in exc.message_dict.items()
                for message in messages
            ]
        ) from exc
    provider.save()
    return provider, created
