"""Change requests (decision 0048): ``/api/v1/change-requests``.

A key with ``releases:write`` proposes a held change for an environment that requires review,
and applies it once approved (if it proposed it, or acts for a reviewer) or withdraws it (if it
proposed it). Reviews are by people: ``approve`` and ``reject`` take a key that acts for its
owner (``manage.py apikey create --owner``), who must be in the environment's review group and
not the proposer; the admin is the usual place. Listing and reading take ``prompts:read``. A key
limited to environments sees and touches requests in those only.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import (
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from releases.models import ChangeRequest, ChangeRequestReview, ReleaseEvent
from releases.selectors import change_request_conflicts, change_request_get, change_request_list
from releases.services.change_requests import (
    change_request_apply,
    change_request_propose,
    change_request_review,
    change_request_withdraw,
)
from releases.services.common import ReleaseChange
from releases.services.schedule import STEPS_MAX
from releases.services.stored import CHANGES, change_from_stored

from .models import Scope
from .pagination import Pagination
from .permissions import HasScope, key_environment_check, scope_by_method
from .releases import (
    IF_MATCH,
    ReleaseCanaryPercentApi,
    ReleaseCanaryPromoteApi,
    ReleaseDeployApi,
    ReleaseExperimentStartApi,
    ReleaseExperimentStopApi,
    ReleaseShadowStartApi,
    if_match_revision,
    release_target,
)
from .schedules import StepInputSerializer, planned
from .serializers import (
    ENVIRONMENT_MAX_CHARS,
    ENVIRONMENT_PATTERN,
    KEY_MAX_CHARS,
    KEY_PATTERN,
    PercentField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
)

Action = ReleaseEvent.Action
State = ChangeRequest.State

# --- answers --------------------------------------------------------------------------------------


class ChangeRequestReviewSerializer(serializers.Serializer):
    reviewer = serializers.CharField(source="reviewer_label")
    verdict = serializers.ChoiceField(choices=ChangeRequestReview.Verdict.choices)
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "ChangeRequestReview"


class ChangeRequestStepSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    action = serializers.CharField(help_text="A schedulable verb (POST …/schedule).")
    arguments = serializers.DictField(
        help_text="The verb's arguments, as its release endpoint takes them (percents as text)."
    )

    class Meta:
        ref_name = "ChangeRequestStep"


class ChangeRequestOutputSerializer(serializers.Serializer):
    """A change request: the change proposed, the release state it was proposed against and the
    state it would leave, its reviews, and what became of it."""

    id = serializers.IntegerField()
    prompt = serializers.CharField(source="prompt.key")
    environment = serializers.CharField(source="environment.name")
    action = serializers.ChoiceField(choices=Action.choices)
    arguments = serializers.SerializerMethodField(
        help_text="The verb's arguments, as its release endpoint takes them (percents as text)."
    )
    reason = serializers.CharField()
    proposed_by = serializers.CharField(source="proposed_by_label")
    proposed_revision = serializers.IntegerField(
        source="base_revision",
        help_text="The release revision it was proposed against; applying needs it unchanged.",
    )
    before = serializers.JSONField(help_text="The release state when proposed (as the history).")
    after = serializers.JSONField(
        help_text="The state it leaves; a new draw's salt is a placeholder until applied."
    )
    state = serializers.SerializerMethodField(
        help_text="open, approved, rejected, applied, withdrawn or expired (a request past "
        "expires_at reads expired at once)."
    )
    approvals = serializers.SerializerMethodField(help_text="Who approved it.")
    approvals_required = serializers.IntegerField(source="environment.approvals_required")
    reviews = ChangeRequestReviewSerializer(many=True, source="reviews.all")
    conflicts_with = serializers.SerializerMethodField(
        help_text="Other open or approved requests on the same release: applying one moves the "
        "release the others were proposed against."
    )
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    closed_by = serializers.CharField(
        source="closed_by_label", help_text="Who applied, rejected or withdrew it; empty before."
    )
    applied_at = serializers.DateTimeField(allow_null=True)
    release_event = serializers.IntegerField(
        source="release_event_id",
        allow_null=True,
        help_text="The release event that applied it (its history row).",
    )
    steps = serializers.SerializerMethodField(
        help_text="A proposed schedule's steps, in time order (action and arguments are the "
        "first's); empty for a single change."
    )
    schedule = serializers.IntegerField(
        source="schedule_id",
        allow_null=True,
        help_text="The schedule applying a proposed schedule made (GET …/schedule shows it).",
    )

    class Meta:
        ref_name = "ChangeRequest"

    def get_arguments(self, request: ChangeRequest) -> dict[str, Any]:
        return request.change.get("arguments", {})

    def get_state(self, request: ChangeRequest) -> str:
        return request.state_at(self.context["now"])

    def get_approvals(self, request: ChangeRequest) -> list[str]:
        return [
            r.reviewer_label
            for r in request.reviews.all()
            if r.verdict == ChangeRequestReview.Verdict.APPROVE
        ]

    @extend_schema_field(ChangeRequestStepSerializer(many=True))
    def get_steps(self, request: ChangeRequest) -> list[dict[str, Any]]:
        return ChangeRequestStepSerializer(
            [
                {"at": datetime.fromisoformat(step["at"]), **step["change"]}
                for step in request.steps
            ],
            many=True,
        ).data

    def get_conflicts_with(self, request: ChangeRequest) -> list[int]:
        return self.context["conflicts"].get(request.pk, [])


def _shown(requests: list[ChangeRequest], *, many: bool = False):
    now = timezone.now()
    context = {"now": now, "conflicts": change_request_conflicts(requests, now=now)}
    return ChangeRequestOutputSerializer(
        requests if many else requests[0], many=many, context=context
    )


def _answer(request: ChangeRequest, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(
        _shown([change_request_get(change_request_id=request.pk)]).data, status=status_code
    )


# --- proposing ------------------------------------------------------------------------------------


class _Target(serializers.Serializer):
    environment = StrictCharField(
        max_length=ENVIRONMENT_MAX_CHARS, pattern=ENVIRONMENT_PATTERN, help_text="e.g. production."
    )
    prompt = StrictCharField(max_length=KEY_MAX_CHARS, pattern=KEY_PATTERN, help_text="A key.")
    # Required, unlike a direct change's: reviewers decide on it.
    reason = StrictCharField(max_length=2000, help_text="Why: reviewers read it.")

    def change(self, data: dict[str, Any]) -> ReleaseChange | None:
        """The proposed verb, built as a stored change is read back (``releases.services.stored``):
        its own arguments, by the names its release endpoint takes them."""
        verb = CHANGES[str(data["action"])]
        arguments = {f.name: data[f.name] for f in dataclasses.fields(verb) if f.name in data}
        if "variants" in arguments:
            arguments["variants"] = [
                [v["name"], v["version"], v["percent"]] for v in arguments["variants"]
            ]
        return change_from_stored({"action": str(data["action"]), "arguments": arguments})


def _action(value: str) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=[value], help_text="The verb proposed.")


class ProposeDeploy(_Target, ReleaseDeployApi.InputSerializer):
    action = _action(Action.DEPLOY)

    class Meta:
        ref_name = "ChangeRequestDeploy"


class ProposeCanaryStart(_Target):
    # Without an analysis policy: a canary under analysis is proposed, then attached (0048).
    action = _action(Action.CANARY_START)
    version = StrictIntegerField(min_value=1)
    percent = PercentField()
    override_gates = StrictBooleanField(
        required=False,
        default=False,
        help_text="Release even if promotion gates fail; needs a reason, which the release "
        "history keeps with the gates overridden.",
    )

    class Meta:
        ref_name = "ChangeRequestCanaryStart"


class ProposeCanaryPercent(_Target, ReleaseCanaryPercentApi.InputSerializer):
    action = _action(Action.CANARY_PERCENT)

    class Meta:
        ref_name = "ChangeRequestCanaryPercent"


class ProposeCanaryPromote(_Target, ReleaseCanaryPromoteApi.InputSerializer):
    action = _action(Action.CANARY_PROMOTE)

    class Meta:
        ref_name = "ChangeRequestCanaryPromote"


class ProposeExperimentStart(_Target, ReleaseExperimentStartApi.InputSerializer):
    action = _action(Action.EXPERIMENT_START)

    class Meta:
        ref_name = "ChangeRequestExperimentStart"


class ProposeExperimentStop(_Target, ReleaseExperimentStopApi.InputSerializer):
    action = _action(Action.EXPERIMENT_STOP)

    class Meta:
        ref_name = "ChangeRequestExperimentStop"


class ProposeShadowStart(_Target, ReleaseShadowStartApi.InputSerializer):
    action = _action(Action.SHADOW_START)

    class Meta:
        ref_name = "ChangeRequestShadowStart"


class ProposeSchedule(_Target):
    """A schedule (decision 0049), reviewed as one: applying the approved request schedules it
    (``…/schedule``), and beat applies its steps."""

    action = serializers.ChoiceField(
        choices=["schedule"], help_text="A schedule of steps, as POST …/schedule takes them."
    )
    steps = serializers.ListField(child=StepInputSerializer(), min_length=1, max_length=STEPS_MAX)

    class Meta:
        ref_name = "ChangeRequestSchedule"

    def change(self, data: dict[str, Any]):
        return None

    def planned_steps(self, data: dict[str, Any]):
        return [planned(step) for step in data["steps"]]


PROPOSALS: dict[str, type[_Target]] = {
    str(Action.DEPLOY): ProposeDeploy,
    str(Action.CANARY_START): ProposeCanaryStart,
    str(Action.CANARY_PERCENT): ProposeCanaryPercent,
    str(Action.CANARY_PROMOTE): ProposeCanaryPromote,
    str(Action.EXPERIMENT_START): ProposeExperimentStart,
    str(Action.EXPERIMENT_STOP): ProposeExperimentStop,
    str(Action.SHADOW_START): ProposeShadowStart,
    "schedule": ProposeSchedule,
}
PROPOSAL = PolymorphicProxySerializer(
    component_name="ChangeRequestProposal",
    serializers=PROPOSALS,
    resource_type_field_name="action",
)


class _ActionOnly(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=list(PROPOSALS),
        help_text="A verb review holds (rollback, canary abort and shadow stop never wait), or "
        "schedule: steps, applied later by beat.",
    )


class ChangeRequestCollectionApi(APIView):
    """``GET /change-requests`` lists them (newest first); ``POST`` proposes one."""

    pagination_class = Pagination

    class QuerySerializer(serializers.Serializer):
        environment = serializers.RegexField(
            ENVIRONMENT_PATTERN, max_length=ENVIRONMENT_MAX_CHARS, required=False
        )
        prompt = serializers.RegexField(KEY_PATTERN, max_length=KEY_MAX_CHARS, required=False)
        state = serializers.ChoiceField(choices=State.choices, required=False)

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.RELEASES_WRITE)

    @extend_schema(
        operation_id="change_requests_list",
        parameters=[QuerySerializer],
        responses=ChangeRequestOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        requests = change_request_list(
            environments=request.auth.environments, **query.validated_data
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(requests, request, view=self)
        return paginator.get_paginated_response(_shown(list(page), many=True).data)

    @extend_schema(
        operation_id="change_requests_propose",
        request=PROPOSAL,
        parameters=[IF_MATCH],
        responses={201: ChangeRequestOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        action = _ActionOnly(data=request.data if isinstance(request.data, dict) else {})
        action.is_valid(raise_exception=True)
        proposal = PROPOSALS[action.validated_data["action"]](data=request.data)
        proposal.is_valid(raise_exception=True)
        data = proposal.validated_data
        prompt, environment = release_target(
            request.auth, environment=data["environment"], key=data["prompt"]
        )
        change_request = change_request_propose(
            prompt=prompt,
            environment=environment,
            change=proposal.change(data),
            steps=proposal.planned_steps(data) if isinstance(proposal, ProposeSchedule) else (),
            actor=request.user.actor,
            reason=data["reason"],
            expected_revision=if_match_revision(request),
        )
        return _answer(change_request, status.HTTP_201_CREATED)


def _request_of(request: Request, change_request_id: int) -> ChangeRequest:
    """The request, once the key may touch its environment."""
    change_request = change_request_get(change_request_id=change_request_id)
    key_environment_check(request.auth, change_request.environment.name)
    return change_request


class ChangeRequestDetailApi(APIView):
    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    @extend_schema(operation_id="change_requests_retrieve", responses=ChangeRequestOutputSerializer)
    def get(self, request: Request, change_request_id: int) -> Response:
        return _answer(_request_of(request, change_request_id))


class _Comment(serializers.Serializer):
    comment = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)

    class Meta:
        ref_name = "ChangeRequestCommentInput"


class ChangeRequestApproveApi(APIView):
    """A reviewer's approval (a key acting for its owner, who is in the review group)."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]
    verdict = ChangeRequestReview.Verdict.APPROVE

    @extend_schema(
        operation_id="change_requests_approve",
        request=_Comment,
        responses=ChangeRequestOutputSerializer,
    )
    def post(self, request: Request, change_request_id: int) -> Response:
        _request_of(request, change_request_id)
        data = _Comment(data=request.data)
        data.is_valid(raise_exception=True)
        reviewed = change_request_review(
            change_request_id=change_request_id,
            actor=request.user.actor,
            verdict=self.verdict,
            comment=data.validated_data["comment"],
        )
        return _answer(reviewed)


