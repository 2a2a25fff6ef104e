"""flows.services.queue: what the webhook hands django-q2 for a run, as a worker unpacks it."""

import logging
import pydoc

import pytest

import tests.components  # noqa: F401 - registers the test components
from flows import tasks
from flows.models import FlowVersion
from flows.services import queue, versions
from flows.services.queue import _task_push
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


def test_the_package_is_the_one_django_q2s_async_task_builds(pushed_tasks):
    # The doorbell builds its package itself (flows.services.queue._task_push); a worker must find in it what
    # async_task would have put there, so nothing changes for the cluster that unpacks it.
    from django_q.tasks import async_task

    args = ("7f0c5b0e-0000-4000-8000-000000000001", "7f0c5b0e-0000-4000-8000-000000000002")
    async_task(tasks.execute_quick_run, *args, broker=queue._broker, task_name="run-x")
    _task_push(tasks.execute_quick_run, args, name="run-x")
    theirs, ours = pushed_tasks
    assert set(ours) == set(theirs) and "ack_failure" in ours  # the cluster's settings (ack_failures) are carried too
    assert {k: v for k, v in ours.items() if k not in ("id", "started")} == {k: v for k, v in theirs.items() if k not in ("id", "started")}
    assert len(ours["id"]) == len(theirs["id"]) == 32 and ours["id"] != theirs["id"]
    assert type(ours["started"]) is type(theirs["started"]) and ours["started"] >= theirs["started"]


def test_with_synchronous_tasks_the_package_goes_through_async_task(monkeypatch, pushed_tasks):
    import django_q.tasks
    from django_q.conf import Conf

    called = []
    monkeypatch.setattr(Conf, "SYNC", True)
    monkeypatch.setattr(django_q.tasks, "async_task", lambda func, *args, **kw: called.append((func, args, kw["task_name"])))
    _task_push(tasks.execute_run, ("run-id",), name="run-x")
    assert called == [(tasks.execute_run, ("run-id",), "run-x")] and pushed_tasks == []


@pytest.mark.usefixtures("execute_path")
def test_a_run_of_a_quick_flow_gets_the_task_the_broker_may_merge(pushed_tasks, make_flow, user, flow, django_capture_on_commit_callbacks):
    http = make_flow(user, data=HTTP_FLOW, name="Caller")
    with django_capture_on_commit_callbacks(execute=True):
        quick, slow = run_of(flow, user), run_of(http, user)
    assert [(task["func"], task["args"]) for task in pushed_tasks] == [
        ("flows.tasks.execute_quick_run", (str(quick.id), str(flow.id))),
        ("flows.tasks.execute_run", (str(slow.id), str(http.id))),
    ]


@pytest.mark.usefixtures("execute_path")
def test_a_run_whose_flow_cannot_be_told_quick_still_gets_its_task(monkeypatch, flow, user, django_capture_on_commit_callbacks, caplog):
    pushed = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda **kw: pushed.append(kw) or True)

    def broken(**kw):
        raise FlowVersion.DoesNotExist("the database went away")

    monkeypatch.setattr(versions, "flow_version_quick", broken)
    with caplog.at_level(logging.ERROR, logger="flows.services"), django_capture_on_commit_callbacks(execute=True):
        run = run_of(flow, user)  # no exception reaches the caller of a recorded run
    assert pushed == [{"run_id": run.id, "flow_id": flow.id, "quick": False}]
    assert "Could not tell whether run" in caplog.text
