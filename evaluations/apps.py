from django.apps import AppConfig


class EvaluationsConfig(AppConfig):
    name = "evaluations"
    verbose_name = "Evaluations"

    def ready(self) -> None:
        # releases sits below evaluations and asks through its protocol: deploys and canaries
        # consult the promotion gates from here on (rollback never does).
        # The confirmation pages also read each gate's state, to show it before the click.
        from releases.gates import promotion_check_register, promotion_gate_reader_register

        from .gates.services import promotion_gates_check, promotion_gates_report

        promotion_check_register(promotion_gates_check)
        promotion_gate_reader_register(promotion_gates_report)
        # A canary ramped, promoted or aborted by hand ends its analysis: said before the click.
        from releases.notices import change_notice_register

        from .canary.services import canary_analysis_change_notice

        change_notice_register(canary_analysis_change_notice)
        # A canary under analysis follows the analysis: a schedule on its release is refused.
        from releases.steering import steering_check_register

        from .canary.services import canary_analysis_steers

        steering_check_register(canary_analysis_steers)

        from registry.admin.hub import prompt_panel_register

        from .admin.hub import datasets_panel, eval_runs_panel, experiments_panel

        # A prompt's page shows what was measured of it (the registry asks; registry/admin/hub.py).
        prompt_panel_register("datasets", datasets_panel)
        prompt_panel_register("eval_runs", eval_runs_panel)
        prompt_panel_register("experiments", experiments_panel)
