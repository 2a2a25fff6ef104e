"""flows.services.queue: what the webhook hands django-q2 for a run, as a worker unpacks it."""

import logging
import pydoc

import pytest

import tests.components  # noqa: F401 - registers the test components
from flows import tasks
from flows.models import FlowVersion
from flows.services import queue, versions
from flows.services.runs import flow_run_create
from tests.helpers import HTTP_FLOW, run_of


def test_the_task_carries_the_task_path_and_the_run(pushed_tasks, flow, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the task is pushed once the run is committed
        run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    [task] = pushed_tasks
    # By its dotted path, which a worker resolves (the services do not import the tasks). The greeting flow is
    # made of quick components, so its runs get the task the Redis broker may merge with others.
    assert task["func"] == "flows.tasks.execute_quick_run" and pydoc.locate(task["func"]) is tasks.execute_quick_run
    assert task["args"] == (str(run.id), str(flow.id))
    assert task["name"] == f"run-{run.id}"
    assert pydoc.locate(task["func"])(*task["args"]) == "succeeded"


@pytest.mark.usefixtures("execute_path")
def test_a_run_of_a_quick_flow_gets_the_task_the_broker_may_merge(pushed_tasks, make_flow, user, flow, django_capture_on_commit_callbacks):
    http = make_flow(user, data=HTTP_FLOW, name="Caller")
    with django_capture_on_commit_callbacks(execute=True):
        quick, slow = run_of(flow, user), run_of(http, user)
    assert [(task["func"], task["args"]) for task in pushed_tasks] == [
        ("flows.tasks.execute_quick_run", (str(quick.id), str(flow.id))),
        ("flows.tasks.execute_run", (str(slow.id), str(http.id), str(user.id))),
    ]
    # A run that waits in a worker carries its account, whose share of the worker's slots it takes (RunExecutor).


def test_a_run_passed_on_by_a_worker_says_so_in_its_task(pushed_tasks, user):
    """A worker with the run's account's share in flight passes the run on once (flows.tasks.execute_runs); the task
    says so, and its worker keeps the run the second time."""
    assert queue.flow_run_enqueue(run_id="r1", flow_id="f1", account=user.pk, passed_on=True)
    assert queue.flow_run_enqueue(run_id="r2", account=user.pk)
    assert [task["args"] for task in pushed_tasks] == [("r1", "f1", str(user.pk), True), ("r2", None, str(user.pk))]


@pytest.mark.usefixtures("execute_path")
def test_a_run_whose_flow_cannot_be_told_quick_still_gets_its_task(monkeypatch, flow, user, django_capture_on_commit_callbacks, caplog):
    pushed = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda **kw: pushed.append(kw) or True)

    def broken(**kw):
        raise FlowVersion.DoesNotExist("the database went away")

    monkeypatch.setattr(versions, "flow_version_quick", broken)
    with caplog.at_level(logging.ERROR, logger="flows.services"), django_capture_on_commit_callbacks(execute=True):
        run = run_of(flow, user)  # no exception reaches the caller of a recorded run
    assert pushed == [{"run_id": run.id, "flow_id": flow.id, "quick": False, "account": user.pk}]
    assert "Could not tell whether run" in caplog.text


def test_a_runs_task_waits_in_its_accounts_lane(flow, user, settings, django_capture_on_commit_callbacks):
    from flows.broker import BulkRedis

    if not settings.Q_CLUSTER.get("redis"):
        pytest.skip("lanes are the Redis broker's")
    broker = queue._get_broker()
    assert isinstance(broker, BulkRedis)
    broker.purge_queue()
    with django_capture_on_commit_callbacks(execute=True):
        run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    assert broker.connection.llen(f"{broker.list_key}:a:{user.pk}") == 1
    assert queue.flow_run_enqueue(run_id=run.id)  # the sweep's: no account, the service's lane
    assert broker.connection.llen(broker.list_key) == 1
    broker.purge_queue()


def test_a_run_known_by_its_id_alone_is_rung_as_its_intake_rang_it(enqueued, flow, user):
    """A throttled run's timer, or a run a full worker hands on, knows the run's id alone: it is rung with the task
    its version needs, in its account's lane; a run deleted meanwhile is not rung."""
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    enqueued.clear()
    assert queue.flow_run_ring_by_id(str(run.id)) is True
    assert enqueued == [str(run.id)] and enqueued.options[str(run.id)] == {"flow_id": flow.pk, "quick": True, "account": user.pk}
    run_id = str(run.id)
    run.delete()
    assert queue.flow_run_ring_by_id(run_id) is False and enqueued == [run_id]


def test_a_broker_that_cannot_be_had_refuses_the_task_without_raising(monkeypatch, user, caplog):
    """Callers ring after their commit and rely on the sweep for a refusal: no broker is a refusal, not an exception."""

    def no_broker():
        raise ValueError("REDIS_URL is not a Redis URL")

    monkeypatch.setattr(queue, "_get_broker", no_broker)
    with caplog.at_level(logging.ERROR, logger="flows.services"):
        assert queue.task_enqueue(func="flows.tasks.sweep", args=(), task_name="sweep") is False
        assert queue.flow_run_enqueue(run_id="r1", account=user.pk) is False
    assert "the sweep will ring again" in caplog.text


def test_timers_for_many_runs_share_one_thread_and_ring_in_due_order(monkeypatch):
    """A throttled run's timer is set per key, and a sender chooses the keys: thousands of waiting keys must not
    each hold a thread of the worker process (its threads are shared by every account's runs)."""
    import threading
    import time
    from datetime import timedelta

    from django.utils import timezone
    from django_q.conf import Conf

    rung = []
    done = threading.Event()
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(queue, "flow_run_ring_by_id", lambda run_id: rung.append(run_id) or (len(rung) == 2 and done.set()) or True)
    before = threading.active_count()
    for number in range(500):
        queue.flow_run_enqueue_later(run_id=f"far-{number}", at=timezone.now() + timedelta(hours=1))
    queue.flow_run_enqueue_later(run_id="second", at=timezone.now() + timedelta(milliseconds=120))
    queue.flow_run_enqueue_later(run_id="first", at=timezone.now() + timedelta(milliseconds=40))
    assert threading.active_count() <= before + 1
    assert done.wait(5)
    time.sleep(0.05)
    assert rung == ["first", "second"]
    assert "first" not in queue._later and "far-1" in queue._later
    for number in range(500):  # forgotten, so that later tests find no timer of these
        queue._later.pop(f"far-{number}", None)


def test_a_forked_worker_starts_with_no_timers_of_its_parent(monkeypatch):
    """Threads do not survive a fork, and neither do the calls the parent's timer thread was to make: the child
    would make them a second time (and might find the timers' lock held by a thread it does not have)."""
    import os
    from datetime import timedelta

    from django.utils import timezone
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    queue.flow_run_enqueue_later(run_id="parents", at=timezone.now() + timedelta(hours=1))
    pid = os.fork()
    if pid == 0:  # the child: report by its exit status only
        os._exit(0 if not queue._later and not queue._later_heap and queue._later_thread is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "parents" in queue._later
    queue._later.pop("parents")