class ChangeRequestRejectApi(ChangeRequestApproveApi):
    verdict = ChangeRequestReview.Verdict.REJECT

    @extend_schema(
        operation_id="change_requests_reject",
        request=_Comment,
        responses=ChangeRequestOutputSerializer,
    )
    def post(self, request: Request, change_request_id: int) -> Response:
        return super().post(request, change_request_id)


class ChangeRequestApplyApi(APIView):
    """Applies an approved request: by its proposer or a reviewer."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]

    @extend_schema(
        operation_id="change_requests_apply", request=None, responses=ChangeRequestOutputSerializer
    )
    def post(self, request: Request, change_request_id: int) -> Response:
        _request_of(request, change_request_id)
        applied = change_request_apply(
            change_request_id=change_request_id, actor=request.user.actor
        )
        return _answer(applied)


class ChangeRequestWithdrawApi(APIView):
    """The proposer takes an open or approved request back."""

    permission_classes = [HasScope(Scope.RELEASES_WRITE)]

    @extend_schema(
        operation_id="change_requests_withdraw",
        request=_Comment,
        responses=ChangeRequestOutputSerializer,
    )
    def post(self, request: Request, change_request_id: int) -> Response:
        _request_of(request, change_request_id)
        data = _Comment(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawn = change_request_withdraw(
            change_request_id=change_request_id,
            actor=request.user.actor,
            reason=data.validated_data["comment"],
        )
        return _answer(withdrawn)
