"""Writes of the runs app: providers and call retention (runs: runs.execution; shadows:
runs.shadows; reported outcomes: runs.events)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from registry.errors import Problem, ProblemsError, RegistryError

from .calls import KeyRef
from .models import Call, ModelPrice, Provider, ShadowRun


class ProviderInvalid(ProblemsError):
    message = "The provider's settings are not valid."


class CallNotFound(RegistryError):
    message = "There is no call with that request id (or the key may not see its environment)."


@transaction.atomic
def provider_save(
    *,
    name: str,
    base_url: str,
    api_key_env: str = "",
    timeout_seconds: float = 30.0,
    max_retries: int = 2,
    enabled: bool = True,
    strict_output: bool | None = None,
) -> tuple[Provider, bool]:
    """Creates the provider, or updates the one with that name; returns it and whether it is new.
    ``strict_output`` None keeps what the provider had (on for a new one).

    Idempotent, so ``make run`` can configure the local provider every time."""
    provider = Provider.objects.select_for_update().filter(name=name).first()
    created = provider is None
    provider = provider or Provider(name=name)
    provider.base_url = base_url
    provider.api_key_env = api_key_env
    provider.timeout_seconds = timeout_seconds
    provider.max_retries = max_retries
    provider.enabled = enabled
    if strict_output is not None:
        provider.strict_output = strict_output
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


@transaction.atomic
def model_price_set(
    *, provider: str, model: str, input_per_million: Decimal, output_per_million: Decimal
) -> ModelPrice:
    """Sets what ``model`` costs at ``provider`` per million input and output tokens (for the cost
    of every call from now on; recorded calls keep theirs)."""
    found = Provider.objects.filter(name=provider).first()
    problems = []
    if found is None:
        problems.append(
            Problem("unknown_provider", f"No provider named {provider!r}.", "/provider")
        )
    if not model or len(model) > 200:
        problems.append(
            Problem("invalid_model", "Name the model (at most 200 characters).", "/model")
        )
    for field, value in (
        ("input_per_million", input_per_million),
        ("output_per_million", output_per_million),
    ):
        if not value.is_finite() or value < 0 or value >= Decimal(1_000_000):
            problems.append(
                Problem(
                    "invalid_price",
                    "A price from 0 to 999999.999999 per million tokens.",
                    f"/{field}",
                )
            )
    if problems:
        raise ProviderInvalid(problems)
    price, _ = ModelPrice.objects.update_or_create(
        provider=found,
        model=model,
        defaults={"input_per_million": input_per_million, "output_per_million": output_per_million},
    )
    return price


@transaction.atomic
def call_feedback_set(
    *,
    request_id: str,
    feedback: float,
    environments: Collection[str] = (),
    key: KeyRef | None = None,
) -> Call:
    """Records the user's verdict on a call the registry ran, after the fact (``feedback`` from -1,
    bad, to 1, good; a later verdict replaces an earlier one). ``environments`` limits which calls
    may be touched (empty: any). A request id a caller reused names its latest call. ``key`` is the
    API key that sent it, kept with it: a canary analysis counts it only if it trusts that key."""
    calls = Call.objects.select_for_update().filter(request_id=request_id)
    if environments:
        calls = calls.filter(environment__name__in=environments)
    call = calls.order_by("-created_at", "-id").first()
    if call is None:
        raise CallNotFound()
    call.feedback = feedback
    call.feedback_key_id = key.id if key else None
    call.feedback_key_label = key.label if key else ""
    call.save(update_fields=["feedback", "feedback_key_id", "feedback_key_label"])
    return call


DELETE_BATCH = 1000


def calls_delete_expired(*, now: datetime | None = None, batch: int = DELETE_BATCH) -> int:
    """Delete calls (and their shadow runs) older than ``CALL_RETENTION_DAYS``; returns how many.

    In batches, each its own short transaction, so a large backlog never holds locks for long."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CALL_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(Call.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        with transaction.atomic():
            ShadowRun.objects.filter(call_id__in=ids).delete()
            Call.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
