"""django-q2 task entry points of the alerts. They take ids, and call services."""

from webhooks.alerts.services.sending import delivery_send, delivery_send_aside
from webhooks.alerts.services.sweep import alerts_sweep


def deliver(delivery_id: str) -> str | None:
    """One attempt at a delivery (a retry is rung again after its backoff, or by the sweep). In a worker process it is
    sent on a thread of the process's own and the task returns at once ("sending")."""
    if delivery_send_aside(delivery_id=delivery_id):
        return "sending"
    delivery = delivery_send(delivery_id=delivery_id)
    return delivery.status if delivery is not None else None


def sweep() -> dict[str, int]:
    return alerts_sweep()
