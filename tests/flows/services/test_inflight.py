"""A worker process's in-flight runs (flows/services/inflight.py and inflight_ledger.py): runs that wait on the
network overlap, their nodes are recorded while they run, a cancel or the time limit stops the HTTP call in
flight, a hostile regex stalls only its own run, a run that lost its claim writes nothing, a full executor
takes no further run, and the database work goes through one thread."""

import asyncio
import threading
import time

import pytest
from django.db import connection

from flows.models import FlowRun, NodeResult, RunAttempt
from flows.services.inflight import RunExecutor, run_admit
from flows.services.inflight_ledger import LedgerThread
from flows.services.runs import flow_run_cancel
from tests.helpers import SlowAPI, http_flow, new_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _local_calls(settings):
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def executor():
    pool = RunExecutor(concurrency=250)
    yield pool
    pool.drain(5)


def wait_until(predicate, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def terminal(*runs):
    ids = [run.pk for run in runs]
    return FlowRun.objects.filter(pk__in=ids, status__in=FlowRun.TERMINAL).count() == len(ids)


def test_200_runs_calling_a_slow_server_overlap(executor, make_flow, user):
    with SlowAPI(delay=1.0) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(200)]
        started = time.monotonic()
        for run in runs:
            assert executor.admit(str(run.pk))
        wait_until(lambda: terminal(*runs), timeout=60)
        took = time.monotonic() - started
        assert api.peak >= 100  # many calls were waiting at once
    assert took < 20  # one after another: 200 s
    assert set(FlowRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {"succeeded"}
    assert NodeResult.objects.filter(run__in=runs, status="succeeded").count() == 600
    assert RunAttempt.objects.filter(run__in=runs, outcome="succeeded").count() == 200


def test_nodes_are_recorded_while_the_run_runs(executor, make_flow, user):
    with SlowAPI(delay=3.0) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        run = new_run(flow, user)
        executor.admit(str(run.pk))

        def progress():
            nodes = dict(NodeResult.objects.filter(run=run).values_list("node_id", "status"))
            return nodes if nodes.get("call") == "running" else None

        nodes = wait_until(progress, timeout=2.5)
        assert nodes["hook"] == "succeeded"
        assert "out" not in nodes or nodes["out"] in ("running", "skipped")
        assert FlowRun.objects.get(pk=run.pk).status == "running"
        wait_until(lambda: terminal(run))
    assert dict(NodeResult.objects.filter(run=run).values_list("node_id", "status")) == {
        "hook": "succeeded",
        "call": "succeeded",
        "out": "succeeded",
    }


def test_cancelling_a_running_run_closes_its_http_call_and_records_the_finished_nodes(executor, make_flow, user):
    with SlowAPI() as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60))
        run = new_run(flow, user)
        executor.admit(str(run.pk))
        assert api.hanging.wait(10)
        cancelled = flow_run_cancel(run=FlowRun.objects.get(pk=run.pk))
        assert cancelled.status == "cancelled"
        assert api.closed.wait(3)  # the worker noticed within a poll and closed the connection
    wait_until(lambda: NodeResult.objects.filter(run=run, node_id="call", status="failed").exists(), timeout=5)
    run = FlowRun.objects.get(pk=run.pk)
    assert run.status == "cancelled"
    nodes = {n.node_id: n for n in NodeResult.objects.filter(run=run)}
    assert nodes["hook"].status == "succeeded"
    assert nodes["call"].error == "Cancelled while running."
    assert nodes["out"].status == "skipped"
    assert RunAttempt.objects.get(run=run).outcome == "cancelled"


def test_the_flow_timeout_ends_a_run_waiting_on_the_network(executor, make_flow, user):
    with SlowAPI() as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60))
        flow.timeout = 1
        flow.save()
        run = new_run(flow, user)
        started = time.monotonic()
        executor.admit(str(run.pk))
        wait_until(lambda: terminal(run), timeout=10)
        assert time.monotonic() - started < 5
        assert api.closed.wait(3)
    run = FlowRun.objects.get(pk=run.pk)
    assert run.status == "failed"
    assert "time limit of 1 s" in run.error


