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
