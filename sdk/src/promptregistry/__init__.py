"""The Prompt Registry's Python client: local resolution from an environment's bundle.

    from promptregistry import Client

    registry = Client("http://registry:8000", api_key=..., environment="production",
                      cache_dir="/var/cache/promptregistry")
    prompt = registry.get("support.refund-reply", subject=user_id, locale="fr-CA")
    messages = prompt.render(order_id="A-17", customer_name="Zoé")
    prompt.report(latency_ms=812, input_tokens=412, output_tokens=96, feedback=1)

Modules, and what they may import: ``core`` (bucketing, locales, variables, rendering, bundles;
pure, no I/O) and ``errors`` import nothing else here; ``prompt`` and ``reporting`` use them;
``store`` (the last-known-good file) stands alone; ``client`` ties them together. Nothing imports
the server: the package is installed alone.
"""

from __future__ import annotations

from .client import Client, ClientStatus, Source
from .errors import (
    BundleInvalid,
    LocaleInvalid,
    LocaleUnavailable,
    NotReleased,
    PromptNotFound,
    RegistryError,
    RegistryUnavailable,
    RenderError,
    VariablesInvalid,
)
from .prompt import Prompt
from .reporting import Reporter

__version__ = "0.1.0"

__all__ = [
    "BundleInvalid",
    "Client",
    "ClientStatus",
    "LocaleInvalid",
    "LocaleUnavailable",
    "NotReleased",
    "Prompt",
    "PromptNotFound",
    "RegistryError",
    "RegistryUnavailable",
    "RenderError",
    "Reporter",
    "Source",
    "VariablesInvalid",
    "__version__",
]
