"""Many runs in flight in one worker process: an event loop in a background thread executes them.

A django-q2 worker process executes one task at a time. Its run task (flows.tasks.execute_run) hands
the run's id to this process's RunExecutor and returns as soon as the run is admitted; while
LANGRUN_RUN_CONCURRENCY runs are in flight it blocks, so the worker takes no further task and the
queue keeps the rest (memory stays bounded). The runs' database work (claim, node progress, finish,
cancel checks) goes through one thread with one connection (flows/services/inflight_ledger.py), so a
process holds one connection whatever the concurrency. The ledger's guarantees are the general
path's: the claim is conditional and fenced by the attempt number, every write of the run is
conditional on that claim, and a run this process never finishes (it was killed, or its drain ran
out of time) stays `running` until the sweep recovers it after its lease.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from multiprocessing import parent_process
from multiprocessing.util import Finalize

from django.conf import settings

from flows import engine
from flows.models import FlowRun
from flows.services import queue
from flows.services.execution import _flow_run_timeout
from flows.services.inflight_ledger import CLAIM, END, LedgerThread
from langrun.logs import log_context

logger = logging.getLogger(__name__)

# When a worker process exits (recycled, or the cluster stops), the runs in flight get this long to finish;
# the ones still going are left `running` for the sweep.
DRAIN_SECONDS = 10.0
# The longest a task waits for its worker to have room again (room_wait): well inside django-q2's task timeout, which
# would kill the worker process and every run in flight in it.
ROOM_WAIT_SECONDS = 30.0
# Runs past their account's share that may wait in the executor, per slot (RunExecutor).
HELD_PER_SLOT = 10


class RunExecutor:
    """Up to `concurrency` runs in flight on one event loop, in a thread of this process; at most `per_account` of
    them one account's.

    An account's runs past its share wait in the executor (not in a slot, and not holding the worker's task) and
    start, oldest first, as slots come free while the account is under its share; so one account's runs that wait
    long on the network never take every slot, and another account's run finds one. At most HELD_PER_SLOT per slot
    wait so (each is two ids); past that, admitting one more of them blocks (or is refused) as a full executor does.
    """

    def __init__(self, *, concurrency: int, per_account: int | None = None):
        self.concurrency = max(concurrency, 1)
        self.per_account = min(max(per_account or self.concurrency, 1), self.concurrency)
        self.in_flight = 0
        self.accounts: dict[str, int] = {}  # runs in flight per account
        self.held: dict[str, deque[tuple[str, str | None]]] = {}  # runs waiting for their account's share
        self.held_count = 0
        self.blocked = 0  # admits waiting for a slot: a slot that comes free is theirs before a held run's
        self.ended = 0  # runs ended, ever (room_wait)
        self.idle = threading.Condition()
        self.admitting = True
        self.loop = asyncio.new_event_loop()
        self.ledger = LedgerThread(self.loop)
        self.thread = threading.Thread(target=self.loop.run_forever, name="langrun-runs", daemon=True)
        self.thread.start()
        self.ledger.start()

    def admit(self, run_id: str, flow_id: str | None = None, *, account: str | None = None, wait: bool = True) -> bool:
        """Start executing a run on the loop, or hold it while its `account` has its share in flight; blocks while
        the executor is full (or, with `wait=False`, returns False). False once the executor drains."""
        with self.idle:
            while True:
                if not self.admitting:
                    return False
                over_share = self.at_share(account)
                if over_share and self.held_count < self.concurrency * HELD_PER_SLOT:
                    self.held.setdefault(account, deque()).append((run_id, flow_id))
                    self.held_count += 1
                    starting = []
                    break
                if not over_share and self.in_flight < self.concurrency:
                    self._take_slot(account)
                    starting = [(run_id, flow_id, account)]
                    break
                if not wait:
                    return False
                self.blocked += not over_share  # one waiting for room among the held does not keep them from starting
                try:
                    self.idle.wait()
                finally:
                    self.blocked -= not over_share
            starting += self._held_to_start()
        for run in starting:
            asyncio.run_coroutine_threadsafe(self._run(*run), self.loop)
        return True

    def at_share(self, account: str | None) -> bool:
        """Whether a run of `account` admitted now would be held: its share is in flight, or runs of its wait already
        (behind which its runs queue, so that they start in the order they came)."""
        return account is not None and (account in self.held or self.accounts.get(account, 0) >= self.per_account)

    def _take_slot(self, account: str | None) -> None:
        self.in_flight += 1
        if account is not None:
            self.accounts[account] = self.accounts.get(account, 0) + 1

    def _held_to_start(self) -> list[tuple[str, str | None, str]]:
        """Held runs that free slots now go to (called with `idle` held): one per account under its share in turn,
        fewest in flight first (so that accounts whose runs all wait converge on equal parts), while no admit waits
        for a slot."""
        starting = []
        while self.admitting and not self.blocked and self.in_flight < self.concurrency:
            ready = [account for account in self.held if self.accounts.get(account, 0) < self.per_account]
            ready.sort(key=lambda account: self.accounts.get(account, 0))
            if not ready:
                break
            for account in ready:
                if self.in_flight >= self.concurrency:
                    break
                waiting = self.held[account]
                run_id, flow_id = waiting.popleft()
                if not waiting:
                    del self.held[account]
                self.held_count -= 1
                self._take_slot(account)
                starting.append((run_id, flow_id, account))
        return starting

    def room_wait(self, room: int, seconds: float = ROOM_WAIT_SECONDS) -> None:
        """Block until `room` more runs could be admitted, or `room` runs ended (held runs may have taken their slots:
        the next task's runs get the next slots that come free before them), the executor drains, or `seconds` pass.
        Never more room than the slots kept beyond one account's share: with an account's share in flight, those are
        all the other accounts have, and waiting for more would keep their runs in the queue while those slots are
        free, until the account's runs end."""
        room = min(max(room, 1), (self.concurrency - self.per_account) or self.concurrency)
        with self.idle:
            ended = self.ended
            self.idle.wait_for(
                lambda: not self.admitting or self.concurrency - self.in_flight >= room or self.ended - ended >= room, timeout=seconds
            )

    def drain(self, seconds: float = DRAIN_SECONDS) -> int:
        """Admit no further run, wait up to `seconds` for those in flight, then stop; returns how many were left.
        Held runs never start here: they go back to the queue, each in its account's lane, for another worker."""
        self.admitting = False
        deadline = time.monotonic() + seconds
        with self.idle:
            held = [(run_id, flow_id, account) for account, runs in self.held.items() for run_id, flow_id in runs]
            self.held.clear()
            self.held_count = 0
            self.idle.notify_all()  # a task waiting for room returns
        for run_id, flow_id, account in held:
            queue.flow_run_enqueue(run_id=run_id, flow_id=flow_id, account=account)
        with self.idle:
            self.idle.wait_for(lambda: self.in_flight == 0, timeout=seconds)
            left = self.in_flight
        if left:
            logger.warning("%d runs were still in flight when their worker stopped; the sweep will recover them", left)
        self.ledger.stop(timeout=max(deadline - time.monotonic(), 1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        return left

    async def _run(self, run_id: str, flow_id: str | None, account: str | None = None) -> None:
        try:
            with log_context(run_id=run_id, flow_id=flow_id):
                await self._execute(run_id)
        except Exception:
            logger.exception("Run %s failed to execute; if it was claimed, it stays running until the sweep recovers it", run_id)
        finally:
            with self.idle:
                self.in_flight -= 1
                self.ended += 1
                if account is not None:
                    left = self.accounts[account] - 1
                    if left:
                        self.accounts[account] = left
                    else:
                        del self.accounts[account]
                starting = self._held_to_start()
                self.idle.notify_all()
            for held in starting:
                self.loop.create_task(self._run(*held))

    async def _execute(self, run_id: str) -> None:
        started = time.monotonic()
        start = await self.ledger.call(CLAIM, run_id)
        if start is None:
            logger.info("Run %s is not claimable now; nothing to do", run_id)
            return
        run = start.run
        if start.outcome is not None:
            run = await self.ledger.call(END, (run, start.outcome))
        else:
            result = await self._graph(run, start.graph, start.context)
            if result is None:
                return
            run = await self.ledger.call(END, (run, result))
        version = run.version.number if run.version_id else "-"
        logger.info("Run %s in %.3f s (version %s)", run.status, time.monotonic() - started, version)

    async def _graph(self, run: FlowRun, graph: engine.Graph, context: engine.RunContext) -> engine.RunResult | None:
        """Execute the run's graph, recording its nodes as they go; None when the run lost its claim meanwhile."""
        cancel = asyncio.Event()
        cancelled_here = []

        def lost(cancelled: bool) -> None:  # called by the ledger thread
            def stop() -> None:
                cancelled_here.append(cancelled)
                cancel.set()

            self.loop.call_soon_threadsafe(stop)

        self.ledger.watch(run, lost)
        try:
            result = await engine.run_graph_async(
                graph,
                context=context,
                timeout=_flow_run_timeout(run),
                on_node=lambda node: self.ledger.progress(run, node),
                cancel=cancel,
            )
        finally:
            self.ledger.unwatch(run)
        if cancelled_here and not cancelled_here[0]:
            logger.warning("Run %s attempt %d lost its claim while running; its result is discarded", run.pk, run.attempts)
            return None
        return result


_executor: RunExecutor | None = None
_in_worker = False


def worker_spawned(sender=None, **kwargs) -> None:
    """django-q2's post_spawn: this process is a cluster's worker. (django-q2's `sync` mode calls the worker
    function in the caller's own process, which has no parent process: its runs stay synchronous.)"""
    global _in_worker
    _in_worker = parent_process() is not None


def in_worker() -> bool:
    """Whether this process is a cluster's worker (not django-q2's sync mode, nor a web process or a command)."""
    return _in_worker


def run_executor() -> RunExecutor | None:
    """This worker process's executor (started on first use), or None outside a cluster's worker process."""
    global _executor
    if not _in_worker:
        return None
    if _executor is None:
        concurrency = settings.LANGRUN_RUN_CONCURRENCY
        _executor = RunExecutor(concurrency=concurrency + settings.LANGRUN_RUN_CONCURRENCY_RESERVE, per_account=concurrency)
        # multiprocessing runs its finalizers when a worker process ends (atexit handlers are not run there).
        Finalize(_executor, _executor.drain, exitpriority=100)
    return _executor


def run_admit(*, run_id: str, flow_id: str | None = None, account: str | None = None, wait: bool = True) -> bool:
    """Hand a run to this worker process's executor (within its `account`'s share, RunExecutor); False outside a
    worker, or when it is full and `wait` is False. An id that is no run's is logged and dropped (True)."""
    executor = run_executor()
    if executor is None:
        return False
    try:
        run_id = str(uuid.UUID(str(run_id)))
    except ValueError:
        logger.error("Task for %r, which is not a run id; ignored", run_id)
        return True
    return executor.admit(run_id, flow_id, account=account, wait=wait)


def run_room_wait() -> None:
    """Return once this worker process has room for a batch of runs (what the Redis broker merges into one task, at
    most an eighth of its concurrency). A task that admitted runs calls this before it returns, so that a full worker
    takes no further task: it could admit none of it, and would enqueue every run again, over and over while a backlog
    waits. The queue keeps the runs meanwhile, for whichever worker has room first."""
    from django_q.conf import Conf

    executor = run_executor()
    if executor is not None:
        executor.room_wait(min(Conf.BULK or 1, executor.concurrency // 8))
