"""OpenAPI pieces drf-spectacular cannot infer: how API keys are sent."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py apikey create`, sent as "
            "`Authorization: Bearer pr_…`. Keys carry scopes and may be limited to environments.",
        }
