"""One thread per web process that reads the run ledger for all of the process's requests waiting on it.

A caller waiting for a run (`?wait=`, the synchronous run, a flow's answer) parks (langrun.waits): it gives its
database connection back and blocks until this thread sees its run end. An open event stream parks between its
reads of the ledger, and reads again when this thread rings its doorbell: when what it follows (a run, or a flow's
webhook runs) changed. However many wait, a process reads the ledger with one connection and a query or two per
tick, and only while someone waits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q
from django.utils import timezone

from flows.models import FlowRun, NodeResult

logger = logging.getLogger(__name__)

# How often the ledger is read while anyone waits: a quick run's caller gets its answer at most this late.
TICK = 0.05
# Ids per query (SQLite's older builds take at most 999 parameters).
CHUNK = 500
_NODE_DONE = Q(node_results__status__in=[NodeResult.Status.SUCCEEDED, NodeResult.Status.FAILED, NodeResult.Status.SKIPPED])


class Doorbell:
    """A stream's: rung when what it follows may have changed."""

    def __init__(self, follows: tuple):
        self.follows = follows  # ("run", run_id) or ("flow", flow_id, opened_at)
        self._rung = threading.Event()
        self.signature = None

    def ring(self) -> None:
        self._rung.set()

    def wait(self, timeout: float) -> bool:
        """Block until rung (True) or `timeout` seconds passed (False); the next wait waits for the next ring."""
        rung = self._rung.wait(max(timeout, 0))
        self._rung.clear()
        return rung


class LedgerWatch:
    """The runs this process's requests wait for, and the thread that tells them when their run ended."""

    def __init__(self, *, tick: float = TICK):
        self.tick = tick
        self._lock = threading.Condition()
        self._waiting: dict[str, list[threading.Event]] = {}
        self._doorbells: list[Doorbell] = []
        self._streams_read_at = 0.0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def follow(self, follows: tuple) -> Doorbell:
        """A doorbell for a stream that follows a run (`("run", id)`) or a flow's webhook runs received since a time
        (`("flow", id, since)`); `unfollow` it when the stream ends."""
        doorbell = Doorbell(follows)
        with self._lock:
            self._doorbells.append(doorbell)
            self._start()
            self._lock.notify()
        return doorbell

    def unfollow(self, doorbell: Doorbell) -> None:
        with self._lock:
            if doorbell in self._doorbells:
                self._doorbells.remove(doorbell)

    def wait_for_end(self, *, run_id, timeout: float) -> bool:
        """Block until the run is terminal (True) or `timeout` seconds passed (False). Holds no database connection."""
        ended = threading.Event()
        key = str(run_id)
        with self._lock:
            self._waiting.setdefault(key, []).append(ended)
            self._start()
            self._lock.notify()
        try:
            return ended.wait(max(timeout, 0))
        finally:
            with self._lock:
                events = self._waiting.get(key, [])
                if ended in events:
                    events.remove(ended)
                if not events:
                    self._waiting.pop(key, None)

    def _start(self) -> None:
        # A forked process inherits the object but not the thread.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="ledger-watch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._waiting and not self._doorbells:
                    connection.close()  # idle: the connection goes back (to the pool, where there is one)
                while not self._waiting and not self._doorbells:
                    self._lock.wait()
                keys = list(self._waiting)
                doorbells = list(self._doorbells)
            try:
                ended = self._ended(keys) if keys else set()
                if doorbells and time.monotonic() - self._streams_read_at >= settings.LANGRUN_STREAM_POLL:
                    self._streams_read_at = time.monotonic()
                    self._ring(doorbells)
            except Exception:
                logger.exception("Could not read the ledger for the requests waiting on it; trying again")
                connection.close()
                ended = set()
            if ended:
                with self._lock:
                    for key in ended:
                        for event in self._waiting.get(key, []):
                            event.set()
            time.sleep(self.tick)

    def _ring(self, doorbells: list[Doorbell]) -> None:
        """Ring the doorbells whose signature changed since the last read. (A stream also reads by itself before each
        keep-alive, so a change no signature shows is late, never lost.)"""
        runs = {d.follows[1] for d in doorbells if d.follows[0] == "run"}
        flows = [d.follows for d in doorbells if d.follows[0] == "flow"]
        signatures = {("run", pk): sig for pk, sig in self._run_signatures(runs).items()} if runs else {}
        if flows:
            signatures.update({("flow", pk): sig for pk, sig in self._flow_signatures(flows).items()})
        for doorbell in doorbells:
            signature = signatures.get(doorbell.follows[:2], ())
            if signature != doorbell.signature:
                doorbell.signature = signature
                doorbell.ring()

    @staticmethod
    def _run_signatures(run_ids) -> dict:
        """Per run: its status and how many of its nodes started and finished."""
        found = {}
        for chunk in _chunks([str(pk) for pk in run_ids]):
            rows = (
                FlowRun.objects.filter(pk__in=chunk)
                .values_list("pk", "status")
                .annotate(nodes=Count("node_results"), done=Count("node_results", filter=_NODE_DONE))
                .order_by()
            )
            found.update({str(pk): (status, nodes, done) for pk, status, nodes, done in rows})
        return found

    @staticmethod
    def _flow_signatures(follows: list[tuple]) -> dict:
        """Per flow: its webhook runs received since the earliest follower opened, that are going or ended lately,
        counted by stage, and their nodes, started and finished."""
        since = min(opened for _, _, opened in follows)
        lately = timezone.now() - timedelta(seconds=10)
        rows = (
            FlowRun.objects.filter(
                flow_id__in={flow_id for _, flow_id, _ in follows}, trigger=FlowRun.Trigger.WEBHOOK, received_at__gte=since
            )
            .filter(Q(finished_at__isnull=True) | Q(finished_at__gte=lately))
            .values("flow_id")
            .annotate(
                runs=Count("id", distinct=True),
                started=Count("id", filter=~Q(status=FlowRun.Status.QUEUED), distinct=True),
                ended=Max("finished_at"),
                nodes=Count("node_results"),
                done=Count("node_results", filter=_NODE_DONE),
            )
            .order_by()
        )
        return {str(row.pop("flow_id")): tuple(row.values()) for row in rows}

    @staticmethod
    def _ended(keys: list[str]) -> set[str]:
        ended = set()
        for chunk in _chunks(keys):
            rows = FlowRun.objects.filter(pk__in=chunk, status__in=FlowRun.TERMINAL).values_list("pk", flat=True)
            ended.update(str(pk) for pk in rows)
        return ended


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]


WATCH = LedgerWatch()
