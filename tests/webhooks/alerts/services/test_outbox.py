"""The outbox: a run's end writes its deliveries with its finish, only for runs someone wants to hear of."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import tests.components  # noqa: F401 - registers the test components
from flows.models import FlowRun
from flows.services.execution import flow_run_execute, flow_runs_execute
from flows.services.sweep import flow_runs_recover_interrupted
from tests.helpers import flaky_flow, make_due, run_of
from webhooks.alerts.models import Delivery, RunCallback, Subscription
from webhooks.alerts.services import outbox
from webhooks.alerts.services.subscriptions import subscription_create

ALL_RUN_EVENTS = ["run.succeeded", "run.failed", "run.retries_exhausted"]


@pytest.fixture
def subscribe(user, local_allowed):
    def make(flow=None, events=ALL_RUN_EVENTS, url="http://127.0.0.1:9/hook", **fields):
        return subscription_create(user=user, flow=flow, url=url, events=events, **fields)

    return make


def test_a_succeeded_run_writes_one_delivery_per_subscription_with_its_finish(
    flow, user, subscribe, pushed_tasks, execute_path, django_capture_on_commit_callbacks
):
    everything, this_flow = subscribe(), subscribe(flow=flow, events=["run.succeeded"])
    subscribe(events=["run.failed"])  # not this event
    run = run_of(flow, user)
    with django_capture_on_commit_callbacks(execute=True):
        assert flow_run_execute(run_id=run.id).status == "succeeded"
    deliveries = Delivery.objects.order_by("created_at")
    assert {d.subscription_id for d in deliveries} == {everything.pk, this_flow.pk}
    delivery = deliveries.first()
    assert delivery.event == "run.succeeded" and delivery.status == "pending" and delivery.kind == "subscription"
    data = delivery.payload["data"]
    assert data["run_id"] == str(run.id) and data["flow_id"] == str(flow.id) and data["status"] == "succeeded"
    assert data["flow_name"] == flow.name and data["error"] == "" and data["status_url"].endswith(f"/api/v1/runs/{run.id}")
    assert sorted(t["args"][0] for t in pushed_tasks if t["func"] == outbox.DELIVER_TASK) == sorted(str(d.pk) for d in deliveries)


def test_another_flows_subscription_and_another_users_get_nothing(flow, make_flow, user, other, subscribe, local_allowed):
    subscribe(flow=make_flow(user, name="Other flow"))
    subscription_create(user=other, url="http://127.0.0.1:9/", events=ALL_RUN_EVENTS)
    flow_run_execute(run_id=run_of(flow, user).id)
    assert not Delivery.objects.exists()


def test_a_run_of_an_owner_without_subscriptions_costs_no_query(flow, user, execute_path):
    if execute_path != "returning":
        pytest.skip("counts the round trips of the hand-written path")
    flow_run_execute(run_id=run_of(flow, user).id)  # loads the owners with subscriptions
    run = run_of(flow, user)
    with CaptureQueriesContext(connection) as queries:
        flow_run_execute(run_id=run.id)
    tables = [model._meta.db_table for model in (Delivery, RunCallback, Subscription)]
    assert not any(table in q["sql"] for q in queries.captured_queries for table in tables)


def test_a_batch_of_quick_runs_writes_the_deliveries_of_those_it_finished(flow, user, subscribe):
    subscribe(flow=flow, events=["run.succeeded"])
    runs = [run_of(flow, user) for _ in range(3)]
    assert [r.status for r in flow_runs_execute(run_ids=[r.id for r in runs])] == ["succeeded"] * 3
    assert sorted(str(d.run_id) for d in Delivery.objects.all()) == sorted(str(r.id) for r in runs)


def test_a_failed_run_of_a_flow_without_retries_is_failed_not_exhausted(make_flow, user, subscribe, tmp_path):
    failing = make_flow(user, name="Failing", data=flaky_flow(tmp_path / "calls", fail_times=1, retryable=False))
    subscribe()
    assert flow_run_execute(run_id=run_of(failing, user).id).status == "failed"
    [delivery] = Delivery.objects.all()
    assert delivery.event == "run.failed" and delivery.payload["data"]["error"]


def test_the_last_attempt_failing_is_also_retries_exhausted(make_flow, user, subscribe, tmp_path, execute_path):
    flaky = make_flow(user, name="Flaky", data=flaky_flow(tmp_path / "calls", fail_times=5))
    flaky.max_attempts = 2
    flaky.save()
    subscribe()
    run = run_of(flaky, user)
    assert flow_run_execute(run_id=run.id).status == "queued"  # a retry later: no event
    assert not Delivery.objects.exists()
    make_due(run)
    assert flow_run_execute(run_id=run.id).status == "failed"
    assert sorted(Delivery.objects.values_list("event", flat=True)) == ["run.failed", "run.retries_exhausted"]


def test_a_run_the_sweep_fails_for_want_of_attempts_alerts_too(flow, user, subscribe):
    subscribe(events=["run.failed"])
    run = run_of(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(status="running", attempts=flow.max_attempts, started_at="2020-01-01T00:00:00Z")
    assert flow_runs_recover_interrupted() == 1
    [delivery] = Delivery.objects.all()
    assert delivery.event == "run.failed" and "interrupted" in delivery.payload["data"]["error"]


def test_a_run_with_a_callback_gets_its_end_sent_there_only(flow, user, local_allowed):
    run = run_of(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(request={"method": "POST", "headers": {}, "query": {"callback_url": "***"}})
    RunCallback.objects.create(run=run, url="http://127.0.0.1:9/cb")
    other_run = run_of(flow, user)
    flow_run_execute(run_id=run.id)
    flow_run_execute(run_id=other_run.id)
    [delivery] = Delivery.objects.all()
    assert (delivery.kind, delivery.url, delivery.event, delivery.run_id) == ("callback", "http://127.0.0.1:9/cb", "run.succeeded", run.id)


def test_a_failure_to_write_the_alerts_never_fails_the_run(flow, user, subscribe, monkeypatch):
    subscribe()

    def broken(ends):
        raise RuntimeError("outbox down")

    monkeypatch.setattr(outbox, "_deliveries_for", broken)
    run = flow_run_execute(run_id=run_of(flow, user).id)
    run.refresh_from_db()
    assert run.status == "succeeded" and not Delivery.objects.exists()


def test_an_inactive_subscription_gets_nothing(flow, user, subscribe):
    sub = subscribe()
    Subscription.objects.filter(pk=sub.pk).update(is_active=False)
    outbox.interest_forget()
    flow_run_execute(run_id=run_of(flow, user).id)
    assert not Delivery.objects.exists()


def _in_another_transaction(work, *, hold: float):
    """Run `work` in a transaction of another connection that stays open `hold` seconds after it; returns the thread,
    started, once `work` is done (its outcome, or the exception its commit raised, in `thread.outcome`)."""
    import threading
    import time

    from django.db import connection as its_connection
    from django.db import transaction

    done = threading.Event()

    def target():
        try:
            with transaction.atomic():
                work()
                done.set()
                time.sleep(hold)
            thread.outcome = "committed"
        except Exception as exc:  # what its commit raised
            thread.outcome = exc
        finally:
            done.set()
            its_connection.close()

    thread = threading.Thread(target=target)
    thread.outcome = None
    thread.start()
    assert done.wait(10)
    return thread


postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps a delete and a finish apart")


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_subscription_deleted_while_a_run_finishes_costs_the_run_nothing(flow, user, subscribe, execute_path):
    """The subscription's delete is in flight while the run's finish writes its alert: the run still succeeds, and the
    alert of a subscription that is gone is left out."""
    sub = subscribe()
    run = run_of(flow, user)
    deleting = _in_another_transaction(lambda: Subscription.objects.get(pk=sub.pk).delete(), hold=0.5)
    flow_run_execute(run_id=run.id)
    deleting.join(10)
    run.refresh_from_db()
    assert deleting.outcome == "committed"
    assert run.status == "succeeded" and run.error == ""
    assert not Subscription.objects.filter(pk=sub.pk).exists() and not Delivery.objects.filter(run=run).exists()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_subscription_deleted_while_a_finish_writes_its_alert_is_deleted_and_the_alert_kept(flow, user, subscribe):
    """The finish wrote the alert first: the delete waits for it and lets the delivery go as it lets go of the others
    (its record stays, without the subscription); neither fails."""
    sub = subscribe()
    run = run_of(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(status="succeeded")
    finishing = _in_another_transaction(lambda: outbox.run_events_record(ends=[(run, "succeeded", "")]), hold=0.5)
    Subscription.objects.get(pk=sub.pk).delete()
    finishing.join(10)
    assert finishing.outcome == "committed"
    assert not Subscription.objects.filter(pk=sub.pk).exists()
    assert list(Delivery.objects.filter(run=run).values_list("subscription_id", flat=True)) == [None]
