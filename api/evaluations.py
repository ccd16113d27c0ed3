"""Eval runs over the API: start one (202, it runs in the background), list, read, cancel.

A run's representation carries its progress and pass rate, and the baseline's (the stable
version's run over the same cases) with the difference in percentage points; reading one run
adds the report so far: each case classified (regressed, fixed, ...), must-pass failures first.
Holdout cases (gate runs) count in every figure but their output and detail are never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluations.evalruns.report import (
    CaseChange,
    EvalReport,
    RunSummary,
    eval_run_report,
    eval_run_summary,
)
from evaluations.evalruns.services import (
    eval_run_cancel,
    eval_run_get,
    eval_run_list,
    eval_run_start,
)
from evaluations.models import EvalRun
from registry.actors import Actor
from registry.selectors import prompt_get

from .models import ApiKey, Scope
from .pagination import Pagination
from .permissions import HasScope, key_environment_check
from .problems import INSUFFICIENT_SCOPE, ProblemException
from .serializers import (
    DATASET_MAX_CHARS,
    DATASET_PATTERN,
    ENVIRONMENT_MAX_CHARS,
    ENVIRONMENT_PATTERN,
    StrictBooleanField,
    StrictCharField,
)


@dataclass(frozen=True, slots=True)
class _BaselineShown:
    run: EvalRun
    pass_rate: float | None


@dataclass(frozen=True, slots=True)
class _RunShown:
    """What a run answer shows: the run (from ``eval_run_list``/``eval_run_get``, annotated with
    its counts), its figures, and its baseline's."""

    run: EvalRun
    summary: RunSummary
    baseline: _BaselineShown | None

    @classmethod
    def of(cls, run: EvalRun) -> _RunShown:
        summary = eval_run_summary(run)
        baseline = run.baseline
        return cls(
            run=run,
            summary=summary,
            baseline=None
            if baseline is None
            else _BaselineShown(run=baseline, pass_rate=summary.baseline_pass_rate),
        )

    @property
    def report(self) -> EvalReport:
        """The report so far (read by the detail answer only)."""
        return eval_run_report(self.run)


class BaselineSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="run.pk")
    version = serializers.IntegerField(source="run.version.number")
    status = serializers.ChoiceField(source="run.status", choices=EvalRun.Status.choices)
    pass_rate = serializers.FloatField(allow_null=True, help_text="Percent of scored cases.")

    class Meta:
        ref_name = "EvalRunBaseline"


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField(help_text="Cases scored so far.")
    total = serializers.IntegerField()
    percent = serializers.FloatField(source="percent_done")

    class Meta:
        ref_name = "EvalRunProgress"


class _RunUrlField(serializers.CharField):
    """The run's page: where a person follows it."""

    def to_representation(self, run: EvalRun) -> str:
        return reverse("evaluation", args=[run.pk])


class _DatasetChangedField(serializers.BooleanField):
    def to_representation(self, run: EvalRun) -> bool:
        return run.dataset_updated_at != run.dataset.updated_at


# Every run answer is ``EvalRunSerializer(run)`` (``EvalRunDetailSerializer`` with its report):
# the fields below are both the answer and its schema.
class EvalRunSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="run.pk")
    url = _RunUrlField(source="run")
    prompt = serializers.CharField(source="run.prompt.key")
    version = serializers.IntegerField(source="run.version.number")
    dataset = serializers.CharField(source="run.dataset.name")
    include_holdout = serializers.BooleanField(
        source="run.include_holdout", help_text="A gate run: holdout cases scored too."
    )
    environment = serializers.CharField(
        source="run.environment.name",
        allow_null=True,
        help_text="Whose stable version is the baseline.",
    )
    status = serializers.ChoiceField(source="run.status", choices=EvalRun.Status.choices)
    progress = ProgressSerializer(source="summary")
    pass_rate = serializers.FloatField(
        source="summary.pass_rate",
        allow_null=True,
        help_text="Percent of the cases scored so far that passed.",
    )
    baseline = BaselineSerializer(allow_null=True)
    delta_points = serializers.FloatField(
        source="summary.delta_points",
        allow_null=True,
        help_text="pass_rate minus the baseline's, in percentage points.",
    )
    dataset_updated_at = serializers.DateTimeField(source="run.dataset_updated_at", allow_null=True)
    dataset_changed = _DatasetChangedField(
        source="run", help_text="The dataset was imported into since the run read it."
    )
    created_by = serializers.CharField(source="run.created_by_label")
    created_at = serializers.DateTimeField(source="run.created_at")
    started_at = serializers.DateTimeField(source="run.started_at", allow_null=True)
    finished_at = serializers.DateTimeField(source="run.finished_at", allow_null=True)

    class Meta:
        ref_name = "EvalRun"

    def to_representation(self, run: EvalRun) -> dict[str, Any]:
        return super().to_representation(_RunShown.of(run))


