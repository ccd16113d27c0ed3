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
