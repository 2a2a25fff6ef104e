from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from alerts.services import outbox, sweep

        post_migrate.connect(sweep.alerts_sweep_schedule_ensure, sender=self)
        outbox.interest_signals_connect()
