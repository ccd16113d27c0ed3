"""The charts' time axes and the A/B timeline on edge cases: one point, one hour, a day, a month
(evaluations/chart_time.py, evaluations/experiments/charts.py). Pure: no database."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest

from evaluations.chart_time import axis_window, time_ticks, timeline_unit
from evaluations.experiments.charts import timeline_chart
from evaluations.experiments.selectors import TimelinePoint

T0 = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


@pytest.mark.parametrize(
    ("span", "unit"),
    [
        (timedelta(0), "minute"),  # one point
        (timedelta(hours=1), "minute"),
        (timedelta(hours=2), "minute"),
        (timedelta(hours=2, seconds=1), "hour"),
        (timedelta(days=1), "hour"),
        (timedelta(days=3), "hour"),
        (timedelta(days=30), "day"),
        (timedelta(days=121), "week"),
    ],
)
def test_the_bucket_follows_the_span(span, unit) -> None:
    assert timeline_unit(span) == unit


def test_a_window_is_at_least_one_bucket_wide() -> None:
    assert axis_window(T0, T0, "minute") == (T0, T0 + timedelta(minutes=1))
    assert axis_window(T0, T0 + timedelta(hours=5), "hour") == (T0, T0 + timedelta(hours=5))


@pytest.mark.parametrize(
    "span",
    [
        timedelta(minutes=1),
        timedelta(minutes=7),
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=2, hours=3),
        timedelta(days=31),
        timedelta(days=400),
    ],
)
def test_ticks_are_few_distinct_in_order_and_inside_the_window(span) -> None:
    ticks = time_ticks(T0, T0 + span)
    labels = [t.label for t in ticks]
    assert 2 <= len(ticks) <= 6
    assert len(set(labels)) == len(labels), labels
    assert [t.at for t in ticks] == sorted(t.at for t in ticks)
    assert all(T0 <= t.at <= T0 + span for t in ticks)


def test_tick_labels_say_as_much_as_the_step_needs() -> None:
    hour = [t.label for t in time_ticks(T0, T0 + timedelta(hours=1))]
    assert hour[0] == "2026-03-14 09:30"  # the first label dates the axis
    assert hour[1:] == ["09:45", "10:00", "10:15"]

    day = [t.label for t in time_ticks(T0, T0 + timedelta(days=1))]
    assert day[0].startswith("2026-03-14 ")
    assert any(label.startswith("03-15 ") for label in day)  # the date where it changes

    month = [t.label for t in time_ticks(T0, T0 + timedelta(days=30))]
    assert month[0].startswith("2026-")
    assert all(re.fullmatch(r"(2026-)?\d\d-\d\d", label) for label in month)


def _chart(points, start, end, unit) -> str:
    return str(timeline_chart(points, ["control", "treatment"], unit, start=start, end=end))


def _polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in found.split()]
        for found in re.findall(r'<polyline points="([^"]+)"', svg)
    ]


def test_one_point_is_a_step_along_time_not_a_vertical_line() -> None:
    """The demo's case: every call in one minute. The line rises once and runs on to the end."""
    points = [TimelinePoint(at=T0.replace(second=0), cumulative={"control": 562, "treatment": 638})]
    svg = _chart(points, T0, T0 + timedelta(minutes=20), "minute")
    for line in _polylines(svg):
        xs = [x for x, _ in line]
        assert max(xs) - min(xs) > 600  # spans the axis
        assert len({y for _, y in line}) == 2  # zero, then the total
    labels = re.findall(r'class="axis" text-anchor="(?:start|middle|end)">([^<]+)<', svg)
    assert len(labels) >= 2
    assert len(set(labels)) == len(labels)


def test_a_chart_of_a_window_that_just_started_is_still_a_minute_wide() -> None:
    points = [TimelinePoint(at=T0.replace(second=0), cumulative={"control": 1, "treatment": 0})]
    svg = _chart(points, T0, T0, "minute")
    (control, treatment) = _polylines(svg)
    assert control[-1][0] > control[0][0]
    assert {y for _, y in treatment} == {control[0][1]}  # no calls: flat at zero


def test_the_legend_is_html_one_entry_per_variant_with_its_total() -> None:
    points = [
        TimelinePoint(at=T0, cumulative={"control": 3, "treatment": 0}),
        TimelinePoint(at=T0 + timedelta(hours=5), cumulative={"control": 3, "treatment": 2}),
    ]
    svg = _chart(points, T0, T0 + timedelta(days=1), "hour")
    legend = re.search(r'<ul class="experiment-legend">(.*)</ul>', svg)[1]
    assert re.findall(r"</span>(\w+) <small>\((\d+)\)</small>", legend) == [
        ("control", "3"),
        ("treatment", "2"),
    ]


def test_a_month_of_days_keeps_empty_days_as_width() -> None:
    points = [
        TimelinePoint(at=T0, cumulative={"control": 1, "treatment": 0}),
        TimelinePoint(at=T0 + timedelta(days=1), cumulative={"control": 2, "treatment": 0}),
        TimelinePoint(at=T0 + timedelta(days=21), cumulative={"control": 3, "treatment": 0}),
    ]
    svg = _chart(points, T0, T0 + timedelta(days=30), "day")
    control = _polylines(svg)[0]
    rises = sorted({x for (x, y), (x2, y2) in itertools.pairwise(control) if x == x2})
    # Days 1, 2 and 22 after T0 (each day's calls at its end): 21 days' width, then one.
    assert rises[2] - rises[0] == pytest.approx(21 * (rises[1] - rises[0]), abs=3)  # x to 0.1 px


def test_no_points_draw_nothing() -> None:
    assert _chart([], T0, T0 + timedelta(hours=1), "minute") == ""
