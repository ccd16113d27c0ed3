"""``POST /events``: outcomes reported by services that call the model themselves (scope
``events:write``).

The service (``runs.events.events_ingest``) checks every event on its own and stores the valid
ones; this view only shapes the answer: 202 with what became of each event, or, when not one event
was valid, a 400 validation problem listing them all. A batch over ``MAX_EVENTS`` answers 413
``too-many-events`` (through ``api.problems``) and stores nothing.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.calls import SUBJECT_MAX_CHARS, KeyRef
from runs.events import (
    COST_PLACES,
    MAX_COST,
    MAX_EVENTS,
    MAX_INTEGER,
    IngestResult,
    events_ingest,
)
from runs.models import Call

from .models import Scope
from .permissions import HasScope
from .problems import VALIDATION, ProblemException
from .serializers import (
    ENVIRONMENT_MAX_CHARS,
    ENVIRONMENT_PATTERN,
    ID_PATTERN,
    KEY_MAX_CHARS,
    KEY_PATTERN,
    LOCALE_MAX_CHARS,
    LOCALE_PATTERN,
    StrictCharField,
)

# Events are not parsed with this serializer, it only documents them: ``events_ingest`` checks
# each event and rejects it alone, where a serializer would refuse the whole batch for one bad event.
# So the schema here says what runs.events' field rules refuse, field by field (the bounds are
# theirs: tests/api/test_events_schema.py sends each refusal and validates it against the schema).
_OPTIONAL = {"required": False, "allow_null": True}


class EventSerializer(serializers.Serializer):
    """One outcome. Fields other than these are refused; null is the same as leaving a field out."""

    event_id = StrictCharField(
        max_length=100,
        trim_whitespace=False,
        pattern=ID_PATTERN,
        help_text="Your id for this outcome: a retry with the same id is ignored. No control or "
        "invisible characters, not only spaces.",
    )
    prompt = StrictCharField(
        max_length=KEY_MAX_CHARS, pattern=KEY_PATTERN, help_text="The prompt's key."
    )
    version = serializers.IntegerField(
        min_value=1, max_value=MAX_INTEGER, help_text="A committed version's number."
    )
    environment = StrictCharField(max_length=ENVIRONMENT_MAX_CHARS, pattern=ENVIRONMENT_PATTERN)
    status = serializers.ChoiceField(choices=Call.Status.choices)
    occurred_at = serializers.DateTimeField(
        **_OPTIONAL,
        help_text="RFC 3339 with an offset; at most 5 minutes ahead, no older than the retention."
        " Default: when the event arrives.",
    )
    variant = serializers.CharField(
        **_OPTIONAL,
        allow_blank=True,
        max_length=64,
        help_text="stable, canary or the experiment variant.",
    )
    sticky = serializers.BooleanField(
        **_OPTIONAL, help_text="What resolve answered; default: whether a subject is sent."
    )
    subject = serializers.CharField(
        **_OPTIONAL,
        allow_blank=True,
        max_length=SUBJECT_MAX_CHARS,
        help_text="Stored only as a keyed hash.",
    )
    locale = StrictCharField(
        **_OPTIONAL, max_length=LOCALE_MAX_CHARS, pattern=LOCALE_PATTERN, help_text="BCP 47."
    )
    request_id = serializers.CharField(
        **_OPTIONAL, allow_blank=True, max_length=100, help_text="Default: the event id."
    )
    release_revision = serializers.IntegerField(
        **_OPTIONAL, min_value=0, max_value=MAX_INTEGER, help_text="The revision resolve answered."
    )
    provider = serializers.CharField(**_OPTIONAL, allow_blank=True, max_length=63)
    model = serializers.CharField(**_OPTIONAL, allow_blank=True, max_length=200)
    latency_ms = serializers.FloatField(**_OPTIONAL, min_value=0)
    time_to_first_token_ms = serializers.FloatField(**_OPTIONAL, min_value=0)
    input_tokens = serializers.IntegerField(**_OPTIONAL, min_value=0, max_value=MAX_INTEGER)
    output_tokens = serializers.IntegerField(**_OPTIONAL, min_value=0, max_value=MAX_INTEGER)
    cost = serializers.FloatField(
        **_OPTIONAL,
        min_value=0,
        # The column holds DECIMAL(14, 8): below a million, to the hundred-millionth.
        max_value=float(MAX_COST - COST_PLACES),
        help_text="Default: from the tokens and the model's price, when it has one.",
    )
    error_class = serializers.CharField(**_OPTIONAL, allow_blank=True, max_length=100)
    feedback = serializers.FloatField(
        **_OPTIONAL, min_value=-1, max_value=1, help_text="-1 (bad) to 1 (good)."
    )
    schema_valid = serializers.BooleanField(**_OPTIONAL)
    inputs = serializers.DictField(**_OPTIONAL, help_text="The variables; stored redacted.")
    output = serializers.CharField(
        **_OPTIONAL, allow_blank=True, help_text="The answer; stored redacted."
    )

    class Meta:
        ref_name = "Event"


class EventSerializerSchema(OpenApiSerializerExtension):
    """``additionalProperties: false``: ``events_ingest`` refuses any other field
    (``unknown_field``), and the schema says so."""

    target_class = EventSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        return {**schema, "additionalProperties": False}


class EventBatchSerializer(serializers.Serializer):
    events = serializers.ListField(child=EventSerializer(), min_length=1, max_length=MAX_EVENTS)

    class Meta:
        ref_name = "EventBatch"


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    pointer = serializers.CharField(help_text="A JSON Pointer into the body: /events/3/latency_ms")

    class Meta:
        ref_name = "EventError"


# Reads a ``RejectedEvent``: the answer's ``rejected`` and the 400 problem's.
class RejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    event_id = serializers.CharField(allow_null=True)
    errors = ErrorSerializer(source="problems", many=True)

    class Meta:
        ref_name = "RejectedEvent"


class EventBatchApi(APIView):
    """Reports up to 1,000 outcomes of calls a service made itself. Each event is checked on its
    own: the valid ones are stored and the answer (202) lists the rejected ones with their errors;
    when none is valid the answer is a 400 validation problem and nothing is stored. Idempotent by
    ``event_id``: an id stored before (or earlier in the batch) is listed in ``duplicates``. Every
    stored call keeps the key that reported it; a canary analysis counts it only if its policy
    trusts that key (``sources``)."""

    permission_classes = [HasScope(Scope.EVENTS_WRITE)]

    class InputSerializer(serializers.Serializer):
        # The list only: its items are the service's to check, one by one (see EventSerializer).
        events = serializers.ListField(allow_empty=False)

        class Meta:
            ref_name = "EventBatchInput"

    class OutputSerializer(serializers.Serializer):
        accepted = serializers.IntegerField(help_text="How many events this batch stored.")
        duplicates = serializers.ListField(
            child=serializers.CharField(),
            help_text="Ids stored before, or sent earlier in this batch: not stored again.",
        )
        rejected = RejectedSerializer(many=True)

        class Meta:
            ref_name = "EventBatchResult"

    @extend_schema(
        operation_id="events_create",
        request=EventBatchSerializer,
        responses={
            202: OutputSerializer,
            400: OpenApiResponse(
                description="Not one event is valid (validation-error: `errors` and `rejected`)."
            ),
            413: OpenApiResponse(
                description=f"More than {MAX_EVENTS} events (too-many-events), or a body over "
                "DATA_UPLOAD_MAX_MEMORY_SIZE (request-too-large); nothing is stored."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        environments = request.auth.environments
        result = events_ingest(
            events=data.validated_data["events"],
            allowed_environments=environments or None,
            key=KeyRef(id=request.auth.pk, label=request.auth.name),
        )
        if result.rejected and not result.accepted and not result.duplicates:
            raise _all_rejected(result)
        return Response(
            {
                "accepted": len(result.accepted),
                "duplicates": list(result.duplicates),
                "rejected": RejectedSerializer(result.rejected, many=True).data,
            },
            status=status.HTTP_202_ACCEPTED,
        )


def _all_rejected(result: IngestResult) -> ProblemException:
    return ProblemException(
        VALIDATION,
        "No event in the batch is valid; see errors.",
        errors=[problem.as_dict() for r in result.rejected for problem in r.problems],
        rejected=RejectedSerializer(result.rejected, many=True).data,
    )
