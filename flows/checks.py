"""System checks (`manage.py check`) for langrun's flow settings."""

from django.conf import settings
from django.core import checks


@checks.register()
def check_cluster_retry(app_configs=None, **kwargs):
    q = settings.Q_CLUSTER
    if q.get("retry", 0) <= q.get("timeout", 0):
        return [
            checks.Error(
                "Q_CLUSTER['retry'] must exceed Q_CLUSTER['timeout'].",
                hint="Otherwise django-q2 hands a task that is still running to a second worker.",
                id="flows.E001",
            )
        ]
    return []


@checks.register()
def check_components(app_configs=None, **kwargs):
    from flows.engine import registry

    if "Webhook" not in registry:
        return [checks.Error("No Webhook component is registered.", id="flows.E002")]
    return []


ORDINALS = ("first", "second", "third", "fourth", "fifth")


@checks.register()
def check_engine_settings(app_configs=None, **kwargs):
    problems = []
    if settings.LANGRUN_VARIABLES_KEY:
        from cryptography.fernet import Fernet

        keys = [key.strip() for key in settings.LANGRUN_VARIABLES_KEY.split(",")]
        for position, key in enumerate(keys):
            try:
                Fernet(key)
            except ValueError:
                ordinal = ORDINALS[position] if position < len(ORDINALS) else f"number {position + 1}"
                problems.append(
                    checks.Error(
                        f"LANGRUN_VARIABLES_KEY: the {ordinal} key is not a Fernet key.",
                        hint="Generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
                        id="flows.E003",
                    )
                )
    if settings.LANGRUN_FLOW_TIMEOUT >= settings.LANGRUN_RUN_TIMEOUT:
        problems.append(
            checks.Warning(
                "LANGRUN_FLOW_TIMEOUT is not below LANGRUN_RUN_TIMEOUT.",
                hint="The worker would kill a long run before the flow's time limit could fail it cleanly.",
                id="flows.W001",
            )
        )
    return problems
