"""Promotion gates over the API: an environment's gates (read with ``prompts:read``, changed with
``releases:write``) and a version's standing against them (``prompts:read``).

Keys limited to environments see and change only their environments' gates: the check runs on
the environment in the path before any selector or service is called (STYLE R11).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluations.gates.services import (
    KEEP,
    GateStatus,
    promotion_gate_create,
    promotion_gate_delete,
    promotion_gate_get,
    promotion_gate_list,
    promotion_gate_update,
    version_gate_status,
)
from evaluations.models import PromotionGate
from registry.selectors import prompt_get
from releases.selectors import environment_get

from .models import Scope
from .permissions import HasScope, ensure_environment_allowed, scope_by_method
from .serializers import (
    DATASET_MAX_CHARS,
    DATASET_PATTERN,
    ENVIRONMENT_MAX_CHARS,
    ENVIRONMENT_PATTERN,
    KEY_MAX_CHARS,
    KEY_PATTERN,
    DecimalNumberField,
    StrictBooleanField,
    StrictCharField,
)


class GateOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    environment = serializers.CharField(source="environment.name")
    prompt = serializers.CharField(
        source="prompt.key",
        allow_null=True,
        default=None,
        help_text="The prompt the gate is on; null: every prompt with a dataset of that name.",
    )
    dataset = serializers.CharField(source="dataset_name")
    min_pass_rate = serializers.DecimalField(
        max_digits=5, decimal_places=2, coerce_to_string=False, help_text="Percent, 0–100."
    )
    must_pass_cases = serializers.BooleanField(
        help_text="Refuse a version that fails any must-pass case."
    )
    enabled = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "PromotionGate"


# The values are checked by the service (pass rate range and decimals, dataset name, prompt), so
# the API and the admin answer the same words; the serializers only parse the JSON types.
_DATASET = {
    "max_length": DATASET_MAX_CHARS,
    "pattern": DATASET_PATTERN,
    "help_text": "The dataset's name, e.g. golden.",
}
_PASS_RATE = {
    "help_text": "Percent of the gate run's cases that must pass, 0–100, at most two decimals.",
}
_PROMPT = {
    "max_length": KEY_MAX_CHARS,
    "pattern": KEY_PATTERN,
    "allow_null": True,
    "help_text": "A prompt key: the gate is on that prompt alone, and refuses it while it has no "
    "such dataset. Null or absent: every prompt with a dataset of that name.",
}


def _gate_response(gate: PromotionGate, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(GateOutputSerializer(gate).data, status=status_code)


class EnvironmentGateCollectionApi(APIView):
    """``GET /environments/{environment}/gates`` lists the gates; ``POST`` adds one."""

    class InputSerializer(serializers.Serializer):
        dataset = StrictCharField(**_DATASET)
        min_pass_rate = DecimalNumberField(**_PASS_RATE)
        must_pass_cases = StrictBooleanField(required=False, default=True)
        prompt = StrictCharField(required=False, default=None, **_PROMPT)
        enabled = StrictBooleanField(required=False, default=True)

        class Meta:
            ref_name = "PromotionGateCreateInput"

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.RELEASES_WRITE)

    @extend_schema(operation_id="gates_list", responses=GateOutputSerializer(many=True))
    def get(self, request: Request, environment: str) -> Response:
        ensure_environment_allowed(request, environment)
        gates = promotion_gate_list(environment=environment_get(name=environment))
        return Response(GateOutputSerializer(gates, many=True).data)

    @extend_schema(
        operation_id="gates_create", request=InputSerializer, responses={201: GateOutputSerializer}
    )
    def post(self, request: Request, environment: str) -> Response:
        ensure_environment_allowed(request, environment)
        env = environment_get(name=environment)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        gate = promotion_gate_create(
            environment=env,
            dataset_name=values["dataset"],
            min_pass_rate=values["min_pass_rate"],
            prompt_key=values["prompt"],
            must_pass_cases=values["must_pass_cases"],
            enabled=values["enabled"],
            actor=request.user.actor,
        )
        return _gate_response(gate, status.HTTP_201_CREATED)


class EnvironmentGateDetailApi(APIView):
    """``GET``, ``PATCH`` (the fields sent) and ``DELETE /environments/{environment}/gates/{id}``."""

    class InputSerializer(serializers.Serializer):
        dataset = StrictCharField(required=False, **_DATASET)
        min_pass_rate = DecimalNumberField(required=False, **_PASS_RATE)
        must_pass_cases = StrictBooleanField(required=False)
        prompt = StrictCharField(required=False, **_PROMPT)
        enabled = StrictBooleanField(required=False)

        class Meta:
            ref_name = "PromotionGateUpdateInput"

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.RELEASES_WRITE)

    def _gate(self, request: Request, environment: str, gate_id: int) -> PromotionGate:
        ensure_environment_allowed(request, environment)
        return promotion_gate_get(environment=environment_get(name=environment), gate_id=gate_id)

    @extend_schema(operation_id="gates_retrieve", responses=GateOutputSerializer)
    def get(self, request: Request, environment: str, gate_id: int) -> Response:
        return _gate_response(self._gate(request, environment, gate_id))

    @extend_schema(
        operation_id="gates_update", request=InputSerializer, responses=GateOutputSerializer
    )
    def patch(self, request: Request, environment: str, gate_id: int) -> Response:
        gate = self._gate(request, environment, gate_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        gate = promotion_gate_update(
            gate=gate,
            actor=request.user.actor,
            dataset_name=values.get("dataset", KEEP),
            min_pass_rate=values.get("min_pass_rate", KEEP),
            prompt_key=values.get("prompt", KEEP),
            must_pass_cases=values.get("must_pass_cases", KEEP),
            enabled=values.get("enabled", KEEP),
        )
        return _gate_response(gate)

    @extend_schema(operation_id="gates_delete", responses={204: None})
    def delete(self, request: Request, environment: str, gate_id: int) -> Response:
        gate = self._gate(request, environment, gate_id)
        promotion_gate_delete(gate=gate, actor=request.user.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class GateCheckSerializer(serializers.Serializer):
    gate = serializers.CharField(help_text="e.g. golden-pass-rate, golden-must-pass, golden-run.")
    passed = serializers.BooleanField()
    detail = serializers.CharField()

    class Meta:
        ref_name = "PromotionGateCheck"


# Reads the ``GateStatus``: its run and the figures it judged from it.
class GateRunSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="run.pk")
    pass_rate = serializers.FloatField(allow_null=True)
    passed_cases = serializers.IntegerField()
    total_cases = serializers.IntegerField()
    baseline = serializers.IntegerField(
        source="run.baseline_id", allow_null=True, help_text="The stable version's run."
    )
    finished_at = serializers.DateTimeField(source="run.finished_at", allow_null=True)

    class Meta:
        ref_name = "PromotionGateRun"

    def get_attribute(self, status_: GateStatus) -> GateStatus | None:
        # The whole status (figures beside the run), or null when no run was judged.
        return status_ if status_.run is not None else None


class GateStatusSerializer(serializers.Serializer):
    gate = GateOutputSerializer()
    passed = serializers.BooleanField()
    checks = GateCheckSerializer(source="verdicts", many=True)
    run = GateRunSerializer(
        source="*", allow_null=True, help_text="The gate run judged; null: none yet."
    )
    failed_must_pass = serializers.ListField(child=serializers.CharField())
    regressed_must_pass = serializers.ListField(
        child=serializers.CharField(),
        help_text="The failing must-pass cases that passed in the stable version's run.",
    )

    class Meta:
        ref_name = "PromotionGateStatus"


class VersionGatesSerializer(serializers.Serializer):
    prompt = serializers.CharField()
    version = serializers.IntegerField()
    environment = serializers.CharField()
    passed = serializers.BooleanField(help_text="Whether every applicable gate passes.")
    gates = GateStatusSerializer(many=True)

    class Meta:
        ref_name = "VersionGates"


class VersionGateStatusApi(APIView):
    """``GET /prompts/{key}/versions/{n}/gates?environment=``: what would block the version there."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    class QuerySerializer(serializers.Serializer):
        environment = serializers.RegexField(ENVIRONMENT_PATTERN, max_length=ENVIRONMENT_MAX_CHARS)

    @extend_schema(
        operation_id="versions_gates",
        parameters=[
            OpenApiParameter(
                "environment",
                {
                    "type": "string",
                    "pattern": ENVIRONMENT_PATTERN,
                    "maxLength": ENVIRONMENT_MAX_CHARS,
                },
                required=True,
                description="e.g. production.",
            )
        ],
        responses=VersionGatesSerializer,
    )
    def get(self, request: Request, key: str, number: int) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        environment = query.validated_data["environment"]
        ensure_environment_allowed(request, environment)
        prompt = prompt_get(key=key)
        statuses = version_gate_status(
            prompt=prompt, version=number, environment=environment_get(name=environment)
        )
        body = {
            "prompt": prompt.key,
            "version": number,
            "environment": environment,
            "passed": all(s.passed for s in statuses),
            "gates": statuses,
        }
        return Response(VersionGatesSerializer(body).data)
