"""The django-q2 Redis broker, with a dequeue that takes the waiting tasks in bulk and batches quick runs.

django-q2's Redis broker pops one task per round trip (BLPOP). With a backlog, the
cluster's pusher then spends a round trip of CPU per run, on the same cores that accept webhooks. `LPOP key count` takes up to
Q_CLUSTER["bulk"] tasks in one round trip; an empty queue still blocks in BLPOP, so an
idle cluster wakes as soon as a task arrives. Tasks taken but not yet handed to a worker
are lost if the cluster dies, like those already in its task queue: their runs stay
`queued` in the ledger and the sweep enqueues them again.

Of the tasks taken together, those of quick runs (`execute_quick_run`: flows made only of
components that never wait) become one `execute_quick_runs` task, which claims, executes
and records them with two statements in all instead of two per run, and passes through
the cluster's queues once. The tasks of other runs taken together become one `execute_runs` task, which a
worker admits to its in-flight runs one by one (flows/services/inflight.py). Other tasks pass through as they came. When a round trip finds
some tasks waiting but fewer than a batch, the pusher waits LANGRUN_QUEUE_LINGER seconds
and takes those that arrived meanwhile too: while webhooks stream in, runs go to the
workers in fuller batches. A task that finds the queue empty is taken at once (BLPOP).
"""

from __future__ import annotations

import os
import threading
import time

import redis
from django.conf import settings
from django.utils import timezone
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf, logger
from django_q.humanhash import uuid
from django_q.signing import SignedPackage

from flows.health import StatsKept
from flows.services.queue import QUICK_RUN_TASK, RUN_TASK


class BulkRedis(StatsKept, Redis):
    _bulk_supported = True  # LPOP with a count needs Redis 6.2

    def __init__(self, list_key: str | None = None):
        super().__init__(list_key=list_key)
        self._held = threading.local()

    def __setstate__(self, state):  # a broker handed to a spawned process arrives pickled, without __init__
        super().__setstate__(state)
        self._held = threading.local()

    def enqueue(self, task):
        """RPUSH the task on a connection this broker keeps for the thread (and the process).

        redis-py's client takes a connection from its pool on every command (a lock, a poll of the
        socket, its metrics) and wraps the command in its retry machinery: together more than a third
        of an enqueue's CPU, paid on every webhook. Here the connection stays with its thread. The pool
        replaced a connection it found stale before using it; here a connection that fails (Redis
        restarted, a timeout) is dropped and the command tried once more on a new one. A push whose
        answer timed out may so arrive twice: the run's second task finds it claimed and does nothing.
        An error reply (a full Redis) is raised as it is, and the connection kept.
        """
        try:
            return self._rpush(task)
        except (redis.ConnectionError, redis.TimeoutError):
            return self._rpush(task)

    def _rpush(self, task):
        connection = self._held_connection()
        try:
            connection.send_command("RPUSH", self.list_key, task)
            return connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            self._held.connection = None
            raise

    def _held_connection(self):
        held = self._held
        # A forked child must not talk on its parent's socket: it opens its own.
        if getattr(held, "connection", None) is None or held.pid != os.getpid():
            # Built from the pool's settings but not counted in the pool, which never gets it back: its
            # max_connections (from REDIS_URL) stays for the connections it hands out.
            pool = self.connection.connection_pool
            held.connection, held.pid = pool.connection_class(**pool.connection_kwargs), os.getpid()
        return held.connection

    def dequeue(self):
        if Conf.BULK > 1 and self._bulk_supported:
            try:
                tasks = self.connection.lpop(self.list_key, Conf.BULK)
            except redis.ResponseError:
                logger.warning("This Redis cannot pop several tasks at once (it needs 6.2); taking them one by one")
                BulkRedis._bulk_supported = False
            else:
                if tasks:
                    linger = settings.LANGRUN_QUEUE_LINGER
                    if linger > 0 and len(tasks) < Conf.BULK:
                        # Tasks are arriving, fewer than a batch: the ones a moment behind join this batch.
                        time.sleep(linger)
                        tasks += self.connection.lpop(self.list_key, Conf.BULK - len(tasks)) or []
                    return quick_runs_merged(tasks)
        return super().dequeue()


def quick_runs_merged(packages: list) -> list[tuple[None, bytes | str]]:
    """The task packages as the pusher takes them, those of two or more quick runs merged into one task, and
    those of two or more other runs into another (which a worker admits to its in-flight runs one by one).

    A package that cannot be read passes through unchanged: the pusher logs and drops it, as before.
    """
    from flows import tasks

    groups: dict = {tasks.execute_quick_runs: [], tasks.execute_runs: []}
    taken = []  # (package, its group or None)
    for package in packages:
        try:
            task = SignedPackage.loads(package)
        except Exception:  # the pusher meets the same error, and handles it as it always did
            task = None
        # By its dotted path, as the doorbell pushes it, or the function itself (async_task takes either).
        func = task.get("func") if task is not None else None
        group = None
        if func in (QUICK_RUN_TASK, tasks.execute_quick_run):
            group = tasks.execute_quick_runs
        elif func in (RUN_TASK, tasks.execute_run) and not task.get("kwargs"):
            group = tasks.execute_runs
        if group is not None:
            groups[group].append(task)
        taken.append((package, group))
    # Tasks that are not merged keep their order; the merged ones follow.
    passed: list[tuple[None, bytes | str]] = [(None, package) for package, group in taken if group is None or len(groups[group]) == 1]
    for merged_func, group in groups.items():
        if len(group) > 1:
            passed.append((None, SignedPackage.dumps(_merged(merged_func, group))))
    return passed


def _merged(func, group: list[dict]) -> dict:
    first = group[0]
    runs = [tuple(task["args"]) for task in group]
    merged = {key: value for key, value in first.items() if key not in ("id", "name", "func", "args", "kwargs", "started")}
    merged.update(id=uuid()[1], name=f"runs-{runs[0][0]}+{len(runs) - 1}", func=func, args=(runs,), kwargs={})
    started = [task["started"] for task in group if task.get("started")]
    merged["started"] = min(started) if started else timezone.now()
    return merged
