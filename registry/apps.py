from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Prompts"

    def ready(self) -> None:
        from .admin.hub import prompt_panel_register
        from .admin.prompts import version_panel

        # A prompt's page starts with its versions; the apps above add theirs (admin/hub.py).
        prompt_panel_register("versions", version_panel)
