"""Scheduled changes over the API (decision 0049): read a release's schedule, schedule changes
(a deploy at a time, a canary's ramp), cancel it.

``GET .../schedule`` needs ``prompts:read``; scheduling and cancelling need ``releases:write``.
Keys limited to environments reach only those. Beat applies each step when it is due
(``releases.services.schedule``); each applied step is a ``release.changed`` by
``schedule #<id> (by <who>)``, and a skipped one a ``schedule.step_skipped``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from releases.errors import ScheduleEnded
from releases.models import ReleaseEvent, Schedule, ScheduledStep
from releases.selectors import schedule_by_id, schedule_shown
from releases.services import PlannedStep, schedule_cancel, schedule_create
from releases.services.schedule import SCHEDULABLE, STEPS_MAX, planned_step, steps_text

from .models import Scope
from .permissions import HasScope, scope_by_method
from .releases import IF_MATCH, _target, if_match_revision
from .serializers import PercentField, StrictBooleanField, StrictCharField, StrictIntegerField

Action = ReleaseEvent.Action
ARGUMENTS = {action: takes for action, (_, takes) in SCHEDULABLE.items()}


class StepInputSerializer(serializers.Serializer):
    at = serializers.DateTimeField(
        help_text="When it is due: RFC 3339 with an offset, in the future, later than the step "
        "before."
    )
    action = serializers.ChoiceField(
        choices=[(str(a), Action(a).label) for a in ARGUMENTS],
        help_text="deploy (version), canary_start (version, percent), canary_percent (percent), "
        "canary_promote, canary_abort; override_gates on deploy, canary_start and "
        "canary_promote.",
    )
    version = StrictIntegerField(required=False, allow_null=True, default=None, min_value=1)
    percent = PercentField(required=False, allow_null=True, default=None)
    override_gates = StrictBooleanField(
        required=False,
        default=False,
        help_text="Apply even if promotion gates fail when the step is due; needs the "
        "schedule's reason.",
    )

    class Meta:
        ref_name = "ScheduledStepInput"

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        takes = ARGUMENTS[attrs["action"]]
        errors = {}
        for name in ("version", "percent"):
            if name in takes and attrs.get(name) is None:
                errors[name] = [f"{attrs['action']} needs a {name}."]
            elif name not in takes and attrs.get(name) is not None:
                errors[name] = [f"{attrs['action']} takes no {name}."]
        if attrs.get("override_gates") and "override_gates" not in takes:
            errors["override_gates"] = [f"{attrs['action']} meets no promotion gate."]
        if errors:
            raise serializers.ValidationError(errors, code="arguments_of_action")
        return attrs


def planned(step: dict[str, Any]) -> PlannedStep:
    """A validated step as the service takes it."""
    return planned_step(**step)


class ScheduleOutputSerializer(serializers.Serializer):
    """A release's schedule: its steps, each with its state, and how the schedule ended."""

    class StepSerializer(serializers.Serializer):
        position = serializers.IntegerField(help_text="From 1.")
        at = serializers.DateTimeField()
        action = serializers.CharField(source="change.action")
        version = serializers.SerializerMethodField()
        percent = serializers.SerializerMethodField()
        override_gates = serializers.SerializerMethodField()
        state = serializers.ChoiceField(choices=ScheduledStep.State.choices)
        outcome = serializers.CharField(help_text="Why it was skipped or cancelled.")
        release_event = serializers.IntegerField(
            source="release_event_id",
            allow_null=True,
            help_text="The release history's event it wrote, once applied.",
        )
        settled_at = serializers.DateTimeField(allow_null=True)

        class Meta:
            ref_name = "ScheduledStep"

        def get_version(self, step: ScheduledStep) -> int | None:
            return step.change["arguments"].get("version")

        def get_percent(self, step: ScheduledStep) -> float | None:
            percent = step.change["arguments"].get("percent")
            return None if percent is None else float(percent)

        def get_override_gates(self, step: ScheduledStep) -> bool:
            return bool(step.change["arguments"].get("override_gates", False))

    id = serializers.IntegerField()
    prompt = serializers.CharField(source="prompt.key")
    environment = serializers.CharField(source="environment.name")
    state = serializers.ChoiceField(choices=Schedule.State.choices)
    summary = serializers.SerializerMethodField(
        help_text="The pending steps in words: “25 % at 2026-03-02 14:00 UTC, then promote at "
        "18:00”; empty once it has ended."
    )
    revision = serializers.IntegerField(
        help_text="The release revision the next step expects: a release moved meanwhile "
        "skips the step and stops the schedule."
    )
    reason = serializers.CharField()
    created_by = serializers.CharField(source="created_by_label")
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    ended_by = serializers.CharField(
        source="ended_by_label", help_text="Who cancelled it; empty otherwise."
    )
    end_reason = serializers.CharField(help_text="Why it ended: who cancelled, which step skipped.")
    steps = StepSerializer(many=True)

    class Meta:
        ref_name = "Schedule"

    def get_summary(self, schedule: Schedule) -> str:
        pending = [s for s in schedule.steps.all() if s.state == ScheduledStep.State.PENDING]
        return steps_text(pending)


def _schedule_response(schedule: Schedule, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(ScheduleOutputSerializer(schedule).data, status=status_code)


class _Reason(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)


class ScheduleApi(APIView):
    """``GET``: the release's active schedule, else its latest; ``POST``: schedule changes."""

    class InputSerializer(_Reason):
        steps = serializers.ListField(
            child=StepInputSerializer(), min_length=1, max_length=STEPS_MAX
        )

        class Meta:
            ref_name = "ScheduleInput"

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.RELEASES_WRITE)

    @extend_schema(operation_id="releases_schedule", responses=ScheduleOutputSerializer)
    def get(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        return _schedule_response(schedule_shown(prompt=prompt, environment=env))

    @extend_schema(
        operation_id="releases_schedule_create",
        request=InputSerializer,
        responses={201: ScheduleOutputSerializer},
        parameters=[IF_MATCH],
    )
    def post(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        schedule = schedule_create(
            prompt=prompt,
            environment=env,
            steps=[planned(step) for step in data.validated_data["steps"]],
            actor=request.user.actor,
            reason=data.validated_data["reason"],
            expected_revision=if_match_revision(request),
        )
        return _schedule_response(schedule_by_id(schedule_id=schedule.pk), status.HTTP_201_CREATED)


class ScheduleCancelApi(APIView):
    """Cancels the release's active schedule: its pending steps are never applied."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]

    class InputSerializer(_Reason):
        class Meta:
            ref_name = "ScheduleCancelInput"

    @extend_schema(
        operation_id="releases_schedule_cancel",
        request=InputSerializer,
        responses=ScheduleOutputSerializer,
    )
    def post(self, request: Request, environment: str, key: str) -> Response:
        prompt, env = _target(request, environment, key)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        shown = schedule_shown(prompt=prompt, environment=env)
        if shown.state != Schedule.State.ACTIVE:
            raise ScheduleEnded(
                f"The release has no active schedule: #{shown.pk} has ended "
                f"({shown.get_state_display().lower()})."
            )
        schedule_cancel(
            schedule_id=shown.pk, actor=request.user.actor, reason=data.validated_data["reason"]
        )
        return _schedule_response(schedule_by_id(schedule_id=shown.pk))
