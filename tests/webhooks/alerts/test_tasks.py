"""The alerts' task entry points: the dotted paths django-q2 stores and calls, and the models' app."""

from django.utils.module_loading import import_string

from webhooks.alerts import tasks
from webhooks.alerts.models import CallbackSecret, Delivery, RunCallback, Subscription
from webhooks.alerts.services.outbox import DELIVER_TASK
from webhooks.alerts.services.sweep import SWEEP_TASK


def test_the_stored_task_paths_name_the_task_functions():
    assert import_string(DELIVER_TASK) is tasks.deliver
    assert import_string(SWEEP_TASK) is tasks.sweep


def test_the_alerts_models_belong_to_the_webhooks_app():
    assert {m._meta.app_label for m in (Subscription, Delivery, CallbackSecret, RunCallback)} == {"webhooks"}
