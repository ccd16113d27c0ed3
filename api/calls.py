"""``POST /calls/{request_id}/feedback``: the user's verdict on a call the registry ran, sent after
the answer (scope ``events:write``). Services that call the model themselves send feedback with
their outcome events instead."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.calls import KeyRef
from runs.services import call_feedback_set

from .models import Scope
from .permissions import HasScope, request_key
from .serializers import StrictFloatField


class CallFeedbackApi(APIView):
    permission_classes = [HasScope(Scope.EVENTS_WRITE)]

    class InputSerializer(serializers.Serializer):
        feedback = StrictFloatField(
            min_value=-1, max_value=1, help_text="-1 (bad) to 1 (good); replaces an earlier one."
        )

        class Meta:
            ref_name = "CallFeedbackInput"

    class OutputSerializer(serializers.Serializer):
        request_id = serializers.CharField()
        prompt = serializers.CharField(source="prompt.key")
        version = serializers.IntegerField(source="version.number")
        environment = serializers.CharField(source="environment.name")
        variant = serializers.CharField()
        feedback = serializers.FloatField()

        class Meta:
            ref_name = "CallFeedback"

    @extend_schema(
        operation_id="calls_feedback",
        request=InputSerializer,
        responses={200: OutputSerializer},
        tags=["runtime"],
    )
    def post(self, request: Request, request_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = request_key(request)
        call = call_feedback_set(
            request_id=request_id,
            feedback=data.validated_data["feedback"],
            environments=key.environments,
            key=KeyRef(id=key.pk, label=key.name),
        )
        return Response(self.OutputSerializer(call).data)
