"""A/B results over the API (scope ``prompts:read``): a release's experiments, and one's results.

- ``GET /releases/{environment}/{key}/experiments``: every experiment of the release, newest first,
  with its start and stop events (the start event id names it).
- ``GET /releases/{environment}/{key}/experiment/results[?experiment=<start event id>]``: the
  results of the running experiment, or of the one named; the same figures as the admin page.

Keys limited to environments see theirs only. The figures come from
``evaluations.experiments.selectors.experiment_results``; this module only shapes them.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluations.experiments.selectors import (
    ExperimentResults,
    experiment_list,
    experiment_results,
)
from registry.selectors import prompt_get
from releases.models import Release
from releases.selectors import environment_get, release_get

from .fields import BasisPointsPercentField, OffsetDateTimeField
from .models import Scope
from .permissions import HasScope, ensure_environment_allowed


class _IntervalSerializer(serializers.Serializer):
    low = serializers.FloatField()
    high = serializers.FloatField()
    confidence = serializers.FloatField()

    class Meta:
        ref_name = "ExperimentInterval"


class _VariantSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    percent = BasisPointsPercentField(source="weight")

    class Meta:
        ref_name = "ExperimentVariant"


# Reads an ``ExperimentRecord``.
class ExperimentSerializer(serializers.Serializer):
    name = serializers.CharField(source="experiment.name")
    start_event = serializers.IntegerField(
        source="start_event_id", help_text="Names the experiment: ?experiment=<this>."
    )
    stop_event = serializers.IntegerField(source="stop_event_id", allow_null=True)
    running = serializers.BooleanField()
    started_at = OffsetDateTimeField()
    stopped_at = OffsetDateTimeField(allow_null=True)
    stopped_by = serializers.CharField(
        source="stop_action",
        allow_null=True,
        help_text="experiment_stop, or rollback when a rollback ended it.",
    )
    planned_calls = serializers.IntegerField(source="experiment.planned_calls", allow_null=True)
    salt = serializers.CharField(source="experiment.salt")
    stable_version = serializers.IntegerField(
        source="stable_before", allow_null=True, help_text="The stable version while it ran."
    )
    winner = serializers.CharField(
        allow_null=True,
        help_text="The variant whose version became stable at the stop; null if stable did not "
        "move.",
    )
    variants = _VariantSerializer(source="experiment.variants", many=True)

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


# Reads a ``VariantFigures``: its latency mean, and the percentiles beside it.
class _LatencySerializer(serializers.Serializer):
    n = serializers.IntegerField(source="latency_ms.n")
    mean = serializers.FloatField(source="latency_ms.mean", allow_null=True)
    ci = _IntervalSerializer(
        source="latency_ms.ci", allow_null=True, help_text="Student's t interval."
    )
    p50 = serializers.FloatField(
        source="latency_p50_ms", allow_null=True, help_text="Within about 0.5 %."
    )
    p95 = serializers.FloatField(
        source="latency_p95_ms", allow_null=True, help_text="Within about 0.5 %."
    )

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
    percent = BasisPointsPercentField(source="weight")
    control = serializers.BooleanField()
    calls = serializers.IntegerField(help_text="Sticky calls in the window.")
    expected_share = serializers.FloatField()
    observed_share = serializers.FloatField(allow_null=True)
    error_rate = _RateSerializer()
    schema_failure_rate = _RateSerializer()
    feedback = _MeanSerializer()
    latency_ms = _LatencySerializer(source="*")
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
    variants = _ArmSerializer(source="arms", many=True)

    class Meta:
        ref_name = "ExperimentSampleRatio"


class _TimelinePointSerializer(serializers.Serializer):
    at = OffsetDateTimeField()
    calls = serializers.DictField(
        source="cumulative",
        child=serializers.IntegerField(),
        help_text="Cumulative sticky calls per variant.",
    )

    class Meta:
        ref_name = "ExperimentTimelinePoint"


# Reads an ``ExperimentResults``: its timeline and the unit of its points.
class _TimelineSerializer(serializers.Serializer):
    unit = serializers.ChoiceField(
        source="timeline_unit", choices=["minute", "hour", "day", "week"]
    )
    points = _TimelinePointSerializer(source="timeline", many=True)

    class Meta:
        ref_name = "ExperimentTimeline"


class _WarningsField(serializers.ListField):
    """Reads an ``ExperimentResults``: what a reader must know before reading the figures."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.CharField(), source="*", **kwargs)

    def to_representation(self, results: ExperimentResults) -> list[str]:
        srm = results.srm
        if not results.decisions_held:
            return []
        return [
            "Sample ratio mismatch: the observed split does not match the weights "
            f"(p = {srm.p_value:.2g} < {srm.threshold:g}). Assignment or logging is broken, so "
            "every figure is suspect and no decision is made until it is explained."
        ]


# Reads an ``ExperimentResults``. Every answer here is one of these serializers over the figures
# (``evaluations.experiments``): the fields are both the answer and its schema.
class ExperimentResultsSerializer(serializers.Serializer):
    prompt = serializers.CharField(source="release.prompt.key")
    environment = serializers.CharField(source="release.environment.name")
    experiment = ExperimentSerializer(source="record")
    control = serializers.CharField(help_text="The first variant.")
    alpha = serializers.FloatField()
    look = _LookSerializer()
    sample_ratio = _SampleRatioSerializer(source="srm", allow_null=True)
    decisions_held = serializers.BooleanField(
        help_text="True on a sample ratio mismatch: nothing is significant, decide nothing."
    )
    warnings = _WarningsField()
    excluded_non_sticky_calls = serializers.IntegerField(source="excluded_non_sticky")
    variants = _VariantFiguresSerializer(many=True)
    comparisons = _ComparisonSerializer(many=True)
    timeline = _TimelineSerializer(source="*")
    computed_at = OffsetDateTimeField()

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
        return Response(ExperimentSerializer(experiment_list(release=release), many=True).data)


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
        return Response(ExperimentResultsSerializer(results).data)
