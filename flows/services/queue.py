"""The doorbell: a run's task pushed to django-q2's broker, by the task's dotted path."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

from flows.models import FlowRun
from flows.services import versions

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


def flow_run_enqueue(*, run_id, flow_id=None, quick: bool = False, account=None, passed_on: bool = False) -> bool:
    """Ring the doorbell for a run. Never raises: a run that could not be enqueued stays `queued` for the sweep.

    `flow_id`, when known, travels with the task so the worker can label its logs without a query.
    A `quick` run (its version is made only of quick components) gets a task the Redis broker may
    hand to a worker together with other quick runs' (flows/broker.py). With the Redis broker the task of a run whose
    `account` (the user it runs as) is given waits in that account's lane, which the workers take from in turn with
    the others'; without one, in the lane of the service's own tasks. A run that is not quick carries its account
    to the worker, whose slots one account's runs share with the others' (flows/services/inflight.py); `passed_on`
    marks one a worker with its account's share in flight passed on once already (flows.tasks.execute_runs).
    """
    args = (str(run_id), str(flow_id)) if flow_id else (str(run_id),)
    if not quick and account is not None:  # a run that waits in a worker takes its account's share of the slots
        args = (str(run_id), str(flow_id) if flow_id else None, str(account), *((True,) if passed_on else ()))
    return task_enqueue(func=QUICK_RUN_TASK if quick else RUN_TASK, args=args, task_name=f"run-{run_id}", account=account)


# What flow_run_ring needs of a run, read with `values_list(*RING_FIELDS)`.
RING_FIELDS = ("pk", "flow_id", "version_id", "user_id")


def flow_run_ring(run_id, flow_id, version_id, account) -> bool:
    """Ring for a recorded run as its intake does: the task its version needs (quick or not), in its account's lane
    (so that one account's runs rung by the sweep or a freed slot wait in its own lane, not in one all accounts
    share). Never raises."""
    try:
        quick = version_id is not None and versions.flow_version_quick(flow_id=flow_id, version_id=version_id)
    except Exception:
        logger.exception("Could not tell whether run %s's flow is quick; it gets a task of its own", run_id)
        quick = False
    return flow_run_enqueue(run_id=run_id, flow_id=flow_id, quick=quick, account=account)


def flow_run_ring_by_id(run_id) -> bool:
    """flow_run_ring for a run known by its id alone (a run deleted meanwhile is not rung). Never raises."""
    try:
        row = FlowRun.objects.filter(pk=run_id).values_list(*RING_FIELDS).first()
    except Exception:
        logger.exception("Could not read run %s to ring for it; the sweep will enqueue it again", run_id)
        return False
    return flow_run_ring(*row) if row else False


# Calls set for later in this process. One thread makes them all, in due order, from a heap: what sets them (a
# throttled key's next run, a failed alert's backoff) is a sender's choice, and a thread per timer would let one
# account fill the worker process with threads every account's runs need. A keyed call is set once (its earliest
# time wins): `_later` holds the due time of each key.
_later: dict[str, float] = {}
_later_heap: list[tuple[float, int, str | None, Callable[[], object]]] = []
_later_order = itertools.count()
_later_cond = threading.Condition()
_later_thread: threading.Thread | None = None


def call_later(*, delay: float, func: Callable[[], object], key: str | None = None) -> None:
    """Call `func` in `delay` seconds from this process's timer thread (not durable: gone if the process ends)."""
    global _later_thread
    due = time.monotonic() + max(delay, 0.0)
    with _later_cond:
        if key is not None:
            if key in _later and _later[key] <= due + 0.5:
                return  # already called by then
            _later[key] = due
        heapq.heappush(_later_heap, (due, next(_later_order), key, func))
        if _later_thread is None or not _later_thread.is_alive():  # the first timer, or the first in a forked worker
            _later_thread = threading.Thread(target=_call_later_loop, name="langrun-later", daemon=True)
            _later_thread.start()
        _later_cond.notify()


def _call_later_loop() -> None:
    from django.db import connections

    while True:
        with _later_cond:
            while True:
                now = time.monotonic()
                if _later_heap and _later_heap[0][0] <= now:
                    due, _, key, func = heapq.heappop(_later_heap)
                    if key is None:
                        break
                    if _later.get(key) == due:  # else an earlier time replaced this one
                        del _later[key]
                        break
                    continue
                _later_cond.wait(_later_heap[0][0] - now if _later_heap else None)
        try:
            func()
        except Exception:
            logger.exception("A call set for later failed")
        finally:
            connections.close_all()  # this thread's own (the database broker's), never another thread's


def _later_forget_in_child() -> None:
    # A forked process has no timer thread, so it makes none of its parent's calls (the parent makes them), and its
    # lock is new: the parent's thread may have held the old one at the fork.
    global _later_cond, _later_thread
    _later.clear()
    _later_heap.clear()
    _later_cond = threading.Condition()
    _later_thread = None


os.register_at_fork(after_in_child=_later_forget_in_child)


def flow_run_enqueue_later(*, run_id, at: datetime) -> None:
    """Ring the doorbell for a run at `at` (a throttled run, when its window opens), from this process's timer thread.

    The timer is not durable: should the process end first, the sweep rings the run, a minute late at most.
    Not in django-q2's sync mode (tests, an operator's call), where a doorbell would execute the run in the timer.
    """
    from django_q.conf import Conf

    if Conf.SYNC:
        return
    key = str(run_id)
    delay = max((at - timezone.now()).total_seconds(), 0.0) + 0.01
    call_later(delay=delay, key=key, func=lambda: flow_run_ring_by_id(key))


def task_enqueue(*, func: str, args: tuple, task_name: str, account=None) -> bool:
    """Push any task by its dotted path on the process's broker (with the Redis broker, in `account`'s lane when given,
    as flow_run_enqueue does). Never raises: the caller's sweep covers a refusal."""
    from django_q.tasks import async_task

    try:
        broker = _get_broker()
        if account is not None and hasattr(broker, "lane"):
            broker = broker.lane(account)
        async_task(func, *args, broker=broker, task_name=task_name)
    except Exception:
        logger.exception("Could not enqueue %s (%s); the sweep will ring again", task_name, func)
        return False
    return True
