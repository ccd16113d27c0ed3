from __future__ import annotations

from django.contrib import admin

from .models import ModelPrice, Provider
from .services import provider_save


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "base_url", "api_key_env", "timeout_seconds", "max_retries", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "base_url"]
    inlines = [ModelPriceInline]
    fieldsets = [
        (None, {"fields": ["name", "base_url", "enabled"]}),
        (
            "Credentials and limits",
            {
                "fields": ["api_key_env", "timeout_seconds", "max_retries"],
                "description": "The key itself stays in the server's environment, never here.",
            },
        ),
    ]

    def save_model(self, request, obj: Provider, form, change: bool) -> None:
        # Through the service like every other writer (the form has validated the fields).
        saved, _ = provider_save(
            name=obj.name,
            base_url=obj.base_url,
            api_key_env=obj.api_key_env,
            timeout_seconds=obj.timeout_seconds,
            max_retries=obj.max_retries,
            enabled=obj.enabled,
        )
        obj.pk = saved.pk
