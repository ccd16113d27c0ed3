from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API keys"

    def ready(self) -> None:
        from . import schema  # noqa: F401 - registers the OpenAPI extension