def test_a_hostile_regex_fails_its_own_run_and_the_others_finish_on_time(executor, make_flow, user):
    hostile = make_flow(
        user=user,
        data={
            "nodes": [
                {"id": "hook", "type": "Webhook"},
                {"id": "check", "type": "Condition", "params": {"operator": "matches", "value": "^(a|aa)+$", "path": "text"}},
            ],
            "edges": [{"source": "hook", "target": "check", "target_input": "data"}],
        },
    )
    bad = FlowRun.objects.get(pk=new_run(hostile, user).pk)
    FlowRun.objects.filter(pk=bad.pk).update(payload={"text": "a" * 40 + "b"})
    with SlowAPI(delay=0.5) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(20)]
        started = time.monotonic()
        executor.admit(str(bad.pk))
        for run in runs:
            executor.admit(str(run.pk))
        wait_until(lambda: terminal(*runs), timeout=20)
        assert time.monotonic() - started < 4  # the regex's second did not hold them up
    wait_until(lambda: terminal(bad))
    bad = FlowRun.objects.get(pk=bad.pk)
    assert bad.status == "failed"
    assert "backtracks too much" in bad.error


def test_a_run_that_lost_its_claim_writes_nothing(executor, make_flow, user):
    with SlowAPI() as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60))
        run = new_run(flow, user)
        executor.admit(str(run.pk))
        assert api.hanging.wait(10)
        # What the sweep does to a run whose lease ran out: back to the queue, claimed again elsewhere.
        FlowRun.objects.filter(pk=run.pk).update(status="queued", error="interrupted")
        assert api.closed.wait(3)
    time.sleep(0.5)
    run = FlowRun.objects.get(pk=run.pk)
    assert (run.status, run.error, run.attempts) == ("queued", "interrupted", 1)


def test_a_full_executor_takes_no_further_run_until_one_ends(make_flow, user):
    pool = RunExecutor(concurrency=2)
    try:
        with SlowAPI(delay=1.0) as api:
            flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
            runs = [new_run(flow, user) for _ in range(3)]
            pool.admit(str(runs[0].pk))
            pool.admit(str(runs[1].pk))
            admitted = threading.Event()
            threading.Thread(target=lambda: (pool.admit(str(runs[2].pk)), admitted.set()), daemon=True).start()
            assert not admitted.wait(0.5)
            assert admitted.wait(5)
            wait_until(lambda: terminal(*runs))
            assert api.peak == 2
    finally:
        pool.drain(5)


def test_a_drained_executor_leaves_unfinished_runs_running_for_the_sweep(make_flow, user):
    pool = RunExecutor(concurrency=5)
    with SlowAPI() as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60))
        run = new_run(flow, user)
        pool.admit(str(run.pk))
        assert api.hanging.wait(10)
        assert pool.drain(0.2) == 1
        assert not pool.admit(str(run.pk))
    assert FlowRun.objects.get(pk=run.pk).status == "running"


def test_the_runs_database_work_goes_through_one_thread(executor, make_flow, user, monkeypatch):
    threads = set()
    from django.db.backends.utils import CursorWrapper

    execute = CursorWrapper.execute

    def spy(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return execute(self, *args, **kwargs)

    with SlowAPI(delay=0.3) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(30)]
        monkeypatch.setattr(CursorWrapper, "execute", spy)
        for run in runs:
            executor.admit(str(run.pk))
        monkeypatch.setattr(CursorWrapper, "execute", execute)
        wait_until(lambda: terminal(*runs))
    assert threads <= {"langrun-ledger"}


def test_outside_a_worker_process_runs_are_not_admitted(make_flow, user):
    run = new_run(make_flow(user=user, data=http_flow("http://127.0.0.1:9/")), user)
    assert run_admit(run_id=str(run.pk)) is False
    assert connection.vendor in ("sqlite", "postgresql")


def test_a_node_output_no_database_can_store_does_not_stop_the_progress_of_other_runs(executor, make_flow, user):
    from flows.engine import NodeResult as Node

    with SlowAPI(delay=3.0) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        good, bad = new_run(flow, user), new_run(flow, user)
        executor.admit(str(good.pk))
        wait_until(lambda: NodeResult.objects.filter(run=good, node_id="call", status="running").exists(), timeout=2.5)
        claimed = FlowRun.objects.get(pk=good.pk)
        FlowRun.objects.filter(pk=bad.pk).update(status="running", attempts=1)
        executor.ledger.progress(FlowRun.objects.get(pk=bad.pk), Node("hook", "Webhook", "succeeded", 0, output={"x": "\x00"}))
        executor.ledger.progress(claimed, Node("extra", "Output", "running", 5))
        wait_until(lambda: NodeResult.objects.filter(run=good, node_id="extra").exists(), timeout=2)
        spoiled = NodeResult.objects.get(run=bad, node_id="hook")
        assert (spoiled.status, spoiled.output) == ("failed", None) and "NUL" in spoiled.error


