"""The Redis broker of the production profile: a lane per account taken in turns, bulk dequeue, quick runs merged,
and django-q2's own broker on a Redis older than 6.2."""

import os
import socket
import threading
import time
import uuid

import pytest
import redis
from django.conf import settings
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

import tests.components  # noqa: F401 - registers the test components
from flows import tasks
from flows.broker import BulkRedis, quick_runs_merged
from flows.models import FlowRun
from tests.helpers import run_of


def package(func, *args, **extra):
    return SignedPackage.dumps({"id": f"id-{args[0]}", "name": f"run-{args[0]}", "func": func, "args": args, "kwargs": {}, **extra})


pytestmark = pytest.mark.skipif(not settings.Q_CLUSTER.get("redis"), reason="the production profile's broker needs Redis")


@pytest.fixture
def broker():
    broker = BulkRedis(list_key=f"test-bulk-{uuid.uuid4().hex}")
    yield broker
    broker.delete_queue()


def test_the_production_profile_uses_the_bulk_broker():
    assert isinstance(get_broker(), BulkRedis)
    assert settings.Q_CLUSTER["bulk"] > 1


def test_dequeue_takes_up_to_bulk_tasks_in_order_then_the_rest(broker):
    bulk = settings.Q_CLUSTER["bulk"]
    for i in range(bulk + 3):
        broker.enqueue(f"task-{i}")
    first, second = broker.dequeue(), broker.dequeue()
    assert len(first) == bulk > 1 and len(second) == 3
    assert [t for _, t in first + second] == [f"task-{i}".encode() for i in range(bulk + 3)]
    assert broker.queue_size() == 0


def test_an_empty_queue_waits_in_blpop_and_returns_nothing(broker):
    assert not broker.dequeue()


def taken(broker) -> list[bytes]:
    return [task for _, task in broker.dequeue() or []]


def test_a_burst_of_one_accounts_tasks_holds_another_accounts_behind_one_of_them(broker, settings):
    bulk = settings.Q_CLUSTER["bulk"]
    for i in range(3 * bulk):
        broker.lane("alice").enqueue(f"alice-{i}")
    broker.lane("bob").enqueue("bob-0")
    broker.enqueue("sweep")  # the service's own tasks have a lane of their own
    first = taken(broker)
    assert first[:3] == [b"alice-0", b"bob-0", b"sweep"]
    assert first[3:] == [f"alice-{i}".encode() for i in range(1, bulk - 2)]  # each lane in arrival order
    assert broker.queue_size() == 3 * bulk - (bulk - 2)
    rest = taken(broker) + taken(broker) + taken(broker)
    assert rest == [f"alice-{i}".encode() for i in range(bulk - 2, 3 * bulk)]
    # Drained: no lane is left on the ring, and every lane's list is gone.
    assert broker.queue_size() == 0 and broker.connection.llen(broker.ring_key) == 0
    assert not broker.connection.keys(f"{broker.list_key}:a:*")


def test_lanes_take_turns_one_task_each(broker):
    for i in range(3):
        for account in ("a", "b", "c"):
            broker.lane(account).enqueue(f"{account}-{i}")
    assert taken(broker) == [f"{account}-{i}".encode() for i in range(3) for account in ("a", "b", "c")]


def test_tasks_pushed_on_the_cluster_list_without_the_script_are_taken_too(broker):
    broker.lane("alice").enqueue("alice-0")
    broker.connection.rpush(broker.list_key, "pushed-by-an-older-langrun")
    assert sorted(taken(broker)) == [b"alice-0", b"pushed-by-an-older-langrun"]
    assert broker.queue_size() == 0


def test_a_pusher_waiting_on_empty_lanes_wakes_when_a_task_arrives(broker):
    while broker.connection.lpop(broker.wake_key):  # no token left from earlier pushes
        pass
    got = []
    pusher = threading.Thread(target=lambda: got.append((taken(broker), time.monotonic())))
    pusher.start()
    time.sleep(0.3)
    pushed_at = time.monotonic()
    broker.lane("bob").enqueue("bob-0")
    pusher.join(5)
    [(tasks_taken, at)] = got
    assert tasks_taken == [b"bob-0"] and at - pushed_at < 0.5  # not at the end of the 1-s wait


def test_purge_empties_every_lane(broker):
    broker.lane("alice").enqueue("a")
    broker.enqueue("b")
    broker.purge_queue()
    assert broker.queue_size() == 0 and not taken(broker)


def test_a_push_after_redis_forgot_the_script_loads_it_again(broker):
    # Redis restarted (or SCRIPT FLUSH): the held connection's EVALSHA meets NOSCRIPT, and the push sends the script.
    broker.lane("alice").enqueue("before")
    broker.connection.script_flush()
    broker.lane("alice").enqueue("after")
    assert taken(broker) == [b"before", b"after"]


