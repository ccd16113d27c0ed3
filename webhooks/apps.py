from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # The apps below emit their events through registry.events, which cannot import us:
        # we listen there, and queue each event's deliveries in the transaction that emitted it.
        from registry.events import event_listener_register

        from .services import event_deliveries_queue

        event_listener_register(event_deliveries_queue)
