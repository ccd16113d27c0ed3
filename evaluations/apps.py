from django.apps import AppConfig


class EvaluationsConfig(AppConfig):
    name = "evaluations"
    verbose_name = "Evaluations"

    def ready(self) -> None:
        # releases sits below evaluations and asks through its protocol: deploys and canaries
        # consult the promotion gates from here on (rollback never does).
        from releases.gates import promotion_check_register

        from .gates import promotion_gates_check

        promotion_check_register(promotion_gates_check)

        from registry.admin.hub import prompt_panel_register

        from .admin_hub import datasets_panel, eval_runs_panel, experiments_panel

        # A prompt's page shows what was measured of it (the registry asks; registry/admin/hub.py).
        prompt_panel_register("datasets", datasets_panel)
        prompt_panel_register("eval_runs", eval_runs_panel)
        prompt_panel_register("experiments", experiments_panel)
