"""The admin index and sidebar in the order of use: what authors and release managers open
every day first (Prompts, Releases, Evaluations, Runs), then Webhooks, then users and groups;
within each, the pages in the same spirit (the prompt list before its versions, the board before
its audit log).

Django sorts apps and models by name. ``config/urls.py`` wraps the site's ``get_app_list`` with
``by_use`` when the URLconf loads, after every app's admin module (evaluations adds its A/B
results page to the list the same way), so this order is the last word.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

AppList = list[dict[str, Any]]
GetAppList = Callable[..., AppList]

APP_ORDER = ("registry", "releases", "evaluations", "runs", "webhooks")
LAST = ("auth",)  # users and groups close the list; any other app (API keys...) comes before
MODEL_ORDER = {
    "registry": ("Prompt", "PromptVersion"),
    "releases": ("Release", "ReleaseEvent", "Environment"),
    "evaluations": (
        "Dataset",
        "EvalRun",
        "ExperimentResults",
        "CanaryAnalysis",
        "PromotionGate",
        "Case",
        "EvalResult",
    ),
    "runs": ("Call", "ShadowRun", "Provider"),
    "webhooks": ("Subscription", "Delivery"),
    "auth": ("User", "Group"),
}


def _rank(order: tuple[str, ...], name: str, *, unknown: int) -> int:
    return order.index(name) if name in order else unknown


def app_list_by_use(apps: AppList) -> AppList:
    """The apps (and each app's models) in order of use; unknown ones by name, before ``LAST``."""
    middle = len(APP_ORDER)

    def app_key(app: dict[str, Any]) -> tuple[int, str]:
        label = app["app_label"]
        rank = middle + 1 + LAST.index(label) if label in LAST else None
        if rank is None:
            rank = _rank(APP_ORDER, label, unknown=middle)
        return rank, app["name"].lower()

    ordered = sorted(apps, key=app_key)
    for app in ordered:
        order = MODEL_ORDER.get(app["app_label"], ())
        app["models"] = sorted(
            app["models"],
            key=lambda m: (_rank(order, m["object_name"], unknown=len(order)), m["name"].lower()),
        )
    return ordered


def by_use(get_app_list: GetAppList) -> GetAppList:
    """Wraps an ``AdminSite.get_app_list`` so that what it answers comes in order of use."""

    def get_app_list_by_use(request: HttpRequest, app_label: str | None = None) -> AppList:
        return app_list_by_use(get_app_list(request, app_label))

    return get_app_list_by_use