def test_a_run_never_outlives_the_worker_timeout_that_bounds_its_lease(executor, make_flow, user, settings):
    settings.LANGRUN_RUN_TIMEOUT = 1
    with SlowAPI() as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60))
        flow.timeout = 60
        flow.save()
        run = new_run(flow, user)
        executor.admit(str(run.pk))
        wait_until(lambda: terminal(run), timeout=10)
    run = FlowRun.objects.get(pk=run.pk)
    assert run.status == "failed" and "time limit of 1 s" in run.error


@pytest.fixture
def worker(monkeypatch):
    """A worker process's executor as its tasks see it, made by `worker(concurrency)`; the runs its tasks enqueue
    again are listed in `worker.rung`, and those they pass on in `worker.passed_on`, instead of being pushed."""
    from flows.services import inflight, queue

    pools = []

    def make(concurrency: int, per_account: int | None = None) -> RunExecutor:
        pool = RunExecutor(concurrency=concurrency, per_account=per_account)
        pools.append(pool)
        monkeypatch.setattr(inflight, "_in_worker", True)
        monkeypatch.setattr(inflight, "_executor", pool)
        return pool

    make.rung = []
    monkeypatch.setattr(queue, "flow_run_ring_by_id", lambda run_id: make.rung.append(run_id))
    make.passed_on = []

    enqueue = queue.flow_run_enqueue

    def pass_on(*, run_id, passed_on=False, **options):
        if not passed_on:  # an intake's
            return enqueue(run_id=run_id, **options)
        make.passed_on.append((run_id, options))
        return True

    monkeypatch.setattr(queue, "flow_run_enqueue", pass_on)
    yield make
    for pool in pools:
        pool.drain(5)


def test_merged_runs_a_full_worker_cannot_take_are_enqueued_again_for_another(make_flow, user, worker):
    from flows import tasks

    worker(concurrency=1)
    with SlowAPI(delay=0.5) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(3)]
        assert tasks.execute_runs([(str(r.pk), str(flow.pk)) for r in runs]) == ["admitted", "enqueued", "enqueued"]
        assert worker.rung == [str(runs[1].pk), str(runs[2].pk)]
        wait_until(lambda: terminal(runs[0]))
        # The first run waits for a slot, as its own task would.
        started = time.monotonic()
        assert tasks.execute_runs([(str(runs[1].pk),), (str(runs[2].pk),)]) == ["admitted", "enqueued"]
        assert tasks.execute_runs([(str(runs[2].pk),)]) == ["admitted"]
        assert time.monotonic() - started >= 0.4
        wait_until(lambda: terminal(*runs))
    assert set(FlowRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {"succeeded"}


def test_a_merged_task_that_meets_a_full_worker_hands_the_rest_on_before_it_waits(make_flow, user, worker):
    """Only the first run of the task waits for this worker's slot; the others are queued again at once, for a worker
    with room, not after that wait."""
    from flows import tasks

    pool = worker(concurrency=1)
    statuses = []
    with SlowAPI(delay=1.0) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(3)]
        assert pool.admit(str(runs[0].pk))  # the worker is full
        merged = threading.Thread(target=lambda: statuses.extend(tasks.execute_runs([(str(r.pk),) for r in runs[1:]])))
        merged.start()
        wait_until(lambda: worker.rung, timeout=0.5)
        assert worker.rung == [str(runs[2].pk)] and not terminal(runs[0])
        merged.join(10)
        assert statuses == ["admitted", "enqueued"]
        wait_until(lambda: terminal(runs[0], runs[1]))


