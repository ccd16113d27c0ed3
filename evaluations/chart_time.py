"""Time on the charts' x axes: the bucket a timeline counts in, and the ticks that label an axis.

Pure (no ORM, no settings): the experiment timeline (``experiments.selectors._timeline``) and the
charts (``experiments.charts``, the canary ramp in ``admin.canary``) share it, and its tests run on
bare datetimes.

1. ``timeline_unit(span)``: the bucket follows the span of the window, so a chart has a few dozen
   points whatever the window: minutes up to two hours, hours up to three days, days up to four
   months, weeks beyond. Each is a unit the database truncates to (``Trunc``).
2. ``axis_window(start, end, unit)``: the x range; at least one bucket wide, so a window that
   has only just started (or holds one point) is still a line along time, not a vertical stroke.
3. ``time_ticks(start, end)``: at most ``most`` ticks at round times inside the window, labelled
   as briefly as the step allows (``14:05`` within a day, ``12-07`` across days) with the date or
   the year added where it changes, so no two labels read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# (unit, its width, the longest span counted in it)
UNITS: tuple[tuple[str, timedelta, timedelta | None], ...] = (
    ("minute", timedelta(minutes=1), timedelta(hours=2)),
    ("hour", timedelta(hours=1), timedelta(days=3)),
    ("day", timedelta(days=1), timedelta(days=120)),
    ("week", timedelta(weeks=1), None),
)
WIDTHS = {unit: width for unit, width, _ in UNITS}

# Round tick steps, smallest first.
STEPS = tuple(
    timedelta(minutes=m)
    for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 20160, 43200)
)


def timeline_unit(span: timedelta) -> str:
    """The bucket for a window of ``span``: ``minute``, ``hour``, ``day`` or ``week``."""
    for unit, _, longest in UNITS[:-1]:
        if longest is not None and span <= longest:
            return unit
    return UNITS[-1][0]


def axis_window(start: datetime, end: datetime, unit: str) -> tuple[datetime, datetime]:
    """``(start, end)`` widened to at least one ``unit``, never reversed."""
    return start, max(end, start + WIDTHS[unit])


@dataclass(frozen=True, slots=True)
class Tick:
    at: datetime
    label: str


def _floor(at: datetime, step: timedelta) -> datetime:
    """``at`` rounded down to a multiple of ``step`` counted from its own day's midnight (steps of
    a day or more: from the first of its month, so day ticks fall on round dates)."""
    if step >= timedelta(days=1):
        base = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        base = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return base + ((at - base) // step) * step


def time_ticks(start: datetime, end: datetime, *, most: int = 6) -> list[Tick]:
    """Ticks at round times in ``[start, end]``, at most ``most`` of them, each label distinct;
    a window too short for two round times gets its two ends."""
    span = max(end - start, timedelta(0))
    step = next((s for s in STEPS if span / s <= most - 1), STEPS[-1])
    first = _floor(start, step)
    if first < start:
        first += step
    moments = []
    at = first
    while at <= end and len(moments) < most:
        moments.append(at)
        at += step
    if len(moments) < 2:  # a window about one step long: label its two ends instead
        moments = [start, end] if end > start else [start]
    return _labelled(moments, step)


def _labelled(moments: list[datetime], step: timedelta) -> list[Tick]:
    ticks: list[Tick] = []
    previous: datetime | None = None
    for at in moments:
        if step < timedelta(days=1):
            label = at.strftime("%H:%M")
            if previous is None:
                label = at.strftime("%Y-%m-%d ") + label
            elif previous.date() != at.date():
                label = at.strftime("%m-%d ") + label
        else:
            label = at.strftime("%m-%d")
            if previous is None or previous.year != at.year:
                label = at.strftime("%Y-") + label
        if ticks and ticks[-1].label == label:
            continue  # same text twice says nothing (a window shorter than the format's unit)
        ticks.append(Tick(at, label))
        previous = at
    if len({t.label for t in ticks}) < len(ticks):
        # A time of day seen on two days (12-hour steps): every label carries its date.
        ticks = [Tick(t.at, t.at.strftime("%m-%d %H:%M")) for t in ticks]
        ticks[0] = Tick(ticks[0].at, ticks[0].at.strftime("%Y-%m-%d %H:%M"))
    return ticks