def test_a_redis_older_than_6_2_gets_django_q2s_own_broker(broker, monkeypatch):
    monkeypatch.setattr(BulkRedis, "_lanes_supported", None)
    monkeypatch.setattr(broker.connection, "info", lambda section: {"redis_version": "6.0.16"})
    broker.enqueue("a")
    broker.lane("alice").enqueue("b")
    assert broker.connection.lrange(broker.list_key, 0, -1) == [b"a", b"b"]  # one list, in arrival order
    assert broker.dequeue() == [(None, b"a")]
    assert BulkRedis._lanes_supported is False
    assert broker.dequeue() == [(None, b"b")]


def test_dequeue_merges_the_quick_runs_it_takes_together(broker):
    def package(func, run_id):
        return SignedPackage.dumps({"id": run_id, "name": run_id, "func": func, "args": (run_id,), "kwargs": {}})

    for run_id in ("q1", "q2"):
        broker.enqueue(package(tasks.execute_quick_run, run_id))
    broker.enqueue(package(tasks.execute_run, "slow"))
    broker.enqueue(package(tasks.execute_quick_run, "q3"))
    broker.enqueue(package(tasks.sweep, "sweep"))
    taken = [SignedPackage.loads(p) for _, p in broker.dequeue()]
    assert [(t["func"], t["args"]) for t in taken] == [
        (tasks.execute_run, ("slow",)),
        (tasks.sweep, ("sweep",)),
        (tasks.execute_quick_runs, ([("q1",), ("q2",), ("q3",)],)),
    ]


def test_dequeue_merges_the_other_runs_it_takes_together(broker):
    def package(func, *args):
        return SignedPackage.dumps({"id": args[0], "name": args[0], "func": func, "args": args, "kwargs": {}})

    broker.enqueue(package(tasks.execute_run, "r1", "f1"))
    broker.enqueue(package(tasks.execute_run, "r2"))
    taken = [SignedPackage.loads(p) for _, p in broker.dequeue()]
    assert [(t["func"], t["args"]) for t in taken] == [(tasks.execute_runs, ([("r1", "f1"), ("r2",)],))]


def test_a_round_trip_that_finds_fewer_than_a_batch_waits_for_the_tasks_a_moment_behind(broker, monkeypatch, settings):
    settings.LANGRUN_QUEUE_LINGER = 0.01
    slept = []

    def sleep(seconds):  # two more tasks arrive while the pusher lingers
        slept.append(seconds)
        broker.enqueue("late-1")
        broker.enqueue("late-2")

    monkeypatch.setattr("flows.broker.time.sleep", sleep)
    broker.enqueue("first")
    assert [t for _, t in broker.dequeue()] == [b"first", b"late-1", b"late-2"]
    assert slept == [0.01]
    # A full batch does not wait; neither does a queue found empty, nor a pusher told not to linger.
    for i in range(settings.Q_CLUSTER["bulk"]):
        broker.enqueue(f"task-{i}")
    assert len(broker.dequeue()) == settings.Q_CLUSTER["bulk"]
    assert not broker.dequeue()
    settings.LANGRUN_QUEUE_LINGER = 0
    broker.enqueue("alone")
    assert [t for _, t in broker.dequeue()] == [b"alone"]
    assert slept == [0.01]


# --- Enqueue on a held connection ----------------------------------------------------


def _client_ids(broker) -> set[int]:
    return {c["id"] for c in broker.connection.client_list()}


def test_enqueue_pushes_in_order_on_one_connection_it_keeps(broker):
    before = _client_ids(broker)
    for i in range(5):
        assert broker.enqueue(f"task-{i}") == i + 1  # RPUSH answers the queue's length
    opened = _client_ids(broker) - before
    assert len(opened) <= 1  # one connection of its own at most (the pool's may already have been open)
    assert broker.connection.lrange(broker.list_key, 0, -1) == [f"task-{i}".encode() for i in range(5)]


def _kill_held_connection(broker) -> None:
    """Redis closes the broker's held connection (as a restart or a client timeout would)."""
    port = broker._held.connection._sock.getsockname()[1]
    client = next(c for c in broker.connection.client_list() if c["addr"].endswith(f":{port}"))
    broker.connection.client_kill_filter(_id=client["id"])


def test_enqueue_opens_a_new_connection_when_redis_dropped_the_held_one(broker):
    broker.enqueue("before")
    held = broker._held.connection
    _kill_held_connection(broker)
    assert broker.enqueue("after") == 2
    assert broker._held.connection is not held
    assert broker.connection.lrange(broker.list_key, 0, -1) == [b"before", b"after"]


