from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "flows"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from flows import checks  # noqa: F401  registers the system checks
        from flows.services import sweep_schedule_ensure

        post_migrate.connect(sweep_schedule_ensure, sender=self)

        from flows import admin_versions, retention

        admin_versions.register()  # kept apart from flows/admin.py
        post_migrate.connect(retention.prune_schedule_ensure, sender=self)