def test_a_worker_that_filled_up_takes_no_further_task_until_it_has_room_for_a_batch(make_flow, user, worker, monkeypatch):
    """A task that leaves its worker full returns once a batch would fit again: a full worker that took the next
    merged task would admit none of it and enqueue every run again, over and over while a backlog waits."""
    from django_q.conf import Conf

    from flows import tasks

    pool = worker(concurrency=16)  # room for a batch: min(bulk, an eighth of the concurrency) = 2
    monkeypatch.setattr(Conf, "BULK", 30)
    with SlowAPI(delay=1.0) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(16)]
        for run in runs[:15]:
            assert pool.admit(str(run.pk))
        started = time.monotonic()
        assert tasks.execute_runs([(str(runs[15].pk),)]) == ["admitted"]
        took = time.monotonic() - started
        assert 0.5 <= took < 5 and pool.concurrency - pool.in_flight >= 2
        # A worker with room returns at once.
        started = time.monotonic()
        assert tasks.execute_runs([(str(new_run(flow, user).pk),)]) == ["admitted"]
        assert time.monotonic() - started < 0.5
        wait_until(lambda: pool.in_flight == 0)
    assert worker.rung == []


def test_a_run_asked_for_twice_in_one_batch_of_claims_is_started_once(make_flow, user):
    # A doorbell rung twice can bring both of its tasks to one worker at once: one claim, one execution.
    run = new_run(make_flow(user=user, data=http_flow("http://127.0.0.1:9/")), user)
    loop = asyncio.new_event_loop()
    try:
        ledger = LedgerThread(loop)
        first, second = loop.create_future(), loop.create_future()
        ledger._claims([(str(run.pk), first), (str(run.pk), second)])
        loop.run_until_complete(asyncio.sleep(0))
        started = [future.result() for future in (first, second)]
    finally:
        loop.close()
    assert [start is not None for start in started] == [True, False]
    assert started[0].run.attempts == 1 and RunAttempt.objects.filter(run=run).count() == 1


def test_a_paused_flows_runs_are_told_apart_once_per_batch_of_claims(make_flow, user):
    # A paused flow's doorbells must not cost the worker's database thread a claim each (which other runs wait behind).
    from django.test.utils import CaptureQueriesContext

    from flows.services.pause import flow_pause

    flow = make_flow(user=user, data=http_flow("http://127.0.0.1:9/"))
    flow_pause(flow=flow)
    loop = asyncio.new_event_loop()
    costs = []
    try:
        ledger = LedgerThread(loop)
        for size in (2, 12):
            runs = [new_run(flow, user) for _ in range(size)]
            futures = [loop.create_future() for _ in runs]
            with CaptureQueriesContext(connection) as queries:
                ledger._claims([(str(run.pk), future) for run, future in zip(runs, futures, strict=True)])
            loop.run_until_complete(asyncio.sleep(0))
            assert [future.result() for future in futures] == [None] * size
            costs.append(len(queries))
    finally:
        loop.close()
    assert costs[0] == costs[1]
    assert FlowRun.objects.filter(flow=flow, status=FlowRun.Status.QUEUED, attempts=0).count() == 14


def test_a_task_waiting_for_room_returns_when_its_worker_drains_or_its_wait_runs_out(make_flow, user):
    pool = RunExecutor(concurrency=1)
    try:
        with SlowAPI() as api:
            run = new_run(make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60)), user)
            assert pool.admit(str(run.pk))  # full until the drain
            assert api.hanging.wait(10)
            started = time.monotonic()
            pool.room_wait(1, seconds=0.3)  # never more than its bound, well inside django-q2's task timeout
            assert 0.25 <= time.monotonic() - started < 2
            waiter = threading.Thread(target=pool.room_wait, args=(1,))
            waiter.start()
            time.sleep(0.2)
            assert waiter.is_alive()
            pool.drain(0.5)
            waiter.join(2)
            assert not waiter.is_alive()
    finally:
        pool.drain(0.1)


