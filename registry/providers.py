"""Which model providers are configured, asked of whoever configures them.

A binding's ``provider`` names a configured provider (DESIGN.md), but providers belong to ``runs``,
which sits above the registry: the registry must not import it. So the registry keeps one slot for
a *directory*, a callable answering the configured names, and ``RunsConfig.ready()`` fills it, the
way ``releases.gates`` lets evaluations plug in its gate. With no directory (the registry used on
its own) any well-formed name is accepted. See docs/decisions/0008-bindings-name-configured-providers.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

ProviderDirectory = Callable[[], Iterable[str]]

_directory: ProviderDirectory | None = None


def provider_directory_register(directory: ProviderDirectory | None) -> None:
    """Makes ``directory`` the one answering ``configured_providers()``; None removes it.

    One directory, not a list: two apps both configuring providers would have to agree anyway.
    Registering again replaces it (``ready()`` may run twice in tests).
    """
    global _directory
    _directory = directory


def provider_directory() -> ProviderDirectory | None:
    """The registered directory, for a caller that wraps it (the test suite does)."""
    return _directory


def configured_providers() -> frozenset[str] | None:
    """The configured providers' names, or None when nobody registered a directory.

    Asked at each check, never cached: a provider added in the admin a moment ago counts at once.
    """
    directory = _directory
    if directory is None:
        return None
    return frozenset(directory())


# --- the models each provider prices, for the editor's model picker ---------------------------

ModelCatalog = Callable[[], Mapping[str, Sequence[str]]]

_catalog: ModelCatalog | None = None


def model_catalog_register(catalog: ModelCatalog | None) -> None:
    """Makes ``catalog`` the one answering ``priced_models()``; None removes it. Filled by the
    same app as the directory (``RunsConfig.ready()``): prices live with the providers."""
    global _catalog
    _catalog = catalog


def priced_models() -> dict[str, list[str]]:
    """Per configured provider, the models it has a price for (what an author most likely
    means), sorted; empty when nobody registered a catalog. A suggestion list: a binding may
    name any model."""
    catalog = _catalog
    if catalog is None:
        return {}
    return {provider: sorted(models) for provider, models in catalog().items()}