def test_an_enqueue_that_fails_twice_raises_for_the_caller_to_leave_the_run_to_the_sweep(broker, monkeypatch):
    broker.enqueue("held")
    with socket.socket() as s:  # a port nothing listens on: the new connection cannot connect
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    _kill_held_connection(broker)
    with monkeypatch.context() as patch:
        patch.setitem(broker.connection.connection_pool.connection_kwargs, "port", closed_port)
        with pytest.raises(redis.ConnectionError):
            broker.enqueue("lost")
    assert broker._held.connection is None
    assert broker.connection.lrange(broker.list_key, 0, -1) == [b"held"]


def test_a_forked_child_enqueues_on_a_connection_of_its_own(broker):
    broker.enqueue("parent-1")
    parents = broker._held.connection
    pid = os.fork()
    if pid == 0:  # the child: push, and leave without running anything of the parent's
        try:
            broker.enqueue("child")
            os._exit(0 if broker._held.connection is not parents else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert broker.enqueue("parent-2") == 3  # the parent's connection still works after the child's exit
    assert broker._held.connection is parents
    assert broker.connection.lrange(broker.list_key, 0, -1) == [b"parent-1", b"child", b"parent-2"]


def test_an_error_reply_is_raised_once_and_the_connection_kept(broker):
    broker.enqueue("first")
    held = broker._held.connection
    other = BulkRedis(list_key=f"test-bulk-{uuid.uuid4().hex}")
    other.connection.set(other.list_key, "not a list")
    other._held = broker._held  # the same thread's connection, pushing onto a key that is not a list
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            other.enqueue("refused")
        assert broker._held.connection is held  # the answer was read whole: the connection goes on
        assert broker.enqueue("second") == 2
    finally:
        other.connection.delete(other.list_key)
    assert broker.connection.lrange(broker.list_key, 0, -1) == [b"first", b"second"]


def test_a_broker_handed_over_pickled_still_enqueues(broker):
    # django-q2 pickles a broker it hands to a process started by spawn (macOS's default): no __init__ there.
    import pickle

    copy = pickle.loads(pickle.dumps(broker))
    assert copy.enqueue("from the copy") == 1
    assert broker.connection.lrange(broker.list_key, 0, -1) == [b"from the copy"]


@pytest.mark.usefixtures("execute_path")
def test_the_tasks_of_quick_runs_taken_together_become_one():
    import datetime

    at = [datetime.datetime(2026, 11, 28, 12, 0, s, tzinfo=datetime.UTC) for s in range(3)]
    other = package(tasks.execute_run, "r-slow", "f")
    packages = [
        package(tasks.execute_quick_run, "r1", "f1", started=at[1], ack_failure=True),
        other,
        package(tasks.execute_quick_run, "r2", "f2", started=at[0], ack_failure=True),
        b"not a signed package",
        package(tasks.execute_quick_run, "r3", started=at[2], ack_failure=True),
    ]
    merged = quick_runs_merged(packages)
    assert [ack for ack, _ in merged] == [None] * 3  # the slow run's task, the unreadable one, the merged one
    assert merged[:2] == [(None, other), (None, b"not a signed package")]  # passed on as they came, in order
    task = SignedPackage.loads(merged[-1][1])
    assert task["func"] is tasks.execute_quick_runs
    assert task["args"] == ([("r1", "f1"), ("r2", "f2"), ("r3",)],)
    assert (task["kwargs"], task["started"], task["ack_failure"], task["name"]) == ({}, at[0], True, "runs-r1+2")
    assert task["id"] not in {"id-r1", "id-r2", "id-r3"}


@pytest.mark.usefixtures("execute_path")
def test_a_lone_quick_task_passes_as_it_came():
    lone = package(tasks.execute_quick_run, "r1", "f1")
    assert quick_runs_merged([lone]) == [(None, lone)]


@pytest.mark.usefixtures("execute_path")
def test_the_merged_task_runs_every_run(flow, user):
    runs = [run_of(flow, user, name=name) for name in ("Ada", "Bo", "Cy")]
    [(_, merged)] = quick_runs_merged([package(tasks.execute_quick_run, str(run.id), str(flow.id)) for run in runs])
    task = SignedPackage.loads(merged)
    assert task["func"](*task["args"], **task["kwargs"]) == ["succeeded"] * 3
    assert [FlowRun.objects.get(pk=run.pk).outputs for run in runs] == [{"greeting": f"Hello {n}!"} for n in ("Ada", "Bo", "Cy")]
