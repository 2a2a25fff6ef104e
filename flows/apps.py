from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "flows"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from flows import checks  # noqa: F401  registers the system checks
        from flows.services import schedules  # noqa: F401  a deleted schedule takes its django-q2 row along
        from flows.services.sweep import sweep_schedule_ensure

        post_migrate.connect(sweep_schedule_ensure, sender=self)

        # Extra component modules (LANGRUN_COMPONENT_MODULES); the test suite registers its fault-injection components so.
        from importlib import import_module

        from django.conf import settings

        for module in getattr(settings, "LANGRUN_COMPONENT_MODULES", []):
            import_module(module)

        from flows import retention

        post_migrate.connect(retention.prune_schedule_ensure, sender=self)
