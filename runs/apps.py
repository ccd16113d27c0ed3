from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from registry.providers import model_catalog_register, provider_directory_register

        # Imported for its signals: a saved provider or price drops the run path's copy.
        from . import provider_cache  # noqa: F401
        from .selectors import priced_models, provider_names

        # Bindings must name a configured provider; the registry asks us which (decision 0008).
        provider_directory_register(provider_names)
        # The workbench's model picker offers each provider's priced models.
        model_catalog_register(priced_models)

        from django.core import checks

        from .redaction import redaction_rules_check

        # A typo in RUNS_REDACTION_RULES must stop the process, not store calls unredacted.
        checks.register(redaction_rules_check)

        from .payloads import shadow_payload_check

        # Shadow payload keys too short to be keys, or jobs that expire before a redelivery.
        checks.register(shadow_payload_check)

        from releases.nodes import node_figures_register

        from .outbox import outbox

        # Each process's status record says how many shadow jobs it holds and has dropped.
        node_figures_register(outbox.figures)

        from registry.admin.hub import prompt_panel_register

        from .admin_hub import calls_panel

        # A prompt's page shows its recent calls (the registry asks; registry/admin/hub.py).
        prompt_panel_register("calls", calls_panel)
