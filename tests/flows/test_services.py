from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from flows import engine
from flows.exceptions import EndpointNameTaken, RunNotCancellable
from flows.models import FlowRun, NodeResult
from flows.services import queue
from flows.services.execution import flow_run_claim, flow_run_execute
from flows.services.flows import flow_create, flow_update
from flows.services.runs import flow_run_cancel, flow_run_create, flow_run_replay
from flows.services.sweep import SWEEP_SCHEDULE_NAME, flow_runs_requeue_stale
from flows.services.variables import variable_create

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


@pytest.fixture
def queued_run(flow, user):
    return flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"}, body='{"name": "Ada"}')


def test_execute_records_outputs_and_node_results(queued_run):
    run = flow_run_execute(run_id=queued_run.id)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 1
    assert run.outputs == {"greeting": "Hello Ada!"}
    assert run.started_at <= run.finished_at
    rows = list(run.node_results.values_list("node_id", "component_type", "status", "order"))
    assert rows == [("hook", "Webhook", "succeeded", 0), ("greet", "Template", "succeeded", 1), ("out", "Output", "succeeded", 2)]


def test_failed_node_fails_run_with_node_and_message(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"other": 1})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "'greet'" in run.error and "'name' is missing" in run.error
    assert dict(run.node_results.values_list("node_id", "status")) == {"hook": "succeeded", "greet": "failed", "out": "skipped"}


def test_claim_is_once_only(queued_run):
    assert flow_run_claim(run_id=queued_run.id) is True
    assert flow_run_claim(run_id=queued_run.id) is False


def test_duplicate_delivery_does_nothing(queued_run):
    flow_run_execute(run_id=queued_run.id)
    assert flow_run_execute(run_id=queued_run.id) is None
    queued_run.refresh_from_db()
    assert queued_run.attempts == 1 and NodeResult.objects.filter(run=queued_run).count() == 3


def test_invalid_stored_graph_fails_the_run(flow, user):
    # A component type that was removed after the flow was saved: its stored version still names it.
    type(flow).objects.filter(pk=flow.pk).update(data={"nodes": [{"id": "x", "type": "Gone"}]})
    flow.versions.update(data={"nodes": [{"id": "x", "type": "Gone"}]})
    flow.refresh_from_db()
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "Unknown component type 'Gone'" in run.error


def test_create_enqueues_on_commit_in_the_configured_broker(flow, user, django_capture_on_commit_callbacks):
    from django_q.brokers import get_broker

    broker = get_broker()
    broker.purge_queue()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    assert broker.queue_size() == 0  # nothing is enqueued before the commit
    for callback in callbacks:
        callback()
    assert broker.queue_size() == 1
    assert FlowRun.objects.get(pk=run.id).status == "queued"
    broker.purge_queue()


def test_sweep_requeues_only_stale_queued_runs(flow, user, monkeypatch):
    enqueued = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda *, run_id: enqueued.append(run_id) or True)
    old = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    fresh = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    done = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    FlowRun.objects.filter(pk__in=[old.pk, done.pk]).update(enqueued_at=timezone.now() - timedelta(minutes=5))
    FlowRun.objects.filter(pk=done.pk).update(status="succeeded")
    assert flow_runs_requeue_stale(older_than=timedelta(seconds=60)) == 1
    assert enqueued == [old.pk]
    # Its enqueue time moved on, so the next sweep leaves it alone for another threshold.
    assert flow_runs_requeue_stale(older_than=timedelta(seconds=60)) == 0
    assert fresh.pk not in enqueued


def test_sweep_schedule_is_installed_by_migrate(db):
    schedule = Schedule.objects.get(name=SWEEP_SCHEDULE_NAME)
    assert schedule.func == "flows.tasks.sweep" and schedule.schedule_type == Schedule.MINUTES and schedule.repeats == -1


def test_task_entry_point_runs_the_service(queued_run):
    from flows.tasks import execute_run

    assert execute_run(str(queued_run.id)) == "succeeded"
    assert execute_run(str(queued_run.id)) is None


def test_endpoint_name_taken_is_refused(flow, user):
    with pytest.raises(EndpointNameTaken):
        flow_create(user=user, name="again", endpoint_name=flow.endpoint_name, data=flow.data)


def test_replay_creates_a_linked_run_with_the_same_request(queued_run, user):
    flow_run_execute(run_id=queued_run.id)
    replay = flow_run_replay(run=queued_run, user=user)
    assert replay.pk != queued_run.pk and replay.replay_of == queued_run
    assert (replay.trigger, replay.status, replay.payload, replay.body) == ("replay", "queued", queued_run.payload, queued_run.body)
    flow_run_execute(run_id=replay.id)
    replay.refresh_from_db()
    assert replay.status == "succeeded" and replay.outputs == {"greeting": "Hello Ada!"}


def test_cancel_only_while_queued(queued_run, flow, user):
    cancelled = flow_run_cancel(run=queued_run)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert flow_run_execute(run_id=queued_run.id) is None  # a cancelled run is never executed
    done = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "x"})
    flow_run_execute(run_id=done.id)
    with pytest.raises(RunNotCancellable, match="succeeded"):
        flow_run_cancel(run=done)
    done.refresh_from_db()
    assert done.status == "succeeded"


def test_tweaks_are_checked_stored_and_applied(flow, user):
    from flows.engine import GraphValidationError

    with pytest.raises(GraphValidationError):
        flow_run_create(flow=flow, user=user, trigger="api", payload={}, tweaks={"ghost": {}})
    assert not FlowRun.objects.exists()
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"name": "Ada"}, tweaks={"greet": {"template": "Bye {name}"}})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.tweaks == {"greet": {"template": "Bye {name}"}} and run.outputs == {"greeting": "Bye Ada"}


def test_update_checks_variables_against_the_new_owner(user, make_user, make_flow):
    other = make_user("heir")
    data = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "t", "type": "Text", "params": {"text": {"variable": "TOKEN"}}}],
        "edges": [],
    }
    variable_create(user=other, name="TOKEN", value="v")
    flow = make_flow(user)
    with pytest.raises(engine.GraphValidationError):
        flow_update(flow=flow, data=data)  # the owner has no TOKEN
    flow_update(flow=flow, user=other, data=data)  # the new owner has
    flow.refresh_from_db()
    assert (flow.user, flow.data) == (other, data)


def test_a_node_output_over_langrun_max_output_bytes_fails_the_run(flow, user, settings):
    settings.LANGRUN_MAX_OUTPUT_BYTES = 200
    small = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    large = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "A" * 300})
    flow_run_execute(run_id=small.id)
    flow_run_execute(run_id=large.id)
    small.refresh_from_db()
    large.refresh_from_db()
    assert small.status == "succeeded"
    assert large.status == "failed"
    assert "its output is larger than the limit of 200 bytes (LANGRUN_MAX_OUTPUT_BYTES)" in large.error
