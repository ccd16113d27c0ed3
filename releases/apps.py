from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    name = "releases"
    verbose_name = "Releases"

    def ready(self) -> None:
        from registry.admin.hub import prompt_columns_register, prompt_panel_register

        from .admin.hub import release_columns, release_panel
        from .gates import promotion_check_register
        from .snippet_followers import snippet_followers_check

        # The registry's admin may not read releases: where a prompt is released reaches its
        # page and the prompt list through the registry's slots (registry/admin/hub.py).
        prompt_panel_register("releases", release_panel)
        prompt_columns_register("releases", release_columns)
        # A snippet version is refused where prompts following it would lack its locale.
        promotion_check_register(snippet_followers_check)
