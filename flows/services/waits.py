"""Waiting for a run: the process's watch of the ledger, or executing a run in the request's process (Langflow's
synchronous run). A waiting caller is parked (langrun.waits): it holds no database connection while it waits."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection
from django.http import Http404

from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.watch import WATCH
from langrun.waits import parked, wait_slot

logger = logging.getLogger(__name__)

# Runs this web process is executing itself (/run). Past LANGRUN_WEB_RUNS_PER_PROCESS a run is left to the workers,
# where it was enqueued too: a run executing here shares the un-niced web process (its CPU, its GIL) with every
# account's webhooks, and one account's synchronous runs of a heavy flow held other accounts' webhooks for seconds.
_web_runs = 0
_web_runs_lock = threading.Lock()


def web_run_slot_take() -> bool:
    """Take one of the process's slots for executing a run here; False when all are taken (a worker runs it)."""
    global _web_runs
    with _web_runs_lock:
        if _web_runs >= settings.LANGRUN_WEB_RUNS_PER_PROCESS:
            return False
        _web_runs += 1
        return True


def web_run_slot_give() -> None:
    global _web_runs
    with _web_runs_lock:
        _web_runs = max(_web_runs - 1, 0)


def flow_run_wait(*, run_id, timeout: float) -> FlowRun:
    """The run once it is terminal, or as it is after `timeout` seconds.

    A caller past its account's or its process's share of waiting (langrun.waits) gets the run as it is, at once.
    """
    run = _flow_run_read(run_id)
    if run.status in FlowRun.TERMINAL or timeout <= 0:
        return run
    with wait_slot(owner=str(run.user_id)) as granted:
        return _flow_run_awaited(run_id=run_id, timeout=timeout) if granted else run


def _flow_run_awaited(*, run_id, timeout: float) -> FlowRun:
    """The run after waiting, parked, for its end (at most `timeout` seconds)."""
    if connection.in_atomic_block:
        # A caller inside a transaction (a test's, an operator's) may wait for a run no other connection can see yet.
        return _flow_run_poll(run_id=run_id, timeout=timeout)
    connection.close()  # given back while waiting (to the pool, where there is one)
    with parked():
        WATCH.wait_for_end(run_id=run_id, timeout=timeout)
    return _flow_run_read(run_id)


def _flow_run_read(run_id) -> FlowRun:
    try:
        return FlowRun.objects.get(pk=run_id)
    except FlowRun.DoesNotExist:  # deleted while its caller waited (its flow deleted): as its status URL answers now
        raise Http404(f"Run {run_id} not found.") from None


def _flow_run_poll(*, run_id, timeout: float) -> FlowRun:
    deadline = time.monotonic() + max(timeout, 0)
    delay = 0.02
    while True:
        run = _flow_run_read(run_id)
        remaining = deadline - time.monotonic()
        if run.status in FlowRun.TERMINAL or remaining <= 0:
            return run
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)


def flow_run_execute_sync(*, run: FlowRun, timeout: float) -> FlowRun:
    """Execute a committed, queued run in this process; return it when terminal or after `timeout` seconds.

    The run executes in a thread, so the caller can stop waiting without
    interrupting it: a run still going at the deadline finishes in that thread.
    If a worker claimed the run first (it was also enqueued), this just waits.
    A caller past its share of waiting (langrun.waits) gets the queued run at once: a worker runs it.
    """
    with wait_slot(owner=str(run.user_id)) as granted:
        if not granted:
            return run
        thread = _flow_run_start_thread(run_id=run.id)
        if thread is None:
            return _flow_run_awaited(run_id=run.id, timeout=timeout)  # a worker runs it
        started = time.monotonic()
        if not connection.in_atomic_block:
            connection.close()
        with parked():
            thread.join(max(timeout, 0))
        return _flow_run_awaited(run_id=run.id, timeout=timeout - (time.monotonic() - started))


def flow_run_start_here(*, run: FlowRun) -> None:
    """Start executing a committed, queued run in a thread of this process and return at once (a stream
    follows it in the ledger). If a worker claims it first (it was also enqueued), the thread does nothing; past the
    process's LANGRUN_WEB_RUNS_PER_PROCESS, nothing starts here and a worker runs it."""
    _flow_run_start_thread(run_id=run.id)


def _flow_run_start_thread(*, run_id) -> threading.Thread | None:
    """The thread now executing the run in this process, or None when a worker must run it: the process's slots are
    all taken, or it cannot start a thread (the slot is given back)."""
    if not web_run_slot_take():
        return None
    thread = threading.Thread(target=_flow_run_execute_thread, kwargs={"run_id": run_id}, name=f"run-{run_id}", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        web_run_slot_give()
        logger.warning("Could not start a thread to execute run %s here; a worker runs it", run_id)
        return None
    return thread


def _flow_run_execute_thread(*, run_id) -> None:
    try:
        flow_run_execute(run_id=run_id)
    except Exception:
        logger.exception("Run %s failed to execute in the request thread", run_id)
    finally:
        web_run_slot_give()
        connection.close()  # the thread's own connection; Django only closes the request thread's
