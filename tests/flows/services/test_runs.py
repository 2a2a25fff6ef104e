"""flows.services.runs: recording a run (enqueued on commit, idempotency keys), replaying, cancelling, tweaks."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

import tests.components  # noqa: F401 - registers the test components
from flows.exceptions import RunNotCancellable
from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_cancel, flow_run_create, flow_run_replay
from flows.services.sweep import (
    flow_runs_release_idempotency_keys,
)
from tests.helpers import FlowDeletedMeanwhile, at_once, new_run

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


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


def test_replay_creates_a_linked_run_with_the_same_request(queued_run, user):
    flow_run_execute(run_id=queued_run.id)
    replay = flow_run_replay(run=queued_run, user=user)
    assert replay.pk != queued_run.pk and replay.replay_of == queued_run
    assert (replay.trigger, replay.status, replay.payload, replay.body) == ("replay", "queued", queued_run.payload, queued_run.body)
    flow_run_execute(run_id=replay.id)
    replay.refresh_from_db()
    assert replay.status == "succeeded" and replay.outputs == {"greeting": "Hello Ada!"}


def test_cancelling_a_run_deleted_since_its_lookup_is_not_found(queued_run):
    from django.http import Http404

    FlowRun.objects.filter(pk=queued_run.pk).delete()  # retention, or its flow deleted, meanwhile
    with pytest.raises(Http404):
        flow_run_cancel(run=queued_run)


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


def test_same_idempotency_key_returns_the_original_run(flow, user, make_flow, enqueued):
    first = new_run(flow, user, idempotency_key="evt-1")
    again = new_run(flow, user, idempotency_key="evt-1")
    other = new_run(flow, user, idempotency_key="evt-2")
    elsewhere = new_run(make_flow(user, endpoint_name="other"), user, idempotency_key="evt-1")
    assert (first.deduplicated, again.deduplicated, other.deduplicated, elsewhere.deduplicated) == (False, True, False, False)
    assert again.pk == first.pk and other.pk != first.pk and elsewhere.pk != first.pk
    assert FlowRun.objects.count() == 3


def test_idempotency_key_is_free_again_after_the_retention_window(flow, user, settings, enqueued):
    settings.LANGRUN_IDEMPOTENCY_RETENTION = 60
    first = new_run(flow, user, idempotency_key="evt-1")
    FlowRun.objects.filter(pk=first.pk).update(received_at=timezone.now() - timedelta(seconds=61))
    later = new_run(flow, user, idempotency_key="evt-1")
    assert later.pk != first.pk and not later.deduplicated
    assert FlowRun.objects.get(pk=first.pk).idempotency_key is None
    FlowRun.objects.filter(pk=later.pk).update(received_at=timezone.now() - timedelta(seconds=61))
    assert flow_runs_release_idempotency_keys() == 1
    assert not FlowRun.objects.filter(idempotency_key__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_run(make_user, make_flow):
    user = make_user()
    flow = make_flow(user)
    ids = [run.pk for run in at_once(*[lambda: new_run(flow, user, idempotency_key="same")] * 8)]
    assert len(ids) == 8 and len(set(ids)) == 1
    assert FlowRun.objects.count() == 1


class _Deadlock(Exception):
    sqlstate = "40P01"  # what PostgreSQL says of the transaction it chose to abort


@pytest.mark.parametrize("idempotency_key", [None, "delivery-1"])
def test_a_run_that_gave_way_to_its_flows_delete_in_a_deadlock_is_a_404(flow, monkeypatch, idempotency_key):
    """PostgreSQL checks the run's references at its commit, in an order of its own: the run may lock its version, then
    wait for the flow a delete holds, while the delete waits for the version. One of them is aborted; when it is the
    run, the flow is gone by the time it looks, and the answer is the flow's 404, never a 500."""
    from django.db import OperationalError
    from django.http import Http404

    from flows.models import Flow
    from flows.services import runs

    def deadlocked(fields, only_if):
        Flow.objects.filter(pk=flow.pk).delete()  # the delete it gave way to
        raise OperationalError("deadlock detected") from _Deadlock()

    monkeypatch.setattr(runs, "_flow_run_insert", deadlocked)
    with pytest.raises(Http404):
        flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={}, idempotency_key=idempotency_key)


def test_a_deadlock_with_the_flow_still_there_is_not_taken_for_its_delete(flow, monkeypatch):
    from django.db import OperationalError

    from flows.services import runs

    def deadlocked(fields, only_if):
        raise OperationalError("deadlock detected") from _Deadlock()

    monkeypatch.setattr(runs, "_flow_run_insert", deadlocked)
    with pytest.raises(OperationalError):
        flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={})


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps the delete and the run apart")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("idempotency_key", [None, "delivery-1"])
def test_a_run_recorded_while_its_flow_is_deleted_is_a_404(flow, idempotency_key):
    # A webhook arriving while its flow was deleted: its run's insert waited for the delete and then broke the
    # foreign key, a 500 (with an idempotency key, after three tries read as a duplicate).
    from django.http import Http404

    with FlowDeletedMeanwhile(flow), pytest.raises(Http404):  # the run's insert waits for the flow meanwhile
        flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={}, idempotency_key=idempotency_key)
    assert not FlowRun.objects.exists()
