"""The one database thread of a worker process's in-flight runs (flows/services/inflight.py).

Every claim, progress write, finish and cancel check of the runs on the process's event loop goes
through this thread and its one Django connection, batched: whatever the concurrency, a worker
process holds one connection for them. The loop hands work over with `call()` (an asyncio future
it awaits) and `progress()` (a node's result, written within FLUSH_SECONDS); the thread tells a
run it lost its claim (cancelled, or taken by the sweep) through the callback given to `watch()`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from django.db import close_old_connections, connection, transaction

from flows import engine
from flows.models import FlowRun, NodeResult
from flows.services.execution import (
    _flow_run_claim_general,
    _flow_run_concluded,
    _flow_run_finish,
    _flow_run_prepared,
    _flow_runs_finish_returning,
    _graph_parsed,
    _returning_sql,
    flow_runs_claim_batch,
)
from flows.services.storable import RunOutcome, _outcome_storable, node_result_row

logger = logging.getLogger(__name__)

# Node progress is written this often (a node's result is at most this late in the ledger) ...
FLUSH_SECONDS = 0.25
# ... and in-flight runs are checked for a cancel or a lost claim this often.
POLL_SECONDS = 0.5
# Ids per statement when checking in-flight runs (SQLite's older builds take at most 999 parameters).
CHUNK = 500

CLAIM, END, STOP = "claim", "end", "stop"
_NODE_FIELDS = ["component_type", "status", "output", "error", "traceback", "duration_ms", "order"]


class Start(NamedTuple):
    """A claimed run, ready to execute (graph and context), or with the outcome of a run that cannot start."""

    run: FlowRun
    graph: engine.Graph | None = None
    context: engine.RunContext | None = None
    outcome: RunOutcome | None = None


class LedgerThread:
    """One thread, one connection: the database work of every run in flight in this process."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.ops: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.pending: dict[tuple[Any, int], dict[str, engine.NodeResult]] = {}  # (run pk, attempt) -> node id -> latest
        self.watched: dict[Any, tuple[int, Callable[[bool], None]]] = {}  # run pk -> (attempt, on_lost)
        self.thread = threading.Thread(target=self._main, name="langrun-ledger", daemon=True)
        self.last_flush = self.last_poll = 0.0

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is pending, close the connection, end the thread (waits at most `timeout` seconds)."""
        self.ops.put((STOP, None, None))
        self.thread.join(timeout)

    # --- Called on the event loop ------------------------------------------------------------------

    def call(self, kind: str, arg: Any) -> asyncio.Future:
        future = self.loop.create_future()
        self.ops.put((kind, arg, future))
        return future

    def progress(self, run: FlowRun, node: engine.NodeResult) -> None:
        """on_node of a run: keep the node's latest result for the next write."""
        with self.lock:
            self.pending.setdefault((run.pk, run.attempts), {})[node.node_id] = node

    def watch(self, run: FlowRun, on_lost: Callable[[bool], None]) -> None:
        """Call `on_lost(cancelled)` (from this thread) when the run is no longer `running` under this claim:
        `cancelled` is True when someone cancelled it, False when the claim was lost otherwise."""
        with self.lock:
            self.watched[run.pk] = (run.attempts, on_lost)

    def unwatch(self, run: FlowRun) -> None:
        with self.lock:
            self.watched.pop(run.pk, None)

    # --- The thread ----------------------------------------------------------------------------------

    def _main(self) -> None:
        stopping = False
        while not stopping:
            try:  # wakes up FLUSH_SECONDS apart when idle too: a flush or a check of nothing costs no query
                batch = [self.ops.get(timeout=FLUSH_SECONDS)]
            except queue.Empty:
                batch = []
            while True:
                try:
                    batch.append(self.ops.get_nowait())
                except queue.Empty:
                    break
            stopping = any(kind == STOP for kind, _, _ in batch)
            claims = [(arg, future) for kind, arg, future in batch if kind == CLAIM]
            ends = [(arg, future) for kind, arg, future in batch if kind == END]
            close_old_connections()  # a connection the database dropped is replaced, not used
            self._guarded(self._claims, claims)
            if ends:  # their finish writes every node: what they reported meanwhile need not be written first
                with self.lock:
                    for (run, _), _ in ends:
                        self.pending.pop((run.pk, run.attempts), None)
            now = time.monotonic()
            if stopping or now - self.last_flush >= FLUSH_SECONDS:
                self.last_flush = now
                self._guarded(self._flush, None)
            if now - self.last_poll >= POLL_SECONDS:
                self.last_poll = now
                self._guarded(self._poll, None)
            self._guarded(self._ends, ends)
        connection.close()

    def _guarded(self, step: Callable, items: list | None) -> None:
        """Run a step; should it raise, its runs' futures get the exception (their runs are left to the sweep)."""
        try:
            step(items) if items is not None else step()
        except Exception as exc:
            logger.exception("The in-flight runs' database step %s failed", getattr(step, "__name__", step))
            for _, future in items or ():
                self._resolve(future, exc=exc)

    def _resolve(self, future: asyncio.Future, value: Any = None, exc: BaseException | None = None) -> None:
        def settle() -> None:
            if not future.done():
                future.set_exception(exc) if exc is not None else future.set_result(value)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

    def _claims(self, items: list[tuple[str, asyncio.Future]]) -> None:
        if not items:
            return
        batch, held = flow_runs_claim_batch(run_ids=list(dict.fromkeys(run_id for run_id, _ in items)))
        claimed = {str(run.pk): (run, functools.partial(_graph_parsed, data_text, tweaks_text)) for run, data_text, tweaks_text in batch}
        for run_id, future in items:
            try:
                if run_id in held:
                    taken = None
                else:  # once, were it asked for twice
                    taken = claimed.pop(run_id, None) or _flow_run_claim_general(run_id=run_id)
                if taken is None:
                    self._resolve(future, None)
                    continue
                run, parse = taken
                if run.attempts > 1:  # rows an earlier attempt wrote while it ran
                    NodeResult.objects.filter(run_id=run.pk).delete()
                prepared = _flow_run_prepared(run, parse)
                if isinstance(prepared, RunOutcome):
                    self._resolve(future, Start(run, outcome=prepared))
                else:
                    self._resolve(future, Start(run, *prepared))
            except Exception as exc:
                logger.exception("Run %s could not be claimed", run_id)
                self._resolve(future, exc=exc)

    def _flush(self) -> None:
        """Write the node results reported since the last flush, for the runs still `running` under their claim."""
        with self.lock:
            pending, self.pending = self.pending, {}
        if not pending:
            return
        with transaction.atomic():
            # Locked, so that a cancel or the sweep cannot slip between this check and the write.
            current = set(
                FlowRun.objects.select_for_update()
                .filter(pk__in={pk for pk, _ in pending}, status=FlowRun.Status.RUNNING)
                .values_list("pk", "attempts")
            )
            rows = [
                node_result_row(pk, n)
                for (pk, attempt), nodes in pending.items()
                if (pk, attempt) in current
                for n in _storable(nodes.values())
            ]
            if rows:
                NodeResult.objects.bulk_create(rows, update_conflicts=True, unique_fields=["run", "node_id"], update_fields=_NODE_FIELDS)

    def _poll(self) -> None:
        """Tell the runs that are no longer `running` under their claim (cancelled, or recovered by the sweep)."""
        with self.lock:
            watched = dict(self.watched)
        if not watched:
            return
        pks = list(watched)
        seen = {}
        for at in range(0, len(pks), CHUNK):
            seen.update(
                {
                    pk: (status, attempts)
                    for pk, status, attempts in FlowRun.objects.filter(pk__in=pks[at : at + CHUNK]).values_list("pk", "status", "attempts")
                }
            )
        for pk, (attempt, on_lost) in watched.items():
            status, attempts = seen.get(pk, (None, None))
            if status == FlowRun.Status.RUNNING and attempts == attempt:
                continue
            with self.lock:
                still = self.watched.pop(pk, None)
            if still is not None:
                on_lost(status == FlowRun.Status.CANCELLED and attempts == attempt)

    def _ends(self, items: list[tuple[tuple[FlowRun, Any], asyncio.Future]]) -> None:
        """Record the ends of runs: finished (first attempts in one statement), sent back for a retry, or cancelled."""
        firsts = []
        for (run, result), future in items:
            try:
                if isinstance(result, RunOutcome):
                    outcome = result  # the run could not start
                elif result.status == FlowRun.Status.CANCELLED:
                    self._resolve(future, _flow_run_record_cancelled(run, result.nodes))
                    continue
                else:
                    outcome = _flow_run_concluded(run, result)
                if outcome is None:
                    self._resolve(future, run)  # back in the queue for its next attempt
                elif run.attempts == 1 and _returning_sql():
                    firsts.append(((run, outcome), future))
                else:
                    self._resolve(future, _flow_run_finish(run, **outcome._asdict()))
            except Exception as exc:
                logger.exception("Run %s's end could not be recorded; it stays running until the sweep recovers it", run.pk)
                self._resolve(future, exc=exc)
        if firsts:
            try:
                finished = _flow_runs_finish_returning([item for item, _ in firsts])
            except Exception as exc:
                logger.exception("The finish of %d runs failed; they stay running until the sweep recovers them", len(firsts))
                for _, future in firsts:
                    self._resolve(future, exc=exc)
                return
            for run, (_, future) in zip(finished, firsts, strict=True):
                self._resolve(future, run)


def _flow_run_record_cancelled(run: FlowRun, nodes: list[engine.NodeResult]) -> FlowRun:
    """A run cancelled while it ran (flow_run_cancel ended it): record what its nodes did, under the same claim."""
    with transaction.atomic():
        if FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.CANCELLED, attempts=run.attempts).exists():
            NodeResult.objects.bulk_create(
                [
                    node_result_row(run.pk, n, status=NodeResult.Status.FAILED if n.status == NodeResult.Status.RUNNING else n.status)
                    for n in _storable(nodes)
                ],
                update_conflicts=True,
                unique_fields=["run", "node_id"],
                update_fields=_NODE_FIELDS,
            )
    run.status = FlowRun.Status.CANCELLED
    return run


def _storable(nodes) -> list[engine.NodeResult]:
    """The nodes as the ledger can hold them (an output no database can store is dropped, the node failed, as the
    finish does): one node's output must not sink the progress of the other runs written with it."""
    return _outcome_storable(RunOutcome(FlowRun.Status.RUNNING, None, "", list(nodes))).nodes
