"""Canary analysis over the API: read the analysis of a release's canary, attach one to a running
canary, resume a held one, stop one (the canary itself stays as it is).

A canary started with an ``analysis`` policy (``POST .../canary``, api/releases.py) has one from
the start. Reading needs ``prompts:read``; every change needs ``releases:write``. Keys limited to
environments reach only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluations.canary.services import (
    canary_analysis_attach,
    canary_analysis_get,
    canary_analysis_resume,
    canary_analysis_stop,
    canary_analysis_times,
    canary_verdicts_recent,
)
from evaluations.models import CanaryAnalysis, CanaryVerdict
from releases.selectors import release_get

from .fields import NumberField
from .models import Scope
from .permissions import HasScope, scope_by_method
from .releases import IF_MATCH, _target, if_match_revision
from .serializers import CanaryPolicyField, StrictCharField

if TYPE_CHECKING:
    from evaluations.canary.policy import CanaryTimes

RECENT_VERDICTS = 20


@dataclass(frozen=True, slots=True)
class _AnalysisShown:
    """What an analysis answer shows: the row, its times, its latest verdicts (each read once)."""

    analysis: CanaryAnalysis
    times: CanaryTimes | None
    verdicts: list[CanaryVerdict]


class _StepPercentField(NumberField):
    """The percent of the analysis' current step, as its policy gives it."""

    def to_representation(self, analysis: CanaryAnalysis) -> int | float:
        return analysis.policy["steps"][analysis.step]


# Every analysis answer is ``AnalysisOutputSerializer(analysis).data``: the fields below are both
# the answer and its schema.
class AnalysisOutputSerializer(serializers.Serializer):
    """A canary analysis: its policy, where it stands (step, status, times) and its latest
    verdicts."""

    class TimesSerializer(serializers.Serializer):
        earliest_promotion = serializers.DateTimeField(
            help_text="The step's start plus the minimum minutes of this and every later step."
        )
        latest_verdict = serializers.DateTimeField(
            help_text="The step's start plus its maximum minutes: without the minimum sample by "
            "then, the step could not be measured (and, after the retries, holds)."
        )

        class Meta:
            ref_name = "CanaryAnalysisTimes"

    class VerdictSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="pk")
        outcome = serializers.ChoiceField(choices=CanaryVerdict.Outcome.choices)
        step = serializers.IntegerField()
        percent = serializers.FloatField()
        summary = serializers.CharField()
        figures = serializers.JSONField(
            help_text="calls per arm, minutes, and per check: canary, stable, difference, ci, "
            "p_value, margin, status, passed; srm."
        )
        release_event = serializers.IntegerField(source="release_event_id", allow_null=True)
        created_at = serializers.DateTimeField()

        class Meta:
            ref_name = "CanaryVerdict"

    id = serializers.IntegerField(source="analysis.pk")
    canary_version = serializers.IntegerField(source="analysis.canary_version")
    canary_salt = serializers.CharField(source="analysis.canary_salt")
    status = serializers.ChoiceField(
        source="analysis.status", choices=CanaryAnalysis.Status.choices
    )
    status_reason = serializers.CharField(
        source="analysis.hold_reason", help_text="Why it is held, or why it ended."
    )
    step = serializers.IntegerField(source="analysis.step", help_text="Index into policy.steps.")
    percent = _StepPercentField(source="analysis")
    step_started_at = serializers.DateTimeField(source="analysis.step_started_at")
    unmeasured_looks = serializers.IntegerField(source="analysis.unmeasured_looks")
    last_looked_at = serializers.DateTimeField(source="analysis.last_looked_at", allow_null=True)
    policy = CanaryPolicyField(
        source="analysis.policy", help_text="The policy as validated: every field, per-step lists."
    )
    times = TimesSerializer(allow_null=True, help_text="Only while the analysis runs.")
    created_by = serializers.CharField(source="analysis.created_by_label")
    created_at = serializers.DateTimeField(source="analysis.created_at")
    verdicts = VerdictSerializer(many=True, help_text=f"The latest {RECENT_VERDICTS}.")

    class Meta:
        ref_name = "CanaryAnalysis"

    def to_representation(self, analysis: CanaryAnalysis) -> dict[str, Any]:
        shown = _AnalysisShown(
            analysis,
            canary_analysis_times(analysis),
            canary_verdicts_recent(analysis=analysis, limit=RECENT_VERDICTS),
        )
        return super().to_representation(shown)


class _Reason(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)


class CanaryAnalysisApi(APIView):
    """``GET``: the analysis of the release's canary (else its latest); ``POST``: attach one to
    the running canary."""

    class AttachInputSerializer(_Reason):
        analysis = CanaryPolicyField(
            help_text="The policy; fields left out take their defaults (docs/canary-analysis.md)."
        )

        class Meta:
            ref_name = "CanaryAnalysisAttachInput"

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.RELEASES_WRITE)

    @extend_schema(operation_id="releases_canary_analysis", responses=AnalysisOutputSerializer)
    def get(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        analysis = canary_analysis_get(release=release_get(prompt=prompt, environment=env))
        return Response(AnalysisOutputSerializer(analysis).data)

    @extend_schema(
        operation_id="releases_canary_analysis_attach",
        request=AttachInputSerializer,
        responses={201: AnalysisOutputSerializer},
        parameters=[IF_MATCH],
    )
    def post(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        data = self.AttachInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        analysis = canary_analysis_attach(
            prompt=prompt,
            environment=env,
            policy=data.validated_data["analysis"],
            actor=request.user.actor,
            reason=data.validated_data["reason"],
            expected_revision=if_match_revision(request),
        )
        return Response(AnalysisOutputSerializer(analysis).data, status=status.HTTP_201_CREATED)


class CanaryAnalysisResumeApi(APIView):
    """A held analysis judges again, on a fresh window of its current step."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]

    @extend_schema(
        operation_id="releases_canary_analysis_resume",
        request=None,
        responses=AnalysisOutputSerializer,
    )
    def post(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        analysis = canary_analysis_get(release=release_get(prompt=prompt, environment=env))
        analysis = canary_analysis_resume(analysis_id=analysis.pk, actor=request.user.actor)
        return Response(AnalysisOutputSerializer(analysis).data)


class CanaryAnalysisStopApi(APIView):
    """The analysis stops judging; the canary stays at its percent for a person to decide."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]

    class InputSerializer(_Reason):
        class Meta:
            ref_name = "CanaryAnalysisStopInput"

    @extend_schema(
        operation_id="releases_canary_analysis_stop",
        request=InputSerializer,
        responses=AnalysisOutputSerializer,
    )
    def post(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        analysis = canary_analysis_get(release=release_get(prompt=prompt, environment=env))
        analysis = canary_analysis_stop(
            analysis_id=analysis.pk,
            actor=request.user.actor,
            reason=data.validated_data["reason"],
        )
        return Response(AnalysisOutputSerializer(analysis).data)
