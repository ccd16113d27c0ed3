"""Who else steers a release: what a schedule must not fight.

A canary under automatic analysis follows the analysis (evaluations), not a schedule: each would
ramp, promote or roll back by its own clock, and the loser's next step would meet a release moved
under it. ``releases`` cannot import evaluations, so, as with the promotion checks
(``releases.gates``), evaluations registers a ``SteeringCheck`` here in ``AppConfig.ready()``;
scheduling a release asks every check, and so does each step as it is applied. The other way
round (an analysis refused while a schedule is active) is evaluations' own check, through
``releases.selectors.schedule_active``.
"""

from __future__ import annotations

from typing import Protocol


class SteeringCheck(Protocol):
    def __call__(self, *, release_id: int) -> str:
        """Why something other than a schedule steers the release now, or ''."""
        ...


_CHECKS: list[SteeringCheck] = []


def steering_check_register(check: SteeringCheck) -> None:
    if check not in _CHECKS:
        _CHECKS.append(check)


def steered_elsewhere(*, release_id: int | None) -> list[str]:
    """Every registered check's reason that the release is steered by something else; none for
    a release that does not exist yet."""
    if release_id is None:
        return []
    return [reason for check in _CHECKS if (reason := check(release_id=release_id))]