def test_one_accounts_runs_leave_room_for_another_accounts(make_flow, make_user, user, enqueued):
    """Alice's runs hang on a server that never answers: past her share of the worker's slots they wait in the
    worker, without holding it, and bob's run is admitted at once and finishes while hers still hang."""
    pool = RunExecutor(concurrency=4, per_account=3)
    bob = make_user("bob")
    try:
        with SlowAPI(delay=0.2) as api:
            hanging = make_flow(user=user, data=http_flow(api.url + "/hang", timeout=60))
            quick = make_flow(user=bob, data=http_flow(api.url + "/slow"))
            hers = [new_run(hanging, user) for _ in range(6)]
            admitted = threading.Event()

            def admit_hers():
                for run in hers:
                    pool.admit(str(run.pk), account=str(user.pk))
                admitted.set()

            threading.Thread(target=admit_hers, daemon=True).start()
            assert admitted.wait(5)  # none of them held the worker
            wait_until(lambda: pool.in_flight == 3)
            his = new_run(quick, bob)
            assert pool.admit(str(his.pk), account=str(bob.pk))
            wait_until(lambda: terminal(his), timeout=10)
            assert FlowRun.objects.get(pk=his.pk).status == "succeeded"
            statuses = sorted(FlowRun.objects.filter(pk__in=[r.pk for r in hers]).values_list("status", flat=True))
            assert statuses == ["queued"] * 3 + ["running"] * 3
            rung_before = len(enqueued)  # each run's intake rang for it
            assert pool.drain(0.2) == 3
            # Her waiting runs go back to the queue, in her lane, for another worker.
            assert sorted(enqueued[rung_before:]) == sorted(str(r.pk) for r in hers[3:])
            assert {enqueued.options[str(r.pk)]["account"] for r in hers[3:]} == {str(user.pk)}
    finally:
        pool.drain(1)
    assert sorted(FlowRun.objects.filter(pk__in=[r.pk for r in hers]).values_list("status", flat=True)) == ["queued"] * 3 + ["running"] * 3


