"""Spend anomalies: a prompt's or a model's spend today far outside its usual (decision 0051).

Every ``SPEND_CHECK_INTERVAL_SECONDS`` beat runs ``spend_anomalies_check``. For each prompt and
each model (provider/model) it compares what the calls cost today so far (UTC) with its
baseline: the median, over the ``SPEND_BASELINE_DAYS`` days before, of what they had cost by the
same time of day. Comparing like hours with like keeps a morning from looking quiet next to whole
days, and the median keeps one expensive day from raising the bar. Spend is far outside when it
is at least ``SPEND_ANOMALY_MIN_COST`` and more than ``SPEND_ANOMALY_FACTOR`` times the baseline
(a baseline of nothing: any spend past the minimum).

An anomaly is raised once per subject and day (``SpendAnomaly``'s unique key): the admin's notice
(the row, listed on the spend page and under Runs), a count in
``promptregistry_spend_anomalies_total{kind}``, and a ``spend.anomaly`` event for webhooks.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from config.metrics import SPEND_ANOMALIES
from registry.events import EventType, event_emit

from .models import Call, SpendAnomaly

logger = logging.getLogger(__name__)
_PLACES = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class SpendFinding:
    subject: str  # prompt or model
    name: str
    spend: Decimal
    baseline: Decimal
    prompt_id: int | None = None


def _spend_by_day(
    group: tuple[str, ...], *, now: datetime, days: int
) -> dict[tuple, dict[date, Decimal]]:
    """Cost by ``group`` and UTC day, from each day's start to ``now``'s time of day."""
    today = now.date()
    calls = Call.objects.filter(
        created_at__gte=datetime.combine(today - timedelta(days=days), datetime.min.time(), UTC),
        created_at__lte=now,
        created_at__time__lte=now.time(),
        cost__isnull=False,
    )
    rows = (
        calls.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values(*group, "day")
        .annotate(spend=Sum("cost"))
    )
    spend: dict[tuple, dict[date, Decimal]] = defaultdict(dict)
    for row in rows:
        spend[tuple(row[name] for name in group)][row["day"]] = row["spend"] or Decimal(0)
    return spend


def spend_findings(*, now: datetime | None = None) -> list[SpendFinding]:
    """The prompts and models whose spend today is far outside their baseline (reads only)."""
    now = (now or timezone.now()).astimezone(UTC)
    days = settings.SPEND_BASELINE_DAYS
    factor = Decimal(str(settings.SPEND_ANOMALY_FACTOR))
    minimum = Decimal(str(settings.SPEND_ANOMALY_MIN_COST))
    today = now.date()
    findings = []
    for subject, group in (
        ("prompt", ("prompt_id", "prompt__key")),
        ("model", ("provider", "model")),
    ):
        for names, by_day in _spend_by_day(group, now=now, days=days).items():
            spend = by_day.get(today, Decimal(0))
            past = [by_day.get(today - timedelta(days=n), Decimal(0)) for n in range(1, days + 1)]
            baseline = Decimal(statistics.median(past))
            if spend >= minimum and spend > factor * baseline:
                if subject == "prompt":
                    findings.append(SpendFinding(subject, names[1], spend, baseline, names[0]))
                else:
                    findings.append(SpendFinding(subject, "/".join(names), spend, baseline))
    return findings


def spend_anomalies_check(*, now: datetime | None = None) -> list[SpendAnomaly]:
    """Raises each finding not raised yet today: the notice row, the metric, the event."""
    now = (now or timezone.now()).astimezone(UTC)
    raised = []
    for finding in spend_findings(now=now):
        if SpendAnomaly.objects.filter(
            subject=finding.subject, name=finding.name, day=now.date()
        ).exists():
            continue
        try:
            with transaction.atomic():
                anomaly = SpendAnomaly.objects.create(
                    subject=finding.subject,
                    name=finding.name,
                    day=now.date(),
                    spend=finding.spend,
                    baseline=finding.baseline,
                    found_at=now,
                )
                event_emit(
                    EventType.SPEND_ANOMALY,
                    {
                        "subject": finding.subject,
                        "name": finding.name,
                        "day": now.date().isoformat(),
                        # Six places whatever the database sums to, as the row keeps them.
                        "spend": str(finding.spend.quantize(_PLACES)),
                        "baseline": str(finding.baseline.quantize(_PLACES)),
                        "factor": settings.SPEND_ANOMALY_FACTOR,
                        "baseline_days": settings.SPEND_BASELINE_DAYS,
                    },
                    prompt_id=finding.prompt_id,
                )
        except IntegrityError:  # another worker's check raised it first
            continue
        SPEND_ANOMALIES.labels(kind=finding.subject).inc()
        logger.warning(
            "Spend anomaly: %s %s has cost %s today, against a baseline of %s",
            finding.subject,
            finding.name,
            finding.spend,
            finding.baseline,
        )
        raised.append(anomaly)
    return raised
