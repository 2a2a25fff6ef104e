"""What the webhook hands django-q2 for a run, as a worker unpacks it."""

from django_q.signing import SignedPackage

from flows import services, tasks


def test_the_task_carries_the_function_itself_and_the_run(monkeypatch, flow, user, django_capture_on_commit_callbacks):
    pushed = []

    class Broker:
        list_key = "recording"

        def enqueue(self, package):
            pushed.append(package)
            return len(pushed)

    monkeypatch.setattr(services, "_broker", Broker())
    with django_capture_on_commit_callbacks(execute=True):  # the task is pushed once the run is committed
        run = services.flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    [package] = pushed
    task = SignedPackage.loads(package)
    # A worker calls it as it is; a dotted path would cost it a pydoc.locate per task. The greeting flow is
    # made of quick components, so its runs get the task the Redis broker may merge with others.
    assert task["func"] is tasks.execute_quick_run
    assert task["args"] == (str(run.id), str(flow.id))
    assert task["name"] == f"run-{run.id}"
    assert task["func"](*task["args"]) == "succeeded"
