from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Prompts"

    def ready(self) -> None:
        from .admin.hub import prompt_panel_register
        from .admin.prompts import snippet_users_panel, version_panel

        # A prompt's page starts with its versions; the apps above add theirs (admin/hub.py).
        prompt_panel_register("versions", version_panel)
        # A snippet's page lists every version that includes it.
        prompt_panel_register("snippet_users", snippet_users_panel)
