"""Providers and prices held in memory for the run path (runs.provider_cache, issue 14 item 7).

Trusted while the release cache's Redis listener is connected; a provider or price saved or
deleted drops the copy here at once and, after commit, in every process through a ``providers``
message. Untrusted, each lookup reads the database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.content import ModelBinding
from releases import cache
from releases.cache import ReleaseCache, publish
from runs.models import ModelPrice, Provider
from runs.provider_cache import ProviderCache, provider_cache
from runs.services import model_price_set, provider_save
from tests.releases.test_cache import wait_until

BINDING = ModelBinding.from_dict(
    {
        "provider": "primary",
        "model": "big-1",
        "fallbacks": [
            {"provider": "backup", "model": "small-1"},
            {"provider": "gone", "model": "x"},
        ],
    }
)


@pytest.fixture
def providers(db) -> None:
    provider_save(name="primary", base_url="https://primary.example/v1")
    provider_save(name="backup", base_url="https://backup.example/v1")
    provider_save(name="unrelated", base_url="https://unrelated.example/v1")
    model_price_set(
        provider="primary",
        model="big-1",
        input_per_million=Decimal(2),
        output_per_million=Decimal(8),
    )


@pytest.fixture
def trusted(monkeypatch) -> None:
    """This process's release cache as if its listener were connected (a stand-in: the listener
    itself is tested with Redis below)."""
    monkeypatch.setattr(ReleaseCache, "trusted", property(lambda self: True))


def queries(lookup) -> tuple[object, int]:
    with CaptureQueriesContext(connection) as captured:
        found = lookup()
    return found, len(captured)


def test_the_binding_gets_its_targets_providers_and_a_price_or_none_for_each(providers):
    found = ProviderCache().binding(BINDING)

    assert set(found.providers) == {
        "primary",
        "backup",
    }  # "gone" has no row, "unrelated" is not named
    assert found.prices[("primary", "big-1")].output_per_million == Decimal(8)
    assert found.prices == {
        ("primary", "big-1"): found.prices[("primary", "big-1")],
        ("backup", "small-1"): None,
        ("gone", "x"): None,
    }


def test_trusted_a_warm_lookup_reads_nothing(providers, trusted):
    table = ProviderCache()
    first, cold = queries(lambda: table.binding(BINDING))
    second, warm = queries(lambda: table.binding(BINDING))

    assert cold == 2
    assert warm == 0
    assert second == first


def test_untrusted_every_lookup_reads_the_database(providers, monkeypatch):
    monkeypatch.setattr(cache, "_cache", ReleaseCache(listen=False))
    table = ProviderCache()
    table.binding(BINDING)

    _, again = queries(lambda: table.binding(BINDING))

    assert again == 2


def test_a_provider_disabled_is_seen_by_the_next_lookup(providers, trusted):
    assert provider_cache.binding(BINDING).providers["primary"].enabled

    provider_save(name="primary", base_url="https://primary.example/v1", enabled=False)

    assert not provider_cache.binding(BINDING).providers["primary"].enabled


def test_a_price_set_deleted_or_a_provider_deleted_is_seen_by_the_next_lookup(providers, trusted):
    provider_cache.binding(BINDING)
    model_price_set(
        provider="backup",
        model="small-1",
        input_per_million=Decimal(1),
        output_per_million=Decimal(1),
    )
    assert provider_cache.binding(BINDING).prices[("backup", "small-1")] is not None

    ModelPrice.objects.get(model="big-1").delete()
    assert provider_cache.binding(BINDING).prices[("primary", "big-1")] is None

    Provider.objects.get(name="backup").delete()  # its prices go with it
    found = provider_cache.binding(BINDING)
    assert "backup" not in found.providers
    assert found.prices[("backup", "small-1")] is None


def test_a_change_is_announced_to_every_process_once_committed(
    providers, django_capture_on_commit_callbacks, monkeypatch
):
    sent: list[dict] = []
    monkeypatch.setattr("runs.provider_cache.publish", sent.append)

    with django_capture_on_commit_callbacks(execute=True):
        provider_save(name="backup", base_url="https://backup.example/v2")

    assert {"kind": "providers"} in sent


@pytest.mark.postgres
def test_another_process_hears_the_change_through_redis(providers, needs_redis, monkeypatch):
    """A release cache with its own listener plays another web process: it hears the message a
    change publishes, and that process's copy of the providers is read again."""
    node = ReleaseCache()
    monkeypatch.setattr(cache, "_cache", node)
    elsewhere = ProviderCache()
    node.on("providers", elsewhere.clear)
    try:
        wait_until(lambda: node.trusted, what="the listener to subscribe")
        elsewhere.binding(BINDING)
        assert queries(lambda: elsewhere.binding(BINDING))[1] == 0

        publish({"kind": "providers"})

        wait_until(
            lambda: queries(lambda: elsewhere.binding(BINDING))[1] > 0,
            what="the providers message",
        )
    finally:
        node.stop()
