"""The alerts' sweep: flow.backlog fires once per crossing of a subscription's thresholds, and re-arms."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services.flows import flow_delete
from tests.helpers import FlowDeletedMeanwhile, run_of
from webhooks.alerts.models import Delivery, Subscription
from webhooks.alerts.services import sweep
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


@pytest.mark.django_db(transaction=True)  # the deliveries' foreign keys are checked at the commit
def test_a_flow_deleted_after_its_backlog_was_counted_gets_no_alert_and_the_others_do(make_flow, user, monkeypatch, local_allowed):
    # Its delivery named the flow gone (and its own subscription, deleted with it): the commit broke their foreign keys,
    # and the sweep failed, for every subscription after it too.
    gone, kept = make_flow(user, name="Gone"), make_flow(user, name="Kept")
    _backlog(user, flow=gone, backlog_threshold=0)
    every_flow = _backlog(user, backlog_threshold=0)
    run_of(gone, user), run_of(kept, user)
    crossed = sweep._crossed

    def deleted_meanwhile(sub, row, now):
        if Flow.objects.filter(pk=gone.pk).exists():
            flow_delete(flow=gone)
        return crossed(sub, row, now)

    monkeypatch.setattr(sweep, "_crossed", deleted_meanwhile)
    assert flow_backlogs_check() == 1
    [delivery] = Delivery.objects.all()
    assert (delivery.flow_id, delivery.subscription_id) == (kept.pk, every_flow.pk)
    assert Subscription.objects.get().backlog_alerting == [str(kept.pk)]


@pytest.mark.django_db(transaction=True)
def test_a_subscription_deleted_after_it_was_read_gets_no_alert_and_the_others_do(flow, user, monkeypatch, local_allowed):
    first, second = _backlog(user, flow=flow, backlog_threshold=0), _backlog(user, backlog_threshold=0)
    run_of(flow, user)
    crossed = sweep._crossed

    def deleted_meanwhile(sub, row, now):
        Subscription.objects.filter(pk=first.pk).delete()
        return crossed(sub, row, now)

    monkeypatch.setattr(sweep, "_crossed", deleted_meanwhile)
    assert flow_backlogs_check() == 1
    assert list(Delivery.objects.values_list("subscription_id", flat=True)) == [second.pk]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps the delete and the check apart")
@pytest.mark.django_db(transaction=True)
def test_a_flow_deleted_while_its_backlog_alert_is_written_gets_none(make_flow, user, local_allowed):
    gone, kept = make_flow(user, name="Gone"), make_flow(user, name="Kept")
    _backlog(user, flow=gone, backlog_threshold=0)
    every_flow = _backlog(user, backlog_threshold=0)
    run_of(gone, user), run_of(kept, user)
    with FlowDeletedMeanwhile(gone, hold=0.5):  # the alert's write waits for the delete holding the flow
        assert flow_backlogs_check() == 1
    assert list(Delivery.objects.values_list("flow_id", "subscription_id")) == [(kept.pk, every_flow.pk)]


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
