"""The django-q2 Redis broker: a lane per account taken in turns, tasks taken in bulk, quick runs batched.

django-q2's Redis broker is one list, first in first out: a burst of one account's webhooks put every other
account's runs behind all of it. Here a run's task goes to its account's lane (a list of its own), as does the task
releasing a resumed flow's next page of held runs (behind the page before), and every other task (the sweep's,
django-q2's schedules) to the cluster's list, itself a lane. A ring lists the lanes
that hold tasks, and the pusher takes one task from each lane in turn: another account's run waits behind one task
of each busy account, not behind their backlogs. A lane is on the ring exactly while it holds tasks (both kept in
step by a script of Redis's own, atomically). An enqueue that makes a lane busy also leaves a wake-up token, for a
pusher waiting while every lane was empty.

django-q2's Redis broker pops one task per round trip (BLPOP). With a backlog, the
cluster's pusher then spends a round trip of CPU per run, on the same cores that accept webhooks. One script takes
up to Q_CLUSTER["bulk"] tasks, in turns, in one round trip; with every lane empty the pusher blocks on the wake-up
list (BLPOP), so an idle cluster wakes as soon as a task arrives. Tasks taken but not yet handed to a worker
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

# Push a task on a lane (KEYS[1]); a lane that was empty joins the ring (KEYS[2]) and leaves a wake-up token (KEYS[3]).
_PUSH = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
if n == 1 then
  redis.call('RPUSH', KEYS[2], KEYS[1])
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 15)
end
return n
"""

# Take up to ARGV[1] tasks, one from each lane on the ring (KEYS[1]) in turn; a lane left empty leaves the ring. The
# cluster's list (KEYS[2]) joins the ring when it holds tasks pushed without the script (by an older langrun).
_TAKE = """
local ring, main, bulk = KEYS[1], KEYS[2], tonumber(ARGV[1])
if redis.call('LLEN', main) > 0 and not redis.call('LPOS', ring, main) then
  redis.call('RPUSH', ring, main)
end
local taken = {}
while #taken < bulk do
  local lanes = redis.call('LLEN', ring)
  if lanes == 0 then break end
  local lane = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  -- One task per turn; a lane alone on the ring gives the rest of the batch at once.
  local tasks = redis.call('LPOP', lane, lanes == 1 and bulk - #taken or 1)
  if tasks then
    for _, task in ipairs(tasks) do taken[#taken + 1] = task end
  end
  if redis.call('LLEN', lane) == 0 then redis.call('LREM', ring, 0, lane) end
end
return taken
"""


class BulkRedis(StatsKept, Redis):
    # Decided on first use: the take script's LMOVE and LPOS need Redis 6.2. An older Redis gets django-q2's own
    # broker (one list, one task per round trip).
    _lanes_supported: bool | None = None

    def __init__(self, list_key: str | None = None):
        super().__init__(list_key=list_key)
        self._held = threading.local()
        self._lanes()

    def _lanes(self) -> None:
        self.ring_key = f"{self.list_key}:ring"
        self.wake_key = f"{self.list_key}:wake"
        self._push = self.connection.register_script(_PUSH)
        self._take = self.connection.register_script(_TAKE)

    def lane(self, account) -> Lane:
        """What async_task takes as its broker to push a task on `account`'s lane."""
        return Lane(self, f"{self.list_key}:a:{account}")

    def __setstate__(self, state):  # a broker handed to a spawned process arrives pickled, without __init__
        super().__setstate__(state)
        self._held = threading.local()
        self._lanes()

    def enqueue(self, task, lane: str | None = None):
        """Push the task on its lane (the cluster's list when none is given), on a connection this broker keeps for
        the thread (and the process).

        redis-py's client takes a connection from its pool on every command (a lock, a poll of the
        socket, its metrics) and wraps the command in its retry machinery: together more than a third
        of an enqueue's CPU, paid on every webhook. Here the connection stays with its thread. The pool
        replaced a connection it found stale before using it; here a connection that fails (Redis
        restarted, a timeout) is dropped and the command tried once more on a new one. A push whose
        answer timed out may so arrive twice: the run's second task finds it claimed and does nothing.
        An error reply (a full Redis) is raised as it is, and the connection kept.
        """
        try:
            return self._rpush(task, lane or self.list_key)
        except (redis.ConnectionError, redis.TimeoutError):
            return self._rpush(task, lane or self.list_key)

    def _lanes_on(self) -> bool:
        if BulkRedis._lanes_supported is None:
            version = str(self.connection.info("server").get("redis_version", "0"))
            BulkRedis._lanes_supported = tuple(int(part) for part in version.split(".")[:2]) >= (6, 2)
            if not BulkRedis._lanes_supported:
                logger.warning("Redis %s has no LMOVE (6.2): tasks are taken one by one, in arrival order", version)
        return BulkRedis._lanes_supported

    def _rpush(self, task, lane: str):
        lanes = self._lanes_on()
        connection = self._held_connection()
        try:
            if not lanes:
                connection.send_command("RPUSH", self.list_key, task)
                return connection.read_response()
            try:
                connection.send_command("EVALSHA", self._push.sha, 3, lane, self.ring_key, self.wake_key, task)
                return connection.read_response()
            except redis.exceptions.NoScriptError:  # the first push since Redis started: the script is loaded
                connection.send_command("EVAL", _PUSH, 3, lane, self.ring_key, self.wake_key, task)
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
        if not self._lanes_on():
            return super().dequeue()
        tasks = self._taken(Conf.BULK)
        if not tasks and self.connection.blpop(self.wake_key, 1):  # every lane was empty: wait for a push
            tasks = self._taken(Conf.BULK)
        if not tasks:
            return None
        linger = settings.LANGRUN_QUEUE_LINGER
        if linger > 0 and len(tasks) < Conf.BULK:
            # Tasks are arriving, fewer than a batch: the ones a moment behind join this batch.
            time.sleep(linger)
            tasks += self._taken(Conf.BULK - len(tasks))
        return quick_runs_merged(tasks)

    def _taken(self, bulk: int) -> list:
        return self._take(keys=[self.ring_key, self.list_key], args=[max(bulk, 1)]) or []

    def queue_size(self) -> int:
        lanes = {key.decode() if isinstance(key, bytes) else key for key in self.connection.lrange(self.ring_key, 0, -1)}
        lanes.add(self.list_key)
        with self.connection.pipeline(transaction=False) as pipe:
            for lane in lanes:
                pipe.llen(lane)
            return sum(pipe.execute())

    def purge_queue(self):
        self._delete_lanes()

    def delete_queue(self):
        return self._delete_lanes()

    def _delete_lanes(self) -> int:
        lanes = list(self.connection.lrange(self.ring_key, 0, -1))
        return self.connection.delete(self.list_key, self.ring_key, self.wake_key, *lanes)


class Lane:
    """A broker bound to one account's lane, for async_task (which calls `enqueue` and reads `list_key`)."""

    __slots__ = ("broker", "key")

    def __init__(self, broker: BulkRedis, key: str):
        self.broker, self.key = broker, key

    @property
    def list_key(self) -> str:
        return self.key

    def enqueue(self, task):
        return self.broker.enqueue(task, lane=self.key)


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
