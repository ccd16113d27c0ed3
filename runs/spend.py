"""Spend per prompt, model or API key and UTC day: what the admin's spend page charts (reads only).

Every call with a cost counts, whatever its source (a run, a reported call, the playground): it
is money spent. A run's key is the one that ran it (``Call.run_by_key_id``); calls no key ran
(reported, playground) are grouped as "no key".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from .models import Call

SPEND_GROUPS = {
    "prompt": ("prompt__key",),
    "model": ("provider", "model"),
    "key": ("run_by_key_id", "run_by_key_label"),
}
TOP = 7  # groups drawn on their own; the rest as "other"
# Distinguishable for the common colour-vision deficiencies (Okabe–Ito), as the A/B charts.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")


@dataclass(frozen=True, slots=True)
class SpendTable:
    days: list[date]
    groups: list[str]  # by total spend, largest first; "other" last when there are more
    cost: dict[tuple[str, date], Decimal]
    tokens: dict[str, int]  # by group, over the window
    totals: dict[str, Decimal]  # by group, over the window


def _label(by: str, values: tuple) -> str:
    if by == "model":
        return "/".join(str(v) for v in values)
    if by == "key":
        key_id, label = values
        return f"{label or 'key'} (#{key_id})" if key_id is not None else "no key"
    return str(values[0])


def spend_by_day(*, by: str, days: int, now: datetime | None = None) -> SpendTable:
    """Cost per group (``SPEND_GROUPS``) and UTC day over the ``days`` days up to today."""
    today = (now or timezone.now()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = (
        Call.objects.filter(
            created_at__gte=datetime.combine(first, datetime.min.time(), UTC), cost__isnull=False
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values(*SPEND_GROUPS[by], "day")
        .annotate(spend=Sum("cost"), input=Sum("input_tokens"), output=Sum("output_tokens"))
    )
    cost: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    tokens: dict[str, int] = defaultdict(int)
    for row in rows:
        group = _label(by, tuple(row[name] for name in SPEND_GROUPS[by]))
        cost[group, row["day"]] += row["spend"] or Decimal(0)
        totals[group] += row["spend"] or Decimal(0)
        tokens[group] += (row["input"] or 0) + (row["output"] or 0)
    ranked = sorted(totals, key=lambda g: (-totals[g], g))
    if len(ranked) > TOP:
        rest = ranked[TOP - 1 :]
        ranked = [*ranked[: TOP - 1], "other"]
        for (group, day), value in list(cost.items()):
            if group in rest:
                cost["other", day] += value
        totals["other"] = sum((totals[g] for g in rest), Decimal(0))
        tokens["other"] = sum(tokens[g] for g in rest)
    return SpendTable(
        days=[first + timedelta(days=n) for n in range(days)],
        groups=ranked,
        cost=dict(cost),
        tokens=dict(tokens),
        totals=dict(totals),
    )


WIDTH, HEIGHT, LEFT, BOTTOM, TOP_MARGIN = 760, 240, 60, 30, 10


def spend_chart(table: SpendTable) -> SafeString:
    """Stacked bars, one a day, one colour a group (the legend beside it, in HTML); inline SVG
    rendered here, as the A/B charts are. Names are escaped by ``format_html``."""
    if not table.groups:
        return mark_safe("")
    daily = [sum(table.cost.get((g, d), Decimal(0)) for g in table.groups) for d in table.days]
    peak = max(daily) or Decimal(1)
    plot_h = HEIGHT - BOTTOM - TOP_MARGIN
    slot = (WIDTH - LEFT) / len(table.days)
    bar = max(2.0, slot * 0.7)
    parts = []
    for i, day in enumerate(table.days):
        y = float(HEIGHT - BOTTOM)
        for g, group in enumerate(table.groups):
            value = table.cost.get((group, day), Decimal(0))
            if not value:
                continue
            h = float(value / peak) * plot_h
            y -= h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{} {}: {}</title></rect>",
                    f"{LEFT + i * slot:.1f}",
                    f"{y:.1f}",
                    f"{bar:.1f}",
                    f"{h:.1f}",
                    PALETTE[g % len(PALETTE)],
                    day.isoformat(),
                    group,
                    f"{value.normalize():f}",
                )
            )
        if i % max(1, len(table.days) // 7) == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="11">{}</text>',
                    f"{LEFT + i * slot:.1f}",
                    HEIGHT - 10,
                    day.strftime("%b %d"),
                )
            )
    parts.append(
        format_html(
            '<text x="0" y="{}" font-size="11">{}</text><text x="0" y="{}" font-size="11">0</text>',
            TOP_MARGIN + 10,
            f"{peak.normalize():f}",
            HEIGHT - BOTTOM,
        )
    )
    body = format_html_join("", "{}", ((p,) for p in parts))
    return format_html(
        '<svg class="spend-chart" role="img" aria-label="Spend per day" viewBox="0 0 {} {}" '
        'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        "{}</svg>",
        WIDTH,
        HEIGHT,
        body,
    )


def spend_legend(table: SpendTable) -> list[tuple[str, str, Decimal, int]]:
    """(colour, group, cost, tokens) per group, in the chart's order."""
    return [
        (PALETTE[g % len(PALETTE)], group, table.totals[group], table.tokens.get(group, 0))
        for g, group in enumerate(table.groups)
    ]
