"""Promotion checks: how a release asks the evaluations app whether a version may ship.

``releases`` sits below ``evaluations`` and cannot import it. Instead it defines this protocol and
a registry; ``EvaluationsConfig.ready()`` registers its gate check (the evaluations issue). Deploy
and canary start call every registered check; rollback never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    gate: str = ""
    detail: str = ""


class PromotionCheck(Protocol):
    def __call__(self, *, prompt_id: int, environment: str, version: int) -> GateVerdict: ...


_CHECKS: list[PromotionCheck] = []


def promotion_check_register(check: PromotionCheck) -> None:
    if check not in _CHECKS:
        _CHECKS.append(check)


def promotion_checks() -> tuple[PromotionCheck, ...]:
    return tuple(_CHECKS)


def promotion_check_unregister(check: PromotionCheck) -> None:
    """Removes a check (tests, or an app that turns its gate off)."""
    if check in _CHECKS:
        _CHECKS.remove(check)
