"""The doorbell: a run's task pushed to django-q2's broker, by the task's dotted path."""

from __future__ import annotations

import logging
import uuid

from django.utils import timezone

logger = logging.getLogger(__name__)


# By their dotted paths (a worker resolves them): flows.tasks imports the services, not the reverse.
RUN_TASK = "flows.tasks.execute_run"
QUICK_RUN_TASK = "flows.tasks.execute_quick_run"

_broker = None


def _get_broker():
    """One django-q2 broker per process: creating one per call opens a new connection each time."""
    global _broker
    if _broker is None:
        from django_q.brokers import get_broker

        _broker = get_broker()
    return _broker


def broker_preload() -> None:
    """Import the task broker's modules, without building a broker (the database broker's would connect).

    gunicorn's master calls this before forking the web workers (preload_app): they share those pages,
    and none of them imports the Redis client while answering its first webhook. Nothing may connect
    here: a forked worker must not inherit its master's database connection.
    """
    from importlib import import_module

    from django_q.conf import Conf

    import_module("django_q.brokers")
    if Conf.BROKER_CLASS:
        import_module(Conf.BROKER_CLASS.rsplit(".", 1)[0])


def flow_run_enqueue(*, run_id, flow_id=None, quick: bool = False) -> bool:
    """Ring the doorbell for a run. Never raises: a run that could not be enqueued stays `queued` for the sweep.

    `flow_id`, when known, travels with the task so the worker can label its logs without a query.
    A `quick` run (its version is made only of quick components) gets a task the Redis broker may
    hand to a worker together with other quick runs' (flows/broker.py).
    """
    args = (str(run_id), str(flow_id)) if flow_id else (str(run_id),)
    try:
        _task_push(QUICK_RUN_TASK if quick else RUN_TASK, args, name=f"run-{run_id}")
    except Exception:
        logger.exception("Could not enqueue run %s; the sweep will enqueue it again", run_id)
        return False
    return True


def _task_push(func: str, args: tuple, *, name: str) -> None:
    """Push the task django-q2's async_task(func, *args, task_name=name) pushes: the same package, signed alike.

    async_task spends a fifth of an enqueue's CPU, on every webhook, on what a doorbell does not use: a
    human-readable name made from the id (which `name` replaces), the pre_enqueue signal (langrun connects
    nothing to it) and its options. With Q_CLUSTER["sync"] (tasks run in the caller) it is called as it is.
    """
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    if Conf.SYNC:
        from django_q.tasks import async_task

        async_task(func, *args, broker=_get_broker(), task_name=name)
        return
    task = {"id": uuid.uuid4().hex, "name": name, "func": func, "args": args, "kwargs": {}, "started": timezone.now()}
    if Conf.CACHED:
        task["cached"] = Conf.CACHED
    if Conf.ACK_FAILURES:
        task["ack_failure"] = Conf.ACK_FAILURES
    _get_broker().enqueue(SignedPackage.dumps(task))