class CaseRowSerializer(serializers.Serializer):
    key = serializers.CharField()
    change = serializers.ChoiceField(choices=[(c.value, c.value) for c in CaseChange])
    passed = serializers.BooleanField()
    baseline_passed = serializers.BooleanField(allow_null=True)
    must_pass = serializers.BooleanField()
    holdout = serializers.BooleanField()
    score = serializers.FloatField(allow_null=True)
    error_class = serializers.CharField(allow_blank=True)
    latency_ms = serializers.FloatField(allow_null=True)
    input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    cost = serializers.DecimalField(max_digits=14, decimal_places=8, allow_null=True)
    detail = serializers.CharField(allow_null=True, help_text="null for a holdout case.")
    output = serializers.CharField(allow_null=True, help_text="null for a holdout case.")
    variables = serializers.DictField(allow_null=True, help_text="null for a holdout case.")
    guardrails = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        allow_null=True,
        help_text="The guardrail checks that fired on the case, each {stage, check, action, "
        "source, detail}; null for a holdout case.",
    )

    class Meta:
        ref_name = "EvalCaseRow"


class TotalsSerializer(serializers.Serializer):
    cost = serializers.DecimalField(max_digits=20, decimal_places=8, allow_null=True)
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "EvalRunTotals"


class ReportSerializer(serializers.Serializer):
    must_pass_failed = serializers.IntegerField()
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="Cases per change (regressed, fixed, ...)."
    )
    totals = TotalsSerializer()
    cases = CaseRowSerializer(
        source="rows", many=True, help_text="Must-pass failures first, then regressions."
    )

    class Meta:
        ref_name = "EvalRunReport"


class EvalRunDetailSerializer(EvalRunSerializer):
    report = ReportSerializer()

    class Meta:
        ref_name = "EvalRunDetail"


def _detail_response(run_id: int, status_code: int = status.HTTP_200_OK) -> Response:
    run = eval_run_get(run_id=run_id)
    return Response(EvalRunDetailSerializer(run).data, status=status_code)


class EvalRunStartApi(APIView):
    """``POST /prompts/{key}/versions/{n}/evaluations``: queue a run; 202 with its address."""

    permission_classes = [HasScope(Scope.PROMPTS_WRITE)]

    class InputSerializer(serializers.Serializer):
        dataset = StrictCharField(
            max_length=DATASET_MAX_CHARS,
            pattern=DATASET_PATTERN,
            help_text="The dataset's name, e.g. golden.",
        )
        environment = StrictCharField(
            required=False,
            allow_null=True,
            default=None,
            max_length=ENVIRONMENT_MAX_CHARS,
            pattern=ENVIRONMENT_PATTERN,
            help_text="Whose stable version to compare with; default: EVAL_BASELINE_ENVIRONMENT "
            "(production), else the highest environment that has a stable version.",
        )
        include_holdout = StrictBooleanField(
            required=False,
            default=False,
            help_text="A gate run: score the frozen holdout cases too (needs releases:write). "
            "Gates count a gate run only if it started after the version was committed.",
        )

        class Meta:
            ref_name = "EvalRunStartInput"

    @extend_schema(
        operation_id="evaluations_start",
        request=InputSerializer,
        responses={202: EvalRunDetailSerializer},
    )
    def post(self, request: Request, key: str, number: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = eval_run_start_for(
            request.auth, actor=request.user.actor, key=key, number=number, **data.validated_data
        )
        response = _detail_response(run.pk, status.HTTP_202_ACCEPTED)
        response["Location"] = reverse("evaluation", args=[run.pk])
        return response


def eval_run_start_for(
    api_key: ApiKey,
    *,
    actor: Actor,
    key: str,
    number: int,
    dataset: str,
    environment: str | None,
    include_holdout: bool,
) -> EvalRun:
    """Starts a run for ``api_key`` (``EvalRunStartApi`` and the MCP server's
    ``start_eval_run``): a gate run needs ``releases:write`` too, and a baseline environment
    the key may touch."""
    if include_holdout and not api_key.has_scope(Scope.RELEASES_WRITE):
        # A gate run is what lets a version through a gate: release automation starts it.
        raise ProblemException(
            INSUFFICIENT_SCOPE,
            "A gate run (include_holdout) needs the releases:write scope too.",
            required_scope=str(Scope.RELEASES_WRITE),
        )
    if environment:
        key_environment_check(api_key, environment)
    return eval_run_start(
        prompt=prompt_get(key=key),
        version=number,
        dataset_name=dataset,
        actor=actor,
        include_holdout=include_holdout,
        environment=environment,
    )


class EvalRunListApi(APIView):
    """``GET /prompts/{key}/evaluations``: the prompt's runs, newest first, paginated."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]
    pagination_class = Pagination

    @extend_schema(operation_id="evaluations_list", responses=EvalRunSerializer(many=True))
    def get(self, request: Request, key: str) -> Response:
        runs = eval_run_list(prompt=prompt_get(key=key))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(EvalRunSerializer(page, many=True).data)


class EvalRunDetailApi(APIView):
    """``GET /evaluations/{id}``: status, progress and the report so far."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    @extend_schema(operation_id="evaluations_retrieve", responses=EvalRunDetailSerializer)
    def get(self, request: Request, run_id: int) -> Response:
        return _detail_response(run_id)


class EvalRunCancelApi(APIView):
    """``POST /evaluations/{id}/cancel``: stop a queued or running run."""

    permission_classes = [HasScope(Scope.PROMPTS_WRITE)]

    @extend_schema(operation_id="evaluations_cancel", request=None, responses=EvalRunSerializer)
    def post(self, request: Request, run_id: int) -> Response:
        eval_run_cancel(run=eval_run_get(run_id=run_id), actor=request.user.actor)
        return Response(EvalRunSerializer(eval_run_get(run_id=run_id)).data)
