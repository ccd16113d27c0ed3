"""Notices: what other apps have to say about a release change before a person applies it.

The confirmation page shows the target state and what traffic moves; a change can also end
something another app runs on the release (evaluations: a canary analysis stops judging a canary
that is ramped by hand). ``releases`` cannot import those apps, so, as with the promotion checks
(``releases.gates``), they register a notice here in ``AppConfig.ready()`` and the page shows
every sentence they return, before the click. A notice only informs: it never refuses a change.
"""

from __future__ import annotations

from typing import Protocol

from .state import ReleaseState


class ChangeNotice(Protocol):
    def __call__(
        self, *, release_id: int, before: ReleaseState, after: ReleaseState
    ) -> list[str]: ...


_NOTICES: list[ChangeNotice] = []


def change_notice_register(notice: ChangeNotice) -> None:
    if notice not in _NOTICES:
        _NOTICES.append(notice)


def change_notices(
    *, release_id: int | None, before: ReleaseState, after: ReleaseState
) -> list[str]:
    """Every registered notice's sentences about going from ``before`` to ``after``; none for a
    release that does not exist yet (nothing runs on it)."""
    if release_id is None:
        return []
    return [
        line
        for notice in _NOTICES
        for line in notice(release_id=release_id, before=before, after=after)
    ]
