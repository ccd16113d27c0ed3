"""A/B results over the API (scope ``prompts:read``): a release's experiments, and one's results.

- ``GET /releases/{environment}/{key}/experiments``: every experiment of the release, newest first,
  with its start and stop events (the start event id names it).
- ``GET /releases/{environment}/{key}/experiment/results[?experiment=<start event id>]``: the
  results of the running experiment, or of the one named; the same figures as the admin page.

Keys limited to environments see theirs only. The figures come from
``evaluations.experiments.selectors.experiment_results``; this module only shapes them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluations.experiments.analysis import Mean, Rate
from evaluations.experiments.selectors import (
    ExperimentRecord,
    ExperimentResults,
    experiment_list,
    experiment_results,
)
from evaluations.statistics import Interval
from registry.selectors import prompt_get
from releases.models import Release
from releases.selectors import environment_get, release_get

from .models import Scope
from .permissions import HasScope, ensure_environment_allowed


def _interval(ci: Interval | None) -> dict[str, float] | None:
    return None if ci is None else {"low": ci.low, "high": ci.high, "confidence": ci.confidence}


def _rate(rate: Rate) -> dict[str, Any]:
    return {"count": rate.count, "total": rate.total, "rate": rate.rate, "ci": _interval(rate.ci)}


def _mean(mean: Mean) -> dict[str, Any]:
    return {"n": mean.n, "mean": mean.mean, "ci": _interval(mean.ci)}


def experiment_representation(record: ExperimentRecord) -> dict[str, Any]:
    experiment = record.experiment
    return {
        "name": experiment.name,
        "start_event": record.start_event_id,
        "stop_event": record.stop_event_id,
        "running": record.running,
        "started_at": record.started_at.isoformat(),
        "stopped_at": record.stopped_at.isoformat() if record.stopped_at else None,
        "stopped_by": record.stop_action,
        "planned_calls": experiment.planned_calls,
        "salt": experiment.salt,
        "stable_version": record.stable_before,
        "winner": record.winner,
        "variants": [
            {"name": v.name, "version": v.version, "percent": v.weight / 100}
            for v in experiment.variants
        ],
    }


def results_representation(results: ExperimentResults) -> dict[str, Any]:
    look, srm = results.look, results.srm
    warnings = []
    if results.decisions_held:
        warnings.append(
            "Sample ratio mismatch: the observed split does not match the weights "
            f"(p = {srm.p_value:.2g} < {srm.threshold:g}). Assignment or logging is broken, so "
            "every figure is suspect and no decision is made until it is explained."
        )
    return {
        "prompt": results.release.prompt.key,
        "environment": results.release.environment.name,
        "experiment": experiment_representation(results.record),
        "control": results.control,
        "alpha": results.alpha,
        "look": {
            "sticky_calls": look.sticky_calls,
            "planned_calls": look.planned_calls,
            "information_fraction": look.information_fraction,
            "final": look.final,
            "threshold": look.threshold,
            "explanation": look.explanation,
        },
        "sample_ratio": None
        if srm is None
        else {
            "statistic": srm.statistic,
            "df": srm.df,
            "p_value": srm.p_value,
            "threshold": srm.threshold,
            "mismatch": srm.mismatch,
            "variants": [
                {"name": arm.name, "observed": arm.observed, "expected": arm.expected}
                for arm in srm.arms
            ],
        },
        "decisions_held": results.decisions_held,
        "warnings": warnings,
        "excluded_non_sticky_calls": results.excluded_non_sticky,
        "variants": [
            {
                "name": v.name,
                "version": v.version,
                "percent": v.weight / 100,
                "control": v.control,
                "calls": v.calls,
                "expected_share": v.expected_share,
                "observed_share": v.observed_share,
                "error_rate": _rate(v.error_rate),
                "schema_failure_rate": _rate(v.schema_failure_rate),
                "feedback": _mean(v.feedback),
                "latency_ms": {
                    **_mean(v.latency_ms),
                    "p50": v.latency_p50_ms,
                    "p95": v.latency_p95_ms,
                },
                "cost": _mean(v.cost),
                "input_tokens": {"n": v.input_tokens.n, "mean": v.input_tokens.mean},
                "output_tokens": {"n": v.output_tokens.n, "mean": v.output_tokens.mean},
            }
            for v in results.variants
        ],
        "comparisons": [
            {
                "variant": c.variant,
                "metric": str(c.metric),
                "label": c.label,
                "test": c.test,
                "control_value": c.control_value,
                "variant_value": c.variant_value,
                "difference": c.difference,
                "ci": _interval(c.ci),
                "p_value": c.p_value,
                "threshold": c.threshold,
                "significant": c.significant,
                "lower_is_better": c.lower_is_better,
                "reading": c.reading,
            }
            for c in results.comparisons
        ],
        "timeline": {
            "unit": results.timeline_unit,
            "points": [{"at": p.at.isoformat(), "calls": p.cumulative} for p in results.timeline],
        },
        "computed_at": results.computed_at.isoformat(),
    }


# --- Documentation of the shapes above (drf-spectacular) ---------------------------------------


class _IntervalSerializer(serializers.Serializer):
    low = serializers.FloatField()
    high = serializers.FloatField()
    confidence = serializers.FloatField()

    class Meta:
        ref_name = "ExperimentInterval"


class _VariantSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    percent = serializers.FloatField()

    class Meta:
        ref_name = "ExperimentVariant"


class ExperimentSerializer(serializers.Serializer):
    name = serializers.CharField()
    start_event = serializers.IntegerField(help_text="Names the experiment: ?experiment=<this>.")
    stop_event = serializers.IntegerField(allow_null=True)
    running = serializers.BooleanField()
    started_at = serializers.DateTimeField()
    stopped_at = serializers.DateTimeField(allow_null=True)
    stopped_by = serializers.CharField(
        allow_null=True, help_text="experiment_stop, or rollback when a rollback ended it."
    )
    planned_calls = serializers.IntegerField(allow_null=True)
    salt = serializers.CharField()
    stable_version = serializers.IntegerField(
        allow_null=True, help_text="The stable version while it ran."
    )
    winner = serializers.CharField(
        allow_null=True,
        help_text="The variant whose version became stable at the stop; null if stable did not "
        "move.",
    )
    variants = _VariantSerializer(many=True)

    class Meta:
        ref_name = "Experiment"


class _RateSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    total = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)
    ci = _IntervalSerializer(allow_null=True, help_text="Wilson score interval.")

    class Meta:
        ref_name = "ExperimentRate"


class _MeanSerializer(serializers.Serializer):
    n = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    ci = _IntervalSerializer(allow_null=True, help_text="Student's t interval.")

    class Meta:
        ref_name = "ExperimentMean"


class _LatencySerializer(_MeanSerializer):
    p50 = serializers.FloatField(allow_null=True, help_text="Within about 0.5 %.")
    p95 = serializers.FloatField(allow_null=True, help_text="Within about 0.5 %.")

    class Meta:
        ref_name = "ExperimentLatency"


class _TokensSerializer(serializers.Serializer):
    n = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "ExperimentTokens"


class _VariantFiguresSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    percent = serializers.FloatField()
    control = serializers.BooleanField()
    calls = serializers.IntegerField(help_text="Sticky calls in the window.")
    expected_share = serializers.FloatField()
    observed_share = serializers.FloatField(allow_null=True)
    error_rate = _RateSerializer()
    schema_failure_rate = _RateSerializer()
    feedback = _MeanSerializer()
    latency_ms = _LatencySerializer()
    cost = _MeanSerializer()
    input_tokens = _TokensSerializer()
    output_tokens = _TokensSerializer()

    class Meta:
        ref_name = "ExperimentVariantFigures"


class _ComparisonSerializer(serializers.Serializer):
    variant = serializers.CharField()
    metric = serializers.ChoiceField(
        choices=["error_rate", "schema_failure_rate", "feedback", "latency_ms", "cost"]
    )
    label = serializers.CharField()
    test = serializers.CharField(help_text="two proportions, Welch's t, or empty when not run.")
    control_value = serializers.FloatField(allow_null=True)
    variant_value = serializers.FloatField(allow_null=True)
    difference = serializers.FloatField(allow_null=True, help_text="variant − control.")
    ci = _IntervalSerializer(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField(
        allow_null=True, help_text="The sequential p-value threshold of this look."
    )
    significant = serializers.BooleanField()
    lower_is_better = serializers.BooleanField()
    reading = serializers.CharField()

    class Meta:
        ref_name = "ExperimentComparison"


class _LookSerializer(serializers.Serializer):
    sticky_calls = serializers.IntegerField()
    planned_calls = serializers.IntegerField(allow_null=True)
    information_fraction = serializers.FloatField(allow_null=True)
    final = serializers.BooleanField()
    threshold = serializers.FloatField(allow_null=True)
    explanation = serializers.CharField()

    class Meta:
        ref_name = "ExperimentLook"


class _ArmSerializer(serializers.Serializer):
    name = serializers.CharField()
    observed = serializers.IntegerField()
    expected = serializers.FloatField()

    class Meta:
        ref_name = "ExperimentSampleRatioArm"


class _SampleRatioSerializer(serializers.Serializer):
    statistic = serializers.FloatField()
    df = serializers.IntegerField()
    p_value = serializers.FloatField()
    threshold = serializers.FloatField()
    mismatch = serializers.BooleanField()
    variants = _ArmSerializer(many=True)

    class Meta:
        ref_name = "ExperimentSampleRatio"


class _TimelinePointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    calls = serializers.DictField(
        child=serializers.IntegerField(), help_text="Cumulative sticky calls per variant."
    )

    class Meta:
        ref_name = "ExperimentTimelinePoint"


class _TimelineSerializer(serializers.Serializer):
    unit = serializers.ChoiceField(choices=["minute", "hour", "day", "week"])
    points = _TimelinePointSerializer(many=True)

    class Meta:
        ref_name = "ExperimentTimeline"


class ExperimentResultsSerializer(serializers.Serializer):
    prompt = serializers.CharField()
    environment = serializers.CharField()
    experiment = ExperimentSerializer()
    control = serializers.CharField(help_text="The first variant.")
    alpha = serializers.FloatField()
    look = _LookSerializer()
    sample_ratio = _SampleRatioSerializer(allow_null=True)
    decisions_held = serializers.BooleanField(
        help_text="True on a sample ratio mismatch: nothing is significant, decide nothing."
    )
    warnings = serializers.ListField(child=serializers.CharField())
    excluded_non_sticky_calls = serializers.IntegerField()
    variants = _VariantFiguresSerializer(many=True)
    comparisons = _ComparisonSerializer(many=True)
    timeline = _TimelineSerializer()
    computed_at = serializers.DateTimeField()

    class Meta:
        ref_name = "ExperimentResults"


# --- Views ---------------------------------------------------------------------------------------


def _release(request: Request, environment: str, key: str) -> Release:
    # The environment limit first: a limited key learns nothing about other environments.
    ensure_environment_allowed(request, environment)
    return release_get(prompt=prompt_get(key=key), environment=environment_get(name=environment))


class ExperimentListApi(APIView):
    """``GET /releases/{environment}/{key}/experiments``: newest first."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    @extend_schema(operation_id="releases_experiments", responses=ExperimentSerializer(many=True))
    def get(self, request: Request, environment: str, key: str) -> Response:
        release = _release(request, environment, key)
        return Response([experiment_representation(r) for r in experiment_list(release=release)])


class ExperimentResultsApi(APIView):
    """``GET /releases/{environment}/{key}/experiment/results[?experiment=<start event id>]``."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    class FilterSerializer(serializers.Serializer):
        experiment = serializers.IntegerField(min_value=1, required=False)

        class Meta:
            ref_name = "ExperimentResultsFilter"

    @extend_schema(
        operation_id="releases_experiment_results",
        parameters=[
            OpenApiParameter(
                "experiment",
                {"type": "integer", "minimum": 1},
                description="The start event id of a past experiment; default: the running one.",
            )
        ],
        responses=ExperimentResultsSerializer,
    )
    def get(self, request: Request, environment: str, key: str) -> Response:
        release = _release(request, environment, key)
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        results = experiment_results(
            release=release, experiment_event=query.validated_data.get("experiment")
        )
        return Response(results_representation(results))
