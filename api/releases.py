"""The release path: environments, release state, changes and history (scope ``releases:write``).

Each change takes an optional ``If-Match`` with the release revision (quoted or not); a stale one
answers ``409 stale-revision`` with ``current_revision``. Keys limited to environments cannot touch
another one: the check runs before any service is called.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluations.canary.services import canary_analysis_start
from registry.models import Prompt
from registry.selectors import prompt_get
from releases import services
from releases.models import SHADOW_BUDGET_MAX, SHADOW_BUDGET_MIN, Environment, Release
from releases.selectors import environment_get, environment_list, release_get, release_history
from releases.services.experiment import PLANNED_CALLS_MAX, PLANNED_CALLS_MIN
from releases.state import ReleaseState, Shadow, release_state, shadow_budget

from .fields import BasisPointsPercentField, OffsetDateTimeField
from .models import ApiKey, Scope
from .pagination import Pagination
from .permissions import HasScope, key_environment_check
from .serializers import (
    CanaryPolicyField,
    PercentField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    VariantNameField,
)

# The revision as an ETag: 12, "12" or W/"12"; * (any revision) is the same as leaving it out.
_IF_MATCH = re.compile(r'(?:W/)?"?([0-9]+)"?')
IF_MATCH = OpenApiParameter(
    "If-Match",
    {"type": "string", "pattern": r'^(?:\*|(?:W/)?"?[0-9]+"?)$'},
    OpenApiParameter.HEADER,
    description='The release revision you read (`12` or `"12"`, as the ETag says); the change '
    "is refused if it moved on. `*` or no header: whatever the revision.",
)


def if_match_revision(request: Request) -> int | None:
    value = request.headers.get("If-Match")
    if value is None or value.strip() == "*":
        return None
    match = _IF_MATCH.fullmatch(value.strip())
    if match is None:
        raise serializers.ValidationError({"If-Match": ["Send the release revision, a number."]})
    return int(match[1])


class EnvironmentSerializer(serializers.Serializer):
    name = serializers.CharField()
    position = serializers.IntegerField()
    requires_previous_stable = serializers.BooleanField()
    description = serializers.CharField()


class EnvironmentListApi(APIView):
    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    @extend_schema(operation_id="environments_list", responses=EnvironmentSerializer(many=True))
    def get(self, request: Request) -> Response:
        # A key limited to environments sees those only (STYLE R11: lists are scoped too).
        environments = environment_list(names=request.auth.environments)
        return Response(EnvironmentSerializer(environments, many=True).data)


@dataclass(frozen=True, slots=True)
class _ReleaseShown:
    """What a release answer shows: the row, and its state read once (``release_state``)."""

    release: Release
    state: ReleaseState


class _EffectiveBudgetField(serializers.IntegerField):
    """The shadow budget in force: the shadow's own, else the server's (``shadow_budget``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(source="*", **kwargs)

    def to_representation(self, shadow: Shadow) -> int:
        return shadow_budget(ReleaseState(shadow=shadow))


class _VariantSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    percent = BasisPointsPercentField(source="weight")

    class Meta:
        ref_name = "ReleaseVariant"


# Every release answer is ``ReleaseOutputSerializer(release).data``: the fields below are both the
# answer and its schema.
class ReleaseOutputSerializer(serializers.Serializer):
    """A prompt's release in one environment: the versions it serves and its revision (the ETag,
    which a change may send back in If-Match)."""

    class CanarySerializer(serializers.Serializer):
        version = serializers.IntegerField()
        percent = BasisPointsPercentField(source="weight")
        salt = serializers.CharField()

        class Meta:
            ref_name = "ReleaseCanary"

    class ExperimentSerializer(serializers.Serializer):
        name = serializers.CharField()
        salt = serializers.CharField()
        planned_calls = serializers.IntegerField(allow_null=True)
        variants = _VariantSerializer(many=True)

        class Meta:
            ref_name = "ReleaseExperiment"

    class ShadowSerializer(serializers.Serializer):
        versions = serializers.ListField(child=serializers.IntegerField())
        sample_percent = BasisPointsPercentField(source="sample")
        salt = serializers.CharField()
        # The release's own budget (null: none set) and the one in force, so that a reader
        # never has to know the server's setting.
        budget_per_hour = serializers.IntegerField(
            allow_null=True, help_text="Shadow runs per hour set on the release; null: none."
        )
        effective_budget_per_hour = _EffectiveBudgetField(
            help_text="The budget in force: budget_per_hour, else the server's default."
        )

        class Meta:
            ref_name = "ReleaseShadow"

    prompt = serializers.CharField(source="release.prompt.key")
    environment = serializers.CharField(source="release.environment.name")
    revision = serializers.IntegerField(source="release.revision")
    stable = serializers.IntegerField(source="state.stable", allow_null=True)
    canary = CanarySerializer(source="state.canary", allow_null=True)
    experiment = ExperimentSerializer(source="state.experiment", allow_null=True)
    shadow = ShadowSerializer(source="state.shadow", allow_null=True)
    updated_at = OffsetDateTimeField(source="release.updated_at")

    class Meta:
        ref_name = "Release"

    def to_representation(self, release: Release) -> dict[str, Any]:
        # The state costs a query for the version numbers: read it once, not once per field.
        return super().to_representation(_ReleaseShown(release, release_state(release)))


def _release_response(release: Release, status_code: int = status.HTTP_200_OK) -> Response:
    response = Response(ReleaseOutputSerializer(release).data, status=status_code)
    response["ETag"] = f'"{release.revision}"'
    return response


def _target(request: Request, environment: str, key: str) -> tuple[Prompt, Environment]:
    return release_target(request.auth, environment=environment, key=key)


def release_target(api_key: ApiKey, *, environment: str, key: str) -> tuple[Prompt, Environment]:
    """The prompt and the environment a release request names, once the key may touch that
    environment (the release views and the MCP server's release tools)."""
    key_environment_check(api_key, environment)
    return prompt_get(key=key), environment_get(name=environment)


class ReleaseDetailApi(APIView):
    """``GET /releases/{environment}/{key}``: the release's state; its revision is the ETag."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    @extend_schema(operation_id="releases_retrieve", responses=ReleaseOutputSerializer)
    def get(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        return _release_response(release_get(prompt=prompt, environment=env))


class ReleaseChangeApi(APIView, ABC):
    """Base of the change endpoints: scope, environment limit, If-Match, reason, one service."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]

    class InputSerializer(serializers.Serializer):
        reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)

    @abstractmethod
    def change(self, **arguments) -> Release:
        """Calls the endpoint's one service with the parsed arguments (the MCP server's
        ``propose_release_change`` calls it too)."""

    def post(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        release = self.change(
            prompt=prompt,
            environment=env,
            actor=request.user.actor,
            expected_revision=if_match_revision(request),
            **values,
        )
        return _release_response(release)


def _change_schema(operation_id: str, serializer):
    return extend_schema(
        operation_id=operation_id,
        request=serializer,
        responses=ReleaseOutputSerializer,
        parameters=[IF_MATCH],
    )


class _Reason(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)


class _Promotion(_Reason):
    """A change that puts a version in front of traffic: the promotion gates are consulted."""

    override_gates = StrictBooleanField(
        required=False,
        default=False,
        help_text="Release even if promotion gates fail; needs a reason, which the release "
        "history keeps with the gates overridden.",
    )


class ReleaseDeployApi(ReleaseChangeApi):
    class InputSerializer(_Promotion):
        version = StrictIntegerField(min_value=1)

        class Meta:
            ref_name = "ReleaseDeployInput"

    def change(self, **arguments):
        return services.release_deploy(**arguments)

    @_change_schema("releases_deploy", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseCanaryStartApi(ReleaseChangeApi):
    """With ``analysis`` (a canary analysis policy) the canary starts at the policy's first step
    and the analysis with it, in one transaction (docs/canary-analysis.md)."""

    class InputSerializer(_Promotion):
        version = StrictIntegerField(min_value=1)
        percent = PercentField(
            required=False,
            allow_null=True,
            default=None,
            help_text="Required without an analysis; with one, the policy's first step.",
        )
        analysis = CanaryPolicyField(
            required=False,
            allow_null=True,
            default=None,
            help_text="A canary analysis policy: the registry ramps, promotes or rolls back the "
            "canary by its verdicts. Fields left out take their defaults.",
        )

        class Meta:
            ref_name = "ReleaseCanaryStartInput"

        def validate(self, attrs):
            if attrs.get("analysis") is None and attrs.get("percent") is None:
                raise serializers.ValidationError(
                    {"percent": ["Give the canary's percent, or an analysis policy."]},
                    code="percent_or_analysis",
                )
            return attrs

    def change(self, *, analysis, **arguments):
        if analysis is None:
            return services.release_canary_start(**arguments)
        return canary_analysis_start(policy=analysis, **arguments).release

    @_change_schema("releases_canary_start", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseCanaryPercentApi(ReleaseChangeApi):
    class InputSerializer(_Reason):
        percent = PercentField()

        class Meta:
            ref_name = "ReleaseCanaryPercentInput"

    def change(self, **arguments):
        return services.release_canary_set_percent(**arguments)

    @_change_schema("releases_canary_percent", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseCanaryPromoteApi(ReleaseChangeApi):
    class InputSerializer(_Promotion):
        class Meta:
            ref_name = "ReleaseCanaryPromoteInput"

    def change(self, **arguments):
        return services.release_canary_promote(**arguments)

    @_change_schema("releases_canary_promote", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseCanaryAbortApi(ReleaseChangeApi):
    class InputSerializer(_Reason):
        class Meta:
            ref_name = "ReleaseCanaryAbortInput"

    def change(self, **arguments):
        return services.release_canary_abort(**arguments)

    @_change_schema("releases_canary_abort", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class _VariantInput(serializers.Serializer):
    name = VariantNameField()
    version = StrictIntegerField(min_value=1)
    percent = PercentField()

    class Meta:
        ref_name = "ReleaseExperimentVariantInput"


class ReleaseExperimentStartApi(ReleaseChangeApi):
    VariantSerializer = _VariantInput

    class InputSerializer(_Promotion):
        name = StrictCharField(max_length=100)
        # Nested, so that a bad variant's error points at /variants/<i>/<field>.
        variants = serializers.ListField(child=_VariantInput(), min_length=2, max_length=10)
        planned_calls = StrictIntegerField(
            required=False,
            allow_null=True,
            default=None,
            min_value=PLANNED_CALLS_MIN,
            max_value=PLANNED_CALLS_MAX,
            help_text="Sticky calls (all variants) to collect before the final analysis; the "
            "results correct each earlier look against it. Fixed for the experiment's life.",
        )

        class Meta:
            ref_name = "ReleaseExperimentStartInput"

    def change(self, *, variants, **arguments):
        return services.release_experiment_start(
            variants=[(v["name"], v["version"], v["percent"]) for v in variants], **arguments
        )

    @_change_schema("releases_experiment_start", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseExperimentStopApi(ReleaseChangeApi):
    class InputSerializer(_Promotion):
        winner = StrictCharField(required=False, allow_null=True, default=None, max_length=50)

        class Meta:
            ref_name = "ReleaseExperimentStopInput"

    def change(self, **arguments):
        return services.release_experiment_stop(**arguments)

    @_change_schema("releases_experiment_stop", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseShadowStartApi(ReleaseChangeApi):
    class InputSerializer(_Reason):
        versions = serializers.ListField(
            child=StrictIntegerField(min_value=1), min_length=1, max_length=3
        )
        sample_percent = PercentField()
        budget_per_hour = StrictIntegerField(
            required=False,
            allow_null=True,
            default=None,
            min_value=SHADOW_BUDGET_MIN,
            max_value=SHADOW_BUDGET_MAX,
            help_text="Shadow runs per hour at most; absent or null: the server default "
            "(SHADOW_BUDGET_PER_HOUR). Resending a running shadow's versions and sample with "
            "another budget changes only the budget: the same calls stay sampled.",
        )

        class Meta:
            ref_name = "ReleaseShadowStartInput"

    def change(self, **arguments):
        return services.release_shadow_start(**arguments)

    @_change_schema("releases_shadow_start", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseShadowStopApi(ReleaseChangeApi):
    class InputSerializer(_Reason):
        class Meta:
            ref_name = "ReleaseShadowStopInput"

    def change(self, **arguments):
        return services.release_shadow_stop(**arguments)

    @_change_schema("releases_shadow_stop", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseRollbackApi(ReleaseChangeApi):
    class InputSerializer(_Reason):
        to_event = StrictIntegerField(required=False, allow_null=True, default=None)

        class Meta:
            ref_name = "ReleaseRollbackInput"

    def change(self, **arguments):
        return services.release_rollback(**arguments)

    @_change_schema("releases_rollback", InputSerializer)
    def post(self, request, environment, key):
        return super().post(request, environment, key)


class ReleaseEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.CharField()
    revision = serializers.IntegerField()
    actor = serializers.CharField(source="actor_label")
    reason = serializers.CharField()
    before = serializers.JSONField()
    after = serializers.JSONField()
    restores = serializers.IntegerField(source="restores_id", allow_null=True)
    overridden_gates = serializers.SerializerMethodField(
        help_text="The failing promotion gates this change was released past (the reason says "
        "why); empty when none were."
    )
    created_at = serializers.DateTimeField()

    def get_overridden_gates(self, event) -> list[dict]:
        return event.overridden_gates or []


class ReleaseHistoryApi(APIView):
    """``GET /releases/{environment}/{key}/history``: newest first, paginated."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]
    # Read by drf-spectacular too: the history is documented as the paginated object it is.
    pagination_class = Pagination

    @extend_schema(operation_id="releases_history", responses=ReleaseEventSerializer(many=True))
    def get(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        events = release_history(release=release_get(prompt=prompt, environment=env))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response(ReleaseEventSerializer(page, many=True).data)
