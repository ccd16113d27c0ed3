"""A release's state as a value: what events snapshot, rollbacks restore and the cache serves.

Version references are numbers of the release's prompt: committed versions are immutable, so a
number always means the same content. Weights are basis points (0–10000).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from .models import STATE_SCHEMA_VERSION

if TYPE_CHECKING:
    from .models import Release


@dataclass(frozen=True, slots=True)
class Canary:
    version: int
    weight: int
    salt: str


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    version: int
    weight: int


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    salt: str
    # The sticky calls (all variants) the experiment plans to collect, fixed at its start: the
    # results' sequential correction measures each look as a fraction of it. None: not planned,
    # so results show figures but never call a difference significant before the stop.
    planned_calls: int | None = None


@dataclass(frozen=True, slots=True)
class Shadow:
    versions: tuple[int, ...]
    sample: int
    salt: str
    # Shadow runs per hour for this release; None: the SHADOW_BUDGET_PER_HOUR setting, read when
    # the budget is spent (``shadow_budget``), so changing the setting moves every such release.
    budget_per_hour: int | None = None


@dataclass(frozen=True, slots=True)
class ReleaseState:
    stable: int | None = None
    canary: Canary | None = None
    experiment: Experiment | None = None
    shadow: Shadow | None = None
    schema_version: int = field(default=STATE_SCHEMA_VERSION)

    def versions(self) -> set[int]:
        """Every version number this state can serve or shadow."""
        numbers = {self.stable} if self.stable is not None else set()
        if self.canary:
            numbers.add(self.canary.version)
        if self.experiment:
            numbers |= {v.version for v in self.experiment.variants}
        if self.shadow:
            numbers |= set(self.shadow.versions)
        return numbers

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "stable": self.stable,
            "canary": (
                {
                    "version": self.canary.version,
                    "weight": self.canary.weight,
                    "salt": self.canary.salt,
                }
                if self.canary
                else None
            ),
            "experiment": (
                {
                    "name": self.experiment.name,
                    "salt": self.experiment.salt,
                    "planned_calls": self.experiment.planned_calls,
                    "variants": [
                        {"name": v.name, "version": v.version, "weight": v.weight}
                        for v in self.experiment.variants
                    ],
                }
                if self.experiment
                else None
            ),
            "shadow": (
                {
                    "versions": list(self.shadow.versions),
                    "sample": self.shadow.sample,
                    "salt": self.shadow.salt,
                    "budget_per_hour": self.shadow.budget_per_hour,
                }
                if self.shadow
                else None
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseState:
        # STATE_SCHEMA_VERSION stays 1 across additive changes whose missing key has a default:
        # snapshots written before the shadow budget existed have no "budget_per_hour" and read as
        # None (the server default), which is what those shadows ran with. A new version is for a
        # change an old reader would misread (a renamed or reinterpreted key).
        if data.get("schema_version", STATE_SCHEMA_VERSION) != STATE_SCHEMA_VERSION:
            raise ValueError(f"Unknown release state schema {data.get('schema_version')!r}")
        canary, experiment, shadow = data.get("canary"), data.get("experiment"), data.get("shadow")
        return cls(
            stable=data.get("stable"),
            canary=Canary(canary["version"], canary["weight"], canary["salt"]) if canary else None,
            experiment=(
                Experiment(
                    experiment["name"],
                    tuple(
                        Variant(v["name"], v["version"], v["weight"])
                        for v in experiment["variants"]
                    ),
                    experiment["salt"],
                    experiment.get("planned_calls"),
                )
                if experiment
                else None
            ),
            shadow=(
                Shadow(
                    tuple(shadow["versions"]),
                    shadow["sample"],
                    shadow["salt"],
                    shadow.get("budget_per_hour"),
                )
                if shadow
                else None
            ),
        )


def shadow_budget(state: ReleaseState) -> int:
    """Shadow runs per hour the release may spend: its shadow's own budget, else the
    ``SHADOW_BUDGET_PER_HOUR`` setting (read now, so ``override_settings`` and a changed setting
    apply at once). No shadow running: 0, since nothing may be shadowed."""
    if state.shadow is None:
        return 0
    if state.shadow.budget_per_hour is not None:
        return state.shadow.budget_per_hour
    return settings.SHADOW_BUDGET_PER_HOUR


def release_state(release: Release) -> ReleaseState:
    """The release's state as a value (one query for the version numbers if not selected).

    A read of one row, here rather than in ``services`` so that ``selectors`` (which the release
    cache imports) can use it without importing the services, which import the cache."""
    canary = None
    if release.canary_version_id is not None:
        canary = Canary(release.canary_version.number, release.canary_weight, release.canary_salt)
    experiment = None
    if release.experiment_name:
        experiment = Experiment(
            release.experiment_name,
            tuple(
                Variant(v["name"], v["version"], v["weight"]) for v in release.experiment_variants
            ),
            release.experiment_salt,
            release.experiment_planned_calls,
        )
    shadow = None
    if release.shadow_versions:
        shadow = Shadow(
            tuple(release.shadow_versions),
            release.shadow_sample,
            release.shadow_salt,
            release.shadow_budget_per_hour,
        )
    return ReleaseState(
        stable=release.stable_version.number if release.stable_version_id else None,
        canary=canary,
        experiment=experiment,
        shadow=shadow,
    )
