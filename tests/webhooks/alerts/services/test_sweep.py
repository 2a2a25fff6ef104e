"""The alerts' sweep: flow.backlog fires once per crossing of a subscription's thresholds, and re-arms."""

from datetime import timedelta

from django.utils import timezone

from flows.models import FlowRun
from tests.helpers import run_of
from webhooks.alerts.models import Delivery, Subscription
from webhooks.alerts.services.subscriptions import subscription_create
from webhooks.alerts.services.sweep import SWEEP_SCHEDULE_NAME, flow_backlogs_check


def _backlog(user, flow=None, **thresholds):
    return subscription_create(user=user, flow=flow, url="http://127.0.0.1:9/", events=["flow.backlog"], **thresholds)


def test_a_backlog_over_its_threshold_fires_once_then_re_arms_when_it_clears(flow, user, local_allowed):
    sub = _backlog(user, flow=flow, backlog_threshold=2)
    runs = [run_of(flow, user) for _ in range(2)]
    assert flow_backlogs_check() == 0  # 2 queued: not more than 2
    runs.append(run_of(flow, user))
    assert flow_backlogs_check() == 1
    assert flow_backlogs_check() == 0  # the same crossing
    [delivery] = Delivery.objects.all()
    data = delivery.payload["data"]
    assert delivery.event == "flow.backlog" and delivery.flow_id == flow.id and delivery.subscription_id == sub.pk
    assert data["queued"] == 3 and data["backlog_threshold"] == 2 and data["flow_name"] == flow.name
    FlowRun.objects.filter(pk__in=[r.pk for r in runs]).update(status="succeeded", finished_at=timezone.now())
    assert flow_backlogs_check() == 0
    assert Subscription.objects.get(pk=sub.pk).backlog_alerting == []
    for _ in range(3):
        run_of(flow, user)
    assert flow_backlogs_check() == 1  # a new crossing


def test_the_oldest_waiting_too_long_fires_for_each_of_the_owners_flows(flow, make_flow, user, other, local_allowed):
    second = make_flow(user, name="Second")
    _backlog(user, backlog_age_seconds=60)
    old = run_of(flow, user)
    run_of(second, user)
    run_of(make_flow(other, name="Not mine"), other)
    FlowRun.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(minutes=5))
    assert flow_backlogs_check() == 1
    [delivery] = Delivery.objects.all()
    assert delivery.flow_id == flow.id and delivery.payload["data"]["oldest_wait_seconds"] >= 299


def test_migrate_installs_the_alerts_sweep_schedule(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name=SWEEP_SCHEDULE_NAME)
    assert schedule.func == "webhooks.alerts.tasks.sweep" and schedule.minutes == 1


def test_old_finished_deliveries_are_pruned_with_the_runs_retention(user, settings):
    from webhooks.alerts.services.sweep import deliveries_prune

    settings.LANGRUN_KEEP_SUCCEEDED_DAYS, settings.LANGRUN_KEEP_FAILED_DAYS = 30, 90
    long_ago = timezone.now() - timedelta(days=60)

    def make(status, finished_at):
        return Delivery.objects.create(user=user, event="run.failed", url="http://x/", payload={}, status=status, finished_at=finished_at)

    make("delivered", long_ago)
    kept = [make("failed", long_ago), make("delivered", timezone.now()), make("pending", None)]
    assert deliveries_prune() == 1
    assert set(Delivery.objects.values_list("pk", flat=True)) == {d.pk for d in kept}
