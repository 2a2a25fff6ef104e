from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self):
        from django.db.models.signals import post_migrate

        from webhooks import schema  # noqa: F401  registers the webhook's OpenAPI description
        from webhooks.alerts.services import outbox, sweep

        post_migrate.connect(sweep.alerts_sweep_schedule_ensure, sender=self)
        outbox.interest_signals_connect()
