"""A release's state as a value: what events snapshot, rollbacks restore and the cache serves.

Version references are numbers of the release's prompt: committed versions are immutable, so a
number always means the same content. Weights are basis points (0–10000).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import STATE_SCHEMA_VERSION


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


@dataclass(frozen=True, slots=True)
class Shadow:
    versions: tuple[int, ...]
    sample: int
    salt: str


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
                }
                if self.shadow
                else None
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseState:
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
                )
                if experiment
                else None
            ),
            shadow=(
                Shadow(tuple(shadow["versions"]), shadow["sample"], shadow["salt"])
                if shadow
                else None
            ),
        )
