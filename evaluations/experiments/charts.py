"""The A/B results page's charts, as inline SVG rendered on the server (no script, no CDN).

- ``forest_plot``: each metric's difference vs control with its confidence interval and the zero
  line. Metrics have different units, so each row has its own scale, symmetric around zero: read
  a row for "which side of zero, and does the interval cross it", not for lengths between rows.
- ``split_bars``: observed vs expected share of sticky calls per variant (the sample ratio check).
- ``timeline_chart``: cumulative sticky calls per variant over the experiment's window, in buckets
  that follow its length (``chart_time``), x proportional to time, the legend beside it in HTML.

Every text that comes from users (variant names) is escaped by ``format_html``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from registry.templatetags.registry_display import percent

from ..chart_time import WIDTHS, axis_window, time_ticks
from .analysis import Comparison, VariantFigures, format_difference
from .selectors import TimelinePoint

WIDTH = 760
LABEL_WIDTH = 250
PLOT_LEFT, PLOT_RIGHT = 260, 580
ROW = 30
# Distinguishable for the common colour-vision deficiencies (Okabe–Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
BETTER, WORSE, NEUTRAL = "#1a7f37", "#cf222e", "#57606a"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _svg(height: int, label: str, body: SafeString) -> SafeString:
    return format_html(
        '<svg class="experiment-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" '
        'width="100%" preserveAspectRatio="xMinYMin meet" '
        'xmlns="http://www.w3.org/2000/svg">{}</svg>',
        label,
        WIDTH,
        height,
        body,
    )


def forest_plot(comparisons: Sequence[Comparison]) -> SafeString:
    rows = [c for c in comparisons if c.ci is not None and c.difference is not None]
    if not rows:
        return mark_safe("")
    parts = []
    centre = (PLOT_LEFT + PLOT_RIGHT) / 2
    half = (PLOT_RIGHT - PLOT_LEFT) / 2
    for i, c in enumerate(rows):
        y = 20 + i * ROW
        extent = max(abs(c.ci.low), abs(c.ci.high), abs(c.difference)) * 1.15 or 1.0

        def x(value: float, extent: float = extent) -> float:
            return round(centre + value / extent * half, 1)

        if c.significant:
            better = (c.difference < 0) == c.lower_is_better
            stroke = BETTER if better else WORSE
        else:
            stroke = NEUTRAL
        parts.append(
            format_html(
                '<g><title>{}</title><text x="0" y="{}" class="label">{} · {}</text>'
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="zero"/>'
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/>'
                '<circle cx="{}" cy="{}" r="5" fill="{}"/>'
                '<text x="{}" y="{}" class="value">{}</text></g>',
                c.reading,
                y + 4,
                c.variant,
                c.label,
                centre,
                y - 11,
                centre,
                y + 11,
                x(c.ci.low),
                y,
                x(c.ci.high),
                y,
                stroke,
                x(c.difference),
                y,
                stroke,
                PLOT_RIGHT + 12,
                y + 4,
                f"{format_difference(c.metric, c.difference)}{' ✓' if c.significant else ''}",
            )
        )
    height = 20 + len(rows) * ROW
    axis = format_html(
        '<text x="{}" y="{}" class="axis" text-anchor="middle">0 (no difference)</text>',
        centre,
        height,
    )
    return _svg(
        height + 6,
        "Difference of each metric against control, with its 95 % confidence interval",
        format_html("{}{}", format_html_join("", "{}", ((p,) for p in parts)), axis),
    )


def split_bars(variants: Sequence[VariantFigures]) -> SafeString:
    if not variants:
        return mark_safe("")
    scale = PLOT_RIGHT - PLOT_LEFT
    parts = []
    for i, v in enumerate(variants):
        y = 12 + i * ROW
        observed = v.observed_share or 0.0
        parts.append(
            format_html(
                "<g><title>{}: observed {} of sticky calls, expected {}</title>"
                '<text x="0" y="{}" class="label">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="16" fill="{}"/>'
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="expected"/>'
                '<text x="{}" y="{}" class="value">{} (expected {})</text></g>',
                v.name,
                percent(observed),
                percent(v.expected_share),
                y + 12,
                v.name,
                PLOT_LEFT,
                y,
                round(observed * scale, 1),
                colour(i),
                round(PLOT_LEFT + v.expected_share * scale, 1),
                y - 4,
                round(PLOT_LEFT + v.expected_share * scale, 1),
                y + 20,
                PLOT_RIGHT + 12,
                y + 12,
                percent(observed),
                percent(v.expected_share),
            )
        )
    return _svg(
        16 + len(variants) * ROW,
        "Observed against expected share of sticky calls per variant",
        format_html_join("", "{}", ((p,) for p in parts)),
    )


def timeline_chart(
    points: Sequence[TimelinePoint],
    names: Sequence[str],
    unit: str,
    *,
    start: datetime,
    end: datetime,
) -> SafeString:
    """Cumulative sticky calls per variant from ``start`` to ``end`` (the experiment's window), as
    steps: each line rises at the end of a bucket that had calls and holds its level until the
    next. x is time (``chart_time``), so a window of one bucket is still a line along the axis;
    the legend is HTML under the chart, one entry per variant, so names never overlap."""
    if not points:
        return mark_safe("")
    top, bottom, left, right = 14, 190, 60, WIDTH - 20
    width = WIDTHS[unit]
    start, end = axis_window(min(start, points[0].at), max(end, points[-1].at + width), unit)
    peak = max(max(p.cumulative.values(), default=0) for p in points) or 1
    span = (end - start).total_seconds()

    def x(at: datetime) -> float:
        return round(left + (right - left) * min((at - start).total_seconds(), span) / span, 1)

    def y(count: int) -> float:
        return round(bottom - (bottom - top) * count / peak, 1)

    lines = []
    for i, name in enumerate(names):
        level, steps = 0, [f"{x(start)},{y(0)}"]
        for p in points:
            reached = p.cumulative.get(name, 0)
            if reached != level:
                # The bucket's calls are counted by its end: hold the level until then, rise.
                at = x(p.at + width)
                steps += [f"{at},{y(level)}", f"{at},{y(reached)}"]
                level = reached
        steps.append(f"{x(end)},{y(level)}")
        lines.append(
            format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}: {}'
                "</title></polyline>",
                " ".join(steps),
                colour(i),
                name,
                f"{level:,} sticky calls",
            )
        )
    ticks = format_html_join(
        "",
        '<line x1="{x}" y1="{b}" x2="{x}" y2="{b6}" class="axis-line"/>'
        '<text x="{x}" y="{by}" class="axis" text-anchor="{anchor}">{label}</text>',
        (
            {
                "x": x(tick.at),
                "b": bottom,
                "b6": bottom + 5,
                "by": bottom + 18,
                "anchor": "start" if j == 0 else "end" if x(tick.at) > right - 40 else "middle",
                "label": tick.label,
            }
            for j, tick in enumerate(time_ticks(start, end))
        ),
    )
    axes = format_html(
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" class="axis-line"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" class="axis-line"/>'
        '<line x1="{l}" y1="{t}" x2="{r}" y2="{t}" class="grid-line"/>'
        '<text x="{lt}" y="{ty}" class="axis" text-anchor="end">{peak}</text>'
        '<text x="{lt}" y="{b}" class="axis" text-anchor="end">0</text>{ticks}',
        l=left,
        r=right,
        t=top,
        b=bottom,
        lt=left - 6,
        ty=top + 4,
        peak=f"{peak:,}",
        ticks=ticks,
    )
    legend = format_html_join(
        "",
        '<li><span class="experiment-swatch" style="background: {}"></span>{} <small>({})</small>'
        "</li>",
        (
            (colour(i), name, f"{points[-1].cumulative.get(name, 0):,}")
            for i, name in enumerate(names)
        ),
    )
    chart = _svg(
        bottom + 26,
        f"Cumulative sticky calls per variant, per {unit}",
        format_html("{}{}", axes, format_html_join("", "{}", ((line,) for line in lines))),
    )
    return format_html('{}<ul class="experiment-legend">{}</ul>', chart, legend)
