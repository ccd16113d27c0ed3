"""The admin for promotion gates per environment (STYLE R13): the list by environment with its
filters, and the add and change pages. Writes go through ``evaluations.gates.services``,
so the admin refuses what the API refuses, in the same words.

Release managers set their environments' gates; prompt authors may read them (migration 0004).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from registry.actors import Actor
from registry.admin.errors import ServiceErrorsAsMessages

from ..gates.services import promotion_gate_create, promotion_gate_delete, promotion_gate_list
from ..gates.services import promotion_gate_update as gate_update
from ..models import PromotionGate


class PromotionGateForm(forms.ModelForm):
    class Meta:
        model = PromotionGate
        fields = [
            "environment",
            "prompt",
            "dataset_name",
            "min_pass_rate",
            "must_pass_cases",
            "enabled",
        ]
        help_texts = {
            "dataset_name": "The dataset's name, e.g. golden.",
            "min_pass_rate": "Percent of the gate run's cases that must pass, 0–100.",
        }


@admin.register(PromotionGate)
class PromotionGateAdmin(ServiceErrorsAsMessages, admin.ModelAdmin):
    form = PromotionGateForm
    list_display = [
        "dataset_name",
        "environment",
        "applies_to",
        "min_pass_rate_shown",
        "must_pass_cases",
        "enabled",
        "updated_at",
    ]
    list_select_related = ["environment", "prompt"]
    list_filter = [
        "environment",
        "enabled",
        "must_pass_cases",
        ("prompt", admin.EmptyFieldListFilter),
    ]
    search_fields = ["dataset_name", "prompt__key"]
    autocomplete_fields = ["prompt"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PromotionGate]:
        qs = promotion_gate_list()
        ordering = self.get_ordering(request)
        return qs.order_by(*ordering) if ordering else qs

    @admin.display(description="Applies to", ordering="prompt__key")
    def applies_to(self, gate: PromotionGate) -> str:
        return gate.prompt.key if gate.prompt_id else "every prompt with this dataset"

    @admin.display(description="Minimum pass rate", ordering="min_pass_rate")
    def min_pass_rate_shown(self, gate: PromotionGate) -> str:
        return f"{gate.min_pass_rate.normalize():f} %"

    def save_model(
        self, request: HttpRequest, obj: PromotionGate, form: forms.Form, change: bool
    ) -> None:
        data = form.cleaned_data
        actor = Actor.for_user(request.user)
        prompt_key = data["prompt"].key if data["prompt"] is not None else None
        if change:
            gate_update(
                gate=obj,
                actor=actor,
                dataset_name=data["dataset_name"],
                prompt_key=prompt_key,
                min_pass_rate=data["min_pass_rate"],
                must_pass_cases=data["must_pass_cases"],
                enabled=data["enabled"],
            )
            obj.refresh_from_db()
            return
        created = promotion_gate_create(
            environment=data["environment"],
            dataset_name=data["dataset_name"],
            min_pass_rate=data["min_pass_rate"],
            prompt_key=prompt_key,
            must_pass_cases=data["must_pass_cases"],
            enabled=data["enabled"],
            actor=actor,
        )
        # Django goes on with ``obj`` (log entry, redirect, message): make it the saved row.
        obj.pk = created.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def get_readonly_fields(self, request: HttpRequest, obj: PromotionGate | None = None) -> list:
        # A gate's environment is where it guards; another environment is another gate.
        return ["environment"] if obj is not None else []

    def delete_model(self, request: HttpRequest, obj: PromotionGate) -> None:
        promotion_gate_delete(gate=obj, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PromotionGate]) -> None:
        # "Delete selected" too goes through the service, one gate at a time (each is logged).
        for gate in queryset.select_related("environment", "prompt"):
            promotion_gate_delete(gate=gate, actor=Actor.for_user(request.user))
