"""Read-only queries the admin needs that ``releases.selectors`` does not offer yet.

They belong in ``releases/selectors.py`` (STYLE R1, R16) and live here only until they move:
``release_board`` takes one environment, while the admin's changelist filters the environment
itself, and the per-prompt timeline reads events across a prompt's releases.
"""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from registry.models import Prompt
from releases.models import Release, ReleaseEvent

EVENTS_PER_PAGE = 20


def releases_with_latest_event() -> QuerySet[Release]:
    """Releases with their versions and their latest event (``latest_events``, a list of at most
    one), in two queries for any number of rows: the board's shape, for every environment."""
    latest = ReleaseEvent.objects.order_by("-id")[:1]  # a window function per release, one query
    return Release.objects.select_related(
        "prompt", "environment", "stable_version", "canary_version"
    ).prefetch_related(Prefetch("events", queryset=latest, to_attr="latest_events"))


def prompt_release_history(*, prompt: Prompt) -> QuerySet[ReleaseEvent]:
    """Every release event of a prompt, in all its environments, newest first; paginate it."""
    return (
        ReleaseEvent.objects.filter(release__prompt=prompt)
        .select_related("release__environment", "release__prompt", "restores")
        .order_by("-id")
    )


def events_page(
    events: QuerySet[ReleaseEvent], *, before: int | None, size: int = EVENTS_PER_PAGE
) -> tuple[list[ReleaseEvent], int | None]:
    """One page of an event list, newest first, and the cursor of the next (older) page.

    Keyset pagination on the id: an append-only log only grows at the top, so a page never shifts
    under the reader, and no query counts the whole history."""
    if before is not None:
        events = events.filter(pk__lt=before)
    rows = list(events.order_by("-id")[: size + 1])
    older = rows[size - 1].pk if len(rows) > size else None
    return rows[:size], older
