"""Prompts: list, create, read, update (the authoring path, STYLE R11)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.selectors import prompt_get, prompt_list
from registry.services import prompt_create, prompt_update

from .authentication import KeyPrincipal
from .models import Scope
from .pagination import Pagination
from .permissions import HasScope


class PromptOutputSerializer(serializers.Serializer):
    key = serializers.CharField()
    description = serializers.CharField()
    default_locale = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    latest_version = serializers.IntegerField(allow_null=True, source="latest_number")
    draft_version = serializers.IntegerField(allow_null=True, source="draft_number")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _annotated(key: str):
    return prompt_list().get(pk=prompt_get(key=key).pk)


class PromptCollectionApi(APIView):
    """``GET /prompts`` lists prompts; ``POST /prompts`` creates one."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PromptCreateInput"

        key = serializers.CharField(max_length=150)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        default_locale = serializers.CharField(required=False, default="en", max_length=35)
        tags = serializers.ListField(child=serializers.CharField(), required=False, default=list)

    def get_permissions(self):
        scope = Scope.PROMPTS_READ if self.request.method == "GET" else Scope.PROMPTS_WRITE
        return [HasScope(scope)()]

    @extend_schema(
        operation_id="prompts_list",
        parameters=[
            OpenApiParameter("search", str, description="Part of the key or description."),
            OpenApiParameter("tag", str, description="Only prompts with this tag."),
        ],
        responses=PromptOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        prompts = prompt_list(
            search=request.query_params.get("search", ""), tag=request.query_params.get("tag", "")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(prompts, request, view=self)
        return paginator.get_paginated_response(PromptOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="prompts_create",
        request=InputSerializer,
        responses={201: PromptOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        principal: KeyPrincipal = request.user
        prompt = prompt_create(actor=principal.actor, **data.validated_data)
        return Response(
            PromptOutputSerializer(_annotated(prompt.key)).data, status=status.HTTP_201_CREATED
        )


class PromptDetailApi(APIView):
    """``GET /prompts/{key}`` reads a prompt; ``PATCH`` changes its description and tags."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PromptUpdateInput"

        description = serializers.CharField(required=False, allow_blank=True)
        tags = serializers.ListField(child=serializers.CharField(), required=False)

    def get_permissions(self):
        scope = Scope.PROMPTS_READ if self.request.method == "GET" else Scope.PROMPTS_WRITE
        return [HasScope(scope)()]

    @extend_schema(operation_id="prompts_retrieve", responses=PromptOutputSerializer)
    def get(self, request: Request, key: str) -> Response:
        return Response(PromptOutputSerializer(_annotated(key)).data)

    @extend_schema(
        operation_id="prompts_update", request=InputSerializer, responses=PromptOutputSerializer
    )
    def patch(self, request: Request, key: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        prompt_update(prompt=prompt_get(key=key), actor=request.user.actor, **data.validated_data)
        return Response(PromptOutputSerializer(_annotated(key)).data)
