"""Providers and model prices held in memory for the run path, so a warm run reads neither.

Held as the API keyring holds keys (api/keyring.py): the copy is trusted while the release cache's
Redis listener is connected. A provider or price saved or deleted anywhere publishes a
``providers`` message after commit and every process drops its copy (as it does whenever the
listener reconnects, since messages may have been missed). Without that listener (no Redis, or
Redis down) each run reads its binding's providers and prices from the database, as before.

What a stale copy could do is bounded by that message: an operator who disables a provider
during an incident is heard by every process as soon as the change commits.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from registry.content import ModelBinding
from releases.cache import DATABASE_OUTAGE, publish, release_cache

from .models import ModelPrice, Provider

PricesByModel = Mapping[tuple[str, str], ModelPrice | None]


@dataclass(frozen=True, slots=True)
class BindingProviders:
    """What a run needs of the providers its binding names (primary and fallbacks)."""

    providers: Mapping[str, Provider]  # by name; a name with no row is absent
    # By (provider, model) for every target: the price, or None for a model without one. A call
    # is priced from these, never from another read (``runs.calls.attempts_cost``).
    prices: PricesByModel


@dataclass(frozen=True, slots=True)
class _Table:
    providers: Mapping[str, Provider]
    prices: Mapping[tuple[str, str], ModelPrice]


def _targets(binding: ModelBinding) -> list[tuple[str, str]]:
    targets = [
        (binding.provider, binding.model),
        *((t.provider, t.model) for t in binding.fallbacks),
    ]
    # The semantic cache's embedding provider (runs.semantic_cache): its row, read with the rest.
    semantic = binding.cache.get("semantic") if binding.cache else None
    if isinstance(semantic, Mapping):
        targets.append((str(semantic.get("provider")), str(semantic.get("model"))))
    return targets


class ProviderCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: _Table | None = None  # every provider and price, while trusted
        # Bumped by every ``clear``: a load that read the database before a change must not store
        # what it read after the change's message dropped the copy.
        self._generation = 0
        self._last_strict_outputs: dict[str, bool] = {}

    def clear(self, _message: dict | None = None) -> None:
        """A provider or price changed somewhere (or the listener reconnected): read them again."""
        with self._lock:
            self._table = None
            self._generation += 1

    def binding(self, binding: ModelBinding) -> BindingProviders:
        """The binding's providers and its targets' prices: from memory while trusted, else from
        the database (two queries). Raises ``DatabaseError`` when it must read and cannot."""
        targets = _targets(binding)
        if release_cache().trusted:
            table = self._whole()
        else:
            table = _read({provider for provider, _ in targets}, {model for _, model in targets})
        return BindingProviders(
            providers={
                name: table.providers[name] for name, _ in targets if name in table.providers
            },
            prices={target: table.prices.get(target) for target in targets},
        )

    def named(self, names: set[str]) -> dict[str, Provider]:
        """The providers of these names that are configured (a moderation's, which no binding's
        targets list: runs.moderation): from memory while trusted, else one query."""
        if not names:
            return {}
        if release_cache().trusted:
            providers = self._whole().providers
            return {name: providers[name] for name in names if name in providers}
        return {p.name: p for p in Provider.objects.filter(name__in=names)}

    def strict_outputs(self) -> dict[str, bool]:
        """Every configured provider's ``strict_output`` flag, by name: from memory while trusted,
        else one query. What render and the bundle say of a response schema's strictness."""
        try:
            if release_cache().trusted:
                flags = {name: p.strict_output for name, p in self._whole().providers.items()}
            else:
                flags = dict(Provider.objects.values_list("name", "strict_output"))
        except DATABASE_OUTAGE:
            # Render and the bundle serve through a database outage (DESIGN "Failure rules"):
            # with the flags last read, or none (every provider strict, the default).
            return dict(self._last_strict_outputs)
        self._last_strict_outputs = flags
        return flags

    def _whole(self) -> _Table:
        table = self._table
        if table is None:
            generation = self._generation
            table = _Table(
                providers={p.name: p for p in Provider.objects.all()},
                prices={
                    (p.provider.name, p.model): p
                    for p in ModelPrice.objects.select_related("provider")
                },
            )
            with self._lock:
                if generation == self._generation:
                    self._table = table
        return table


def _read(names: set[str], models: set[str]) -> _Table:
    prices = ModelPrice.objects.filter(provider__name__in=names, model__in=models)
    return _Table(
        providers={p.name: p for p in Provider.objects.filter(name__in=names)},
        prices={(p.provider.name, p.model): p for p in prices.select_related("provider")},
    )


provider_cache = ProviderCache()
release_cache().on("providers", provider_cache.clear)


@receiver(post_save, sender=Provider)
@receiver(post_delete, sender=Provider)
@receiver(post_save, sender=ModelPrice)
@receiver(post_delete, sender=ModelPrice)
def _providers_changed(**_kwargs) -> None:
    # Dropped now for this process (a run in the same transaction sees the change), and again,
    # with every other process, once the change is committed.
    provider_cache.clear()
    transaction.on_commit(partial(publish, {"kind": "providers"}))
    transaction.on_commit(provider_cache.clear)
