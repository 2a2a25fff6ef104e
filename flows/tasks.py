"""django-q2 task entry points. They take ids, and call services."""

import logging
import time

from django.utils import timezone

from flows.metrics import RECOVERED, SWEEP_LAST_RUN, metric_counter_add
from flows.models import FlowRun
from flows.services import queue
from flows.services.execution import flow_run_execute, flow_runs_execute
from flows.services.inflight import run_admit, run_executor, run_room_wait
from flows.services.sweep import flow_runs_sweep
from langrun.logs import log_context

logger = logging.getLogger(__name__)


def execute_run(run_id: str, flow_id: str | None = None, account: str | None = None, passed_on: bool = False) -> str | None:
    """Execute a run. In a cluster's worker process the run joins the process's in-flight runs
    (flows/services/inflight.py), within its `account`'s share of them, and the task returns once it is admitted
    (execute_runs says how); elsewhere (django-q2's sync mode, an operator's call) it executes here and now."""
    if run_executor() is None:
        return _execute_here(run_id, flow_id)
    return execute_runs([(run_id, flow_id, account, passed_on)])[0]


def execute_runs(runs: list[tuple[str, ...]]) -> list[str | None]:
    """Several runs' execute_run tasks taken together by the Redis broker (flows/broker.py), in one task.

    `runs` holds each run's execute_run arguments. In a worker the runs join this worker's in-flight runs while it has
    room, and the rest are enqueued again at once for whichever worker has room first (they must not wait behind
    this worker's slowest runs). When this worker has no room at all, the first run waits for a slot, as its own
    task would, after the others have been handed on. The task returns once the worker has room for a batch again
    (run_room_wait), so runs are rarely handed on. Outside a worker each executes here.

    A run whose account has its share of this worker in flight is passed on once, back to its account's lane, for a
    worker that may have room for it (several workers take tasks as they come, and one that holds runs it cannot start
    yet would keep them from another's free slots); passed on already, it waits in this worker (RunExecutor), which
    then takes its next task at once, another account's perhaps.
    """
    executor = run_executor()
    if executor is None:
        return [execute_run(*args) for args in runs]

    def admit(args: tuple, *, wait: bool) -> str | None:
        run_id, flow_id, account, passed_on = (*args, None, None, None)[:4]  # execute_run's arguments, as its task carried them
        if (
            not passed_on
            and executor.at_share(account)
            and queue.flow_run_enqueue(run_id=run_id, flow_id=flow_id, account=account, passed_on=True)
        ):
            return "passed on"
        return "admitted" if run_admit(run_id=run_id, flow_id=flow_id, account=account, wait=wait) else None

    def hand_on(args: tuple) -> str:
        queue.flow_run_ring_by_id(args[0])  # back in its account's lane
        return "enqueued"

    statuses: list[str | None] = [admit(args, wait=False) for args in runs]
    waiting = None if "admitted" in statuses or None not in statuses else statuses.index(None)
    for i, args in enumerate(runs):
        if statuses[i] is None and i != waiting:
            statuses[i] = hand_on(args)
    if waiting is not None:  # a draining worker admits nothing: the run goes back to the queue
        statuses[waiting] = admit(runs[waiting], wait=True) or hand_on(runs[waiting])
    run_room_wait()
    return statuses


def execute_quick_run(run_id: str, flow_id: str | None = None) -> str | None:
    """A run of a quick flow (made only of quick components), executed here: its work is a few milliseconds of
    CPU, which an event loop would not shorten. The Redis broker may merge its task with others into execute_quick_runs."""
    return _execute_here(run_id, flow_id)


def _execute_here(run_id: str, flow_id: str | None) -> str | None:
    if flow_id is None:  # enqueued by the sweep or an operator command
        flow_id = FlowRun.objects.filter(pk=run_id).values_list("flow_id", flat=True).first()
    with log_context(run_id=run_id, flow_id=flow_id):
        started = time.monotonic()
        run = flow_run_execute(run_id=run_id)
        if run is not None:
            logger.info(
                "Run %s in %.3f s (version %s)", run.status, time.monotonic() - started, run.version.number if run.version_id else "-"
            )
        return run.status if run else None


def execute_quick_runs(runs: list[tuple[str, ...]]) -> list[str]:
    """Several quick runs in one task: claimed in one statement, executed one after another, recorded in one statement.

    `runs` holds each run's execute_quick_run arguments (its id, and its flow's id when known).
    Returns the status of each run executed here.
    """
    started = time.monotonic()
    executed = flow_runs_execute(run_ids=[args[0] for args in runs])
    took = time.monotonic() - started
    for run in executed:
        with log_context(run_id=run.id, flow_id=run.flow_id):
            version = run.version.number if run.version_id else "-"
            logger.info("Run %s (version %s), one of %d in %.3f s", run.status, version, len(runs), took)
    return [run.status for run in executed]


def sweep() -> dict[str, int]:
    counts = flow_runs_sweep()
    # Only runs whose worker was lost: due retries and doorbells rung again are the queue's ordinary work.
    if counts["recovered"]:
        metric_counter_add(name=f"{RECOVERED}_total", amount=counts["recovered"])
    metric_counter_add(name=SWEEP_LAST_RUN, amount=timezone.now().timestamp(), set_value=True)
    return counts


def prune() -> dict:
    from flows.retention import runs_prune

    return runs_prune().as_dict()


def release_held_runs(flow_id: str, resumed_at: str) -> int:
    """The next page of a resumed flow's held runs (flows/services/pause.py); it rings for the page after itself."""
    from datetime import datetime

    from flows.services.pause import flow_runs_release_page

    with log_context(flow_id=flow_id):
        return flow_runs_release_page(flow_id=flow_id, resumed_at=datetime.fromisoformat(resumed_at))


def replay_job_step(job_id: str, step: int | None = None) -> str | None:
    """One batch of a bulk replay job (flows/services/replays.py); it rings for the next itself."""
    from flows.services.replays import replay_job_step as replay_step

    job = replay_step(job_id=job_id, step=step)
    return job.status if job is not None else None


def run_schedule(schedule_id: str, intended_at: str | None = None) -> str | None:
    """One firing of a flow's schedule (django-q2's scheduler calls it): records the run, which a worker then executes."""
    from flows.services.schedules import flow_schedule_fire

    run = flow_schedule_fire(schedule_id=schedule_id, intended_at=intended_at)
    return str(run.pk) if run else None
