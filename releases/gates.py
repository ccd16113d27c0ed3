"""Promotion checks: how a release asks the evaluations app whether a version may ship.

``releases`` sits below ``evaluations`` and cannot import it. Instead it defines this protocol and
a registry; ``EvaluationsConfig.ready()`` registers its gate check (``evaluations.gates``). Deploy,
canary start and promote, experiment start and stop with a winner call every registered check;
rollback never does.

A check answers one verdict, or several: one check may stand for many gates (every promotion gate
of an environment), and a refusal must name each one that failed, not only the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    gate: str = ""
    detail: str = ""


class PromotionCheck(Protocol):
    def __call__(
        self, *, prompt_id: int, environment: str, version: int
    ) -> GateVerdict | Iterable[GateVerdict]: ...


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


def verdicts_of(answer: GateVerdict | Iterable[GateVerdict]) -> tuple[GateVerdict, ...]:
    """A check's answer as a tuple of verdicts, whether it gave one or several."""
    if isinstance(answer, GateVerdict):
        return (answer,)
    return tuple(answer)