def test_a_run_waiting_for_its_accounts_share_starts_when_one_of_its_runs_ends(make_flow, user):
    pool = RunExecutor(concurrency=4, per_account=2)
    try:
        with SlowAPI(delay=0.5) as api:
            flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
            runs = [new_run(flow, user) for _ in range(5)]
            for run in runs:
                assert pool.admit(str(run.pk), account=str(user.pk))
            wait_until(lambda: terminal(*runs), timeout=20)
            assert api.peak == 2
    finally:
        pool.drain(5)
    assert set(FlowRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {"succeeded"}


def test_a_task_takes_its_accounts_share_of_the_worker(make_flow, user, worker):
    """The account travels with the task (flows.services.queue): a merged task of one account's runs leaves the worker
    room for another account's. Its runs past the share go back to the account's lane once, for a worker with room;
    come back, they wait in this one rather than going round again."""
    from flows import tasks

    worker(concurrency=2, per_account=1)
    with SlowAPI(delay=0.5) as api:
        flow = make_flow(user=user, data=http_flow(api.url + "/slow"))
        runs = [new_run(flow, user) for _ in range(4)]
        args = [(str(r.pk), str(flow.pk), str(user.pk)) for r in runs]
        assert tasks.execute_runs(args[:3]) == ["admitted", "passed on", "passed on"]
        assert tasks.execute_run(*args[3]) == "passed on"
        assert worker.passed_on == [(a[0], {"flow_id": a[1], "account": a[2]}) for a in args[1:]]
        assert tasks.execute_runs([(*a, True) for a in args[1:3]]) == ["admitted", "admitted"]
        assert tasks.execute_run(*args[3], True) == "admitted"
        wait_until(lambda: FlowRun.objects.filter(status="succeeded").count() == 4, timeout=20)
        assert api.peak == 1
    assert worker.rung == [] and len(worker.passed_on) == 3


class GatedExecutor(RunExecutor):
    """An executor whose runs touch no database: each runs until the test ends it (`end`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []

    def _gate(self, run_id: str) -> asyncio.Event:  # on the loop's thread
        return self.gates.setdefault(run_id, asyncio.Event())

    async def _execute(self, run_id: str) -> None:
        self.started.append(run_id)
        await self._gate(run_id).wait()

    def end(self, run_id: str) -> None:
        self.loop.call_soon_threadsafe(lambda: self._gate(run_id).set())

    def drain(self, seconds: float = 1.0) -> int:
        self.admitting = False
        for run_id in list(self.started):
            self.end(run_id)
        return super().drain(seconds)


def test_a_task_waiting_for_room_returns_when_runs_end_though_held_runs_take_their_slots():
    """Alice's and carol's runs fill the worker, each with runs waiting for her share. When one of alice's ends, her
    held run takes its slot at once; the task waiting for room must not wait out its whole bound for a slot that stays
    free (it never does while held runs refill them): it returns, so that the worker takes its next task, whose run
    (bob's, say) gets the next slot that comes free before the held ones."""
    pool = GatedExecutor(concurrency=4, per_account=2)
    try:
        for n in range(3):
            assert pool.admit(f"a{n}", account="alice", wait=False)
            assert pool.admit(f"c{n}", account="carol", wait=False)
        wait_until(lambda: len(pool.started) == 4)
        assert (pool.in_flight, pool.held_count) == (4, 2)
        waiter = threading.Thread(target=pool.room_wait, args=(1,), kwargs={"seconds": 10})
        waiter.start()
        time.sleep(0.1)
        assert waiter.is_alive()
        pool.end("a0")
        wait_until(lambda: "a2" in pool.started, timeout=2)  # her held run took the slot
        waiter.join(2)
        assert not waiter.is_alive()
        # The next task's run gets the next slot that comes free, before the held runs.
        bobs = threading.Thread(target=pool.admit, args=("b0",), kwargs={"account": "bob"})
        bobs.start()
        time.sleep(0.1)
        pool.end("c0")
        bobs.join(2)
        wait_until(lambda: "b0" in pool.started, timeout=2)
        assert "c2" not in pool.started
    finally:
        pool.drain()


def test_a_slot_that_comes_free_goes_to_the_held_account_with_fewest_runs_in_flight():
    """Alice's and carol's runs both wait for slots: one that comes free goes to whichever of them has fewer runs in
    flight, so that the two converge on equal parts, not to the account whose runs were held first (which then kept
    its whole share while the other kept what it had)."""
    pool = GatedExecutor(concurrency=4, per_account=3)
    try:
        for n in range(5):
            assert pool.admit(f"c{n}", account="carol", wait=False)  # three in flight, two held
        assert pool.admit("a0", account="alice", wait=False)
        for n in (1, 2):  # alice's runs wait for slots, and get them before carol's held runs
            admit = threading.Thread(target=pool.admit, args=(f"a{n}",), kwargs={"account": "alice"})
            admit.start()
            time.sleep(0.1)
            pool.end(f"c{n - 1}")
            admit.join(2)
            wait_until(lambda n=n: f"a{n}" in pool.started, timeout=2)
        assert pool.accounts == {"carol": 1, "alice": 3}
        for n in range(3, 6):
            assert pool.admit(f"a{n}", account="alice", wait=False)  # held: she has her share
        pool.end("a0")
        wait_until(lambda: len(pool.started) == 7, timeout=2)
        assert pool.accounts == {"carol": 2, "alice": 2}
        pool.end("a1")
        wait_until(lambda: len(pool.started) == 8, timeout=2)
        pool.end("a2")
        wait_until(lambda: len(pool.started) == 9, timeout=2)
        assert pool.accounts == {"carol": 2, "alice": 2}
    finally:
        pool.drain()


def test_a_worker_with_one_accounts_share_in_flight_takes_further_tasks_while_its_reserve_is_free(monkeypatch):
    """Alice's runs hang with her share of the worker in flight; its reserved slots are free for the other accounts. A
    task that passed her next run on must not then wait for room for a batch larger than that reserve (an eighth of
    the slots, up to a batch, is more than a tenth): the worker would take bob's run one task per ROOM_WAIT_SECONDS."""
    from django_q.conf import Conf

    from flows import tasks
    from flows.services import inflight, queue

    pool = GatedExecutor(concurrency=110, per_account=100)  # room for a batch: min(bulk, 110 // 8) = 13; reserve 10
    monkeypatch.setattr(inflight, "_in_worker", True)
    monkeypatch.setattr(inflight, "_executor", pool)
    monkeypatch.setattr(Conf, "BULK", 30)
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda **options: True)
    try:
        for n in range(100):
            assert pool.admit(f"{n:08x}-0000-4000-8000-000000000000", account="alice", wait=False)
        wait_until(lambda: len(pool.started) == 100, timeout=2)
        statuses = []
        task = threading.Thread(target=lambda: statuses.extend(tasks.execute_runs([("a1" * 16, None, "alice")])))
        task.start()
        task.join(2)
        assert not task.is_alive() and statuses == ["passed on"]
    finally:
        pool.drain()
