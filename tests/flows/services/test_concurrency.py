"""flows.services.concurrency: runs limited per key (concurrency) and per period (throttle) wait queued, never refused."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services import concurrency, queue
from flows.services.concurrency import run_control_key_value, run_control_release_keys, run_control_wait
from flows.services.execution import _flow_run_finish, flow_run_claim, flow_run_execute
from flows.services.runs import flow_run_cancel, flow_run_create
from flows.services.sweep import flow_runs_requeue_stale


def _limit(flow, **fields) -> Flow:
    Flow.objects.filter(pk=flow.pk).update(**fields)
    flow.refresh_from_db()
    return flow


def _run(flow, customer, **request) -> FlowRun:
    return flow_run_create(
        flow=flow,
        user=flow.user,
        trigger="webhook",
        payload={"name": "Ada", "customer": customer},
        request={"method": "POST", "headers": request.get("headers", {}), "query": request.get("query", {})},
    )


def _finish(run) -> None:
    running = FlowRun.objects.select_related("flow").get(pk=run.pk)
    _flow_run_finish(running, status="succeeded", outputs={}, error="", nodes=[])


def _status(run) -> str:
    return FlowRun.objects.get(pk=run.pk).status


@pytest.fixture
def later(monkeypatch):
    """The doorbells set for later (a throttled run's window), as (run id, when)."""
    calls = []
    monkeypatch.setattr(queue, "flow_run_enqueue_later", lambda *, run_id, at: calls.append((str(run_id), at)))
    return calls


# --- The key --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("payload.customer", "cus_1"),
        ("payload.n", "42"),
        ("payload.obj", '{"a":1,"b":2}'),
        ("payload.missing", ""),
        ('headers."x-tenant"', "acme"),
        ("query.region", "eu"),
        ("abs(payload.customer)", ""),  # a function given the wrong type: no value
    ],
)
def test_a_key_is_evaluated_over_headers_query_and_payload(expression, expected):
    request = {"headers": {"x-tenant": "acme"}, "query": {"region": "eu"}}
    payload = {"customer": "cus_1", "n": 42, "obj": {"b": 2, "a": 1}}
    assert run_control_key_value(expression, request=request, payload=payload) == expected


def test_a_long_or_unprintable_key_is_stored_as_its_digest():
    assert run_control_key_value("payload.k", request=None, payload={"k": "x" * 300}).startswith("sha256:")
    assert run_control_key_value("payload.k", request=None, payload={"k": "a\nb"}).startswith("sha256:")


def test_the_keys_are_recorded_once_at_intake(flow):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer", throttle_limit=5, throttle_period=60, throttle_key="")
    run = _run(flow, "cus_1")
    assert (run.concurrency_key, run.throttle_key) == ("cus_1", "")
    row = FlowRun.objects.get(pk=run.pk)
    assert (row.concurrency_key, row.throttle_key) == ("cus_1", "")


def test_a_flow_without_run_control_records_no_keys(flow):
    run = _run(flow, "cus_1")
    assert (run.concurrency_key, run.throttle_key) == (None, None)
    _limit(flow, max_concurrent_runs=2)  # keyless: the flow's limit, as before
    assert _run(flow, "cus_1").concurrency_key is None


# --- Concurrency per key --------------------------------------------------------------------------------------


def test_at_most_limit_runs_per_key_run_and_other_keys_are_not_held(flow, enqueued, execute_path):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    a1, a2, b1 = _run(flow, "a"), _run(flow, "a"), _run(flow, "b")
    assert flow_run_claim(run_id=a1.id)
    assert flow_run_execute(run_id=a2.id) is None
    assert (_status(a2), FlowRun.objects.get(pk=a2.pk).attempts) == ("queued", 0)  # waiting, no attempt burned
    assert flow_run_execute(run_id=b1.id).status == "succeeded"
    enqueued.clear()
    _finish(a1)  # a slot of key "a" comes free: its next run is rung
    assert enqueued == [str(a2.id)]
    assert flow_run_execute(run_id=a2.id).status == "succeeded"


def test_a_keys_runs_start_in_received_order(flow, enqueued, execute_path):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    first, second, third = _run(flow, "a"), _run(flow, "a"), _run(flow, "a")
    assert flow_run_claim(run_id=first.id)
    _finish(first)
    # The third's doorbell comes first: it waits behind the second, which starts first.
    assert flow_run_execute(run_id=third.id) is None
    wait = run_control_wait(run=FlowRun.objects.get(pk=third.pk), flow=flow)
    assert (wait.reason, wait.key, wait.behind) == ("concurrency", "a", True)
    assert flow_run_execute(run_id=second.id).status == "succeeded"
    assert flow_run_execute(run_id=third.id).status == "succeeded"


def test_a_run_waiting_for_its_retry_does_not_hold_the_younger_ones(flow, enqueued):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    older, younger = _run(flow, "a"), _run(flow, "a")
    FlowRun.objects.filter(pk=older.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5), attempts=1)
    assert flow_run_execute(run_id=younger.id).status == "succeeded"


def test_a_limit_of_two_lets_two_run_per_key(flow, enqueued):
    _limit(flow, max_concurrent_runs=2, concurrency_key="payload.customer")
    runs = [_run(flow, "a") for _ in range(3)]
    assert flow_run_claim(run_id=runs[0].id) and flow_run_claim(run_id=runs[1].id)
    assert not flow_run_claim(run_id=runs[2].id)


def test_cancelling_a_running_run_frees_its_slot(flow, enqueued, django_capture_on_commit_callbacks):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    first, second = _run(flow, "a"), _run(flow, "a")
    assert flow_run_claim(run_id=first.id)
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        flow_run_cancel(run=FlowRun.objects.get(pk=first.pk))
    assert enqueued == [str(second.id)]


def test_cancelling_a_queued_run_rings_the_younger_run_of_its_key_that_waited_behind_it(
    flow, enqueued, django_capture_on_commit_callbacks, execute_path
):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    older, younger = _run(flow, "a"), _run(flow, "a")
    assert flow_run_execute(run_id=younger.id) is None  # its doorbell came first: it waits behind the older one
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        flow_run_cancel(run=FlowRun.objects.get(pk=older.pk))
    assert enqueued == [str(younger.id)]  # not left to the sweep, minutes later
    assert flow_run_execute(run_id=younger.id).status == "succeeded"


def test_the_sweep_rings_a_waiting_run_whose_key_has_a_free_slot(flow, enqueued):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    a_running, a_waiting, b_waiting = _run(flow, "a"), _run(flow, "a"), _run(flow, "b")
    assert flow_run_claim(run_id=a_running.id)
    FlowRun.objects.filter(status="queued").update(enqueued_at=timezone.now() - timedelta(minutes=5))  # their doorbells lost
    enqueued.clear()
    assert flow_runs_requeue_stale() == 0  # a key's runs are rung per key ...
    assert run_control_release_keys(older_than=timedelta(seconds=60)) == 1  # ... when it has a free slot
    assert enqueued == [str(b_waiting.id)]
    assert _status(a_waiting) == "queued"


def test_the_sweep_rings_the_keyed_runs_of_a_flow_whose_limit_was_removed(flow, enqueued):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    runs = [_run(flow, "a") for _ in range(2)]
    _limit(flow, max_concurrent_runs=None, concurrency_key="")
    FlowRun.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))
    enqueued.clear()
    assert run_control_release_keys(older_than=timedelta(seconds=60)) == 2
    assert sorted(enqueued) == sorted(str(r.id) for r in runs)


def _keys_waiting(flow, keys: int) -> list[FlowRun]:
    """A waiting run for each of `keys` keys, the oldest first, and a second run of each key behind it. Recorded the
    other way round, newest key first, and their doorbells (lost) too: neither order is the one the sweep keeps."""
    now = timezone.now()
    heads = []
    for i in range(keys):
        head, behind = _run(flow, f"k{i}"), _run(flow, f"k{i}")
        rung = now - timedelta(minutes=5 + keys - i)
        FlowRun.objects.filter(pk=head.pk).update(received_at=now - timedelta(minutes=2 * i + 2), enqueued_at=rung)
        FlowRun.objects.filter(pk=behind.pk).update(received_at=now - timedelta(minutes=2 * i + 1), enqueued_at=rung)
        heads.append(head)
    return heads[::-1]


def test_the_sweep_rings_the_keys_whose_runs_waited_longest_first(flow, enqueued):
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    heads = _keys_waiting(flow, 8)
    enqueued.clear()
    assert run_control_release_keys(older_than=timedelta(seconds=60), limit=3) == 3
    assert enqueued == [str(run.id) for run in heads[:3]]
    assert run_control_release_keys(older_than=timedelta(seconds=60)) == 5  # the rest, in their order too
    assert enqueued[3:] == [str(run.id) for run in heads[3:]]


@pytest.mark.parametrize(
    "limits",
    [
        {"max_concurrent_runs": 1, "concurrency_key": "payload.customer"},
        {"throttle_limit": 1, "throttle_period": 60, "throttle_key": "payload.customer"},
    ],
)
def test_the_sweep_reads_its_waiting_keys_in_the_same_queries_whatever_their_number(make_flow, user, enqueued, limits):
    from django.test.utils import CaptureQueriesContext

    costs = []
    for keys in (3, 30):
        FlowRun.objects.all().delete()
        flow = _limit(make_flow(user, endpoint_name=f"keys-{keys}"), **limits)
        _keys_waiting(flow, keys)
        enqueued.clear()
        with CaptureQueriesContext(connection) as queries:
            assert run_control_release_keys(older_than=timedelta(seconds=60)) == keys
        costs.append(len(queries))
    assert costs[0] == costs[1]


# --- Throttle -------------------------------------------------------------------------------------------------


def test_a_throttle_lets_limit_runs_per_key_start_per_period(flow, enqueued, later, execute_path):
    _limit(flow, throttle_limit=2, throttle_period=60, throttle_key="payload.customer")
    a = [_run(flow, "a") for _ in range(3)]
    b = _run(flow, "b")
    assert flow_run_execute(run_id=a[0].id).status == "succeeded"
    assert flow_run_execute(run_id=a[1].id).status == "succeeded"
    assert flow_run_execute(run_id=a[2].id) is None  # the third of key "a" in the period waits ...
    assert flow_run_execute(run_id=b.id).status == "succeeded"  # ... key "b" does not
    first_start = FlowRun.objects.get(pk=a[0].pk).started_at
    assert later == [(str(a[2].id), first_start + timedelta(seconds=60))]  # rung when the window lets it start
    # The window slides past the first two starts: the third starts.
    FlowRun.objects.filter(pk__in=[a[0].pk, a[1].pk]).update(started_at=timezone.now() - timedelta(seconds=61))
    assert flow_run_execute(run_id=a[2].id).status == "succeeded"


def test_a_throttled_start_rings_for_the_next_of_its_key(flow, enqueued, later, django_capture_on_commit_callbacks):
    _limit(flow, throttle_limit=1, throttle_period=60)  # no key: one window for the flow
    first, second, third = _run(flow, None), _run(flow, None), _run(flow, None)
    assert first.throttle_key == ""
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert flow_run_claim(run_id=first.id)
    assert enqueued == [str(second.id)]  # which then waits for the window, with its timer
    assert not flow_run_claim(run_id=second.id)
    assert [run_id for run_id, _ in later] == [str(second.id)]
    assert not flow_run_claim(run_id=third.id)  # behind the second: no timer of its own
    assert [run_id for run_id, _ in later] == [str(second.id)]


def test_a_throttled_flow_leaves_the_hand_written_claim(flow, enqueued, later):
    _limit(flow, throttle_limit=1, throttle_period=60)
    runs = [_run(flow, None) for _ in range(2)]
    assert flow_run_execute(run_id=runs[0].id).status == "succeeded"
    assert flow_run_execute(run_id=runs[1].id) is None


def test_a_timer_rings_later_outside_sync_mode(monkeypatch):
    from django_q.conf import Conf

    rung = threading.Event()
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(queue, "flow_run_ring_by_id", lambda run_id: rung.set() or True)
    queue.flow_run_enqueue_later(run_id="r1", at=timezone.now() + timedelta(milliseconds=50))
    queue.flow_run_enqueue_later(run_id="r1", at=timezone.now() + timedelta(seconds=30))  # a timer rings it sooner
    assert rung.wait(5)
    assert "r1" not in queue._later


# --- Two workers at once --------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_two_runs_of_one_key_at_once_start_one(make_user, make_flow, monkeypatch):
    """Each round two threads (two connections) claim two runs of the same key at once: the flow's row lock
    (SQLite: its write lock) lets one through. On PostgreSQL a real race between two transactions: the younger
    run's claim counts the running runs (none), then, while it looks for older queued ones, the older run's claim
    commits; without the lock the younger would find neither and start too."""
    real = concurrency._older_waiting
    younger = set()

    def slow_older_waiting(runs, run, now):
        time.sleep(0.3 if run.pk in younger else 0.05)
        return real(runs, run, now)

    monkeypatch.setattr(concurrency, "_older_waiting", slow_older_waiting)
    flow = _limit(make_flow(make_user("racer")), max_concurrent_runs=1, concurrency_key="payload.customer")
    for round_ in range(4):
        runs = [_run(flow, f"k{round_}"), _run(flow, f"k{round_}")]
        younger.add(runs[1].pk)
        barrier = threading.Barrier(2)
        claimed = []

        def claim(run_id, barrier=barrier, claimed=claimed):
            try:
                barrier.wait(5)
                claimed.append(flow_run_claim(run_id=run_id))
            finally:
                close_old_connections()
                connection.close()

        threads = [threading.Thread(target=claim, args=(run.id,)) for run in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(claimed) == [False, True], round_
        assert FlowRun.objects.filter(flow=flow, concurrency_key=f"k{round_}", status="running").count() == 1


def test_the_race_is_serialized_by_the_flows_row(flow, enqueued, monkeypatch):
    """The count is taken under the flow's lock: a claim that found the key full never starts the run."""
    _limit(flow, max_concurrent_runs=1, concurrency_key="payload.customer")
    first, second = _run(flow, "a"), _run(flow, "a")
    seen = []
    real = concurrency.run_control_wait

    def wait_after_other_claim(**kw):
        if not seen:
            seen.append(1)
            FlowRun.objects.filter(pk=first.pk).update(status="running")  # another worker's claim committed meanwhile
        return real(**kw)

    monkeypatch.setattr("flows.services.execution.run_control_wait", wait_after_other_claim)
    assert not flow_run_claim(run_id=second.id)


def test_a_start_rings_for_the_next_of_its_key_while_a_slot_is_left(flow, enqueued, django_capture_on_commit_callbacks):
    _limit(flow, max_concurrent_runs=2, concurrency_key="payload.customer")
    older, younger = _run(flow, "a"), _run(flow, "a")
    assert not flow_run_claim(run_id=younger.id)  # its doorbell came first: it waits behind the older one
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert flow_run_claim(run_id=older.id)
    assert enqueued == [str(younger.id)]
    assert flow_run_claim(run_id=younger.id)


def test_the_largest_limits_do_not_break_the_batch_claim(flow, make_flow, user, enqueued, later):
    """The hand-written claim tells limited flows apart without adding their limits up (an integer overflow would
    fail the whole batch's statement)."""
    from flows.services.execution import flow_runs_execute

    _limit(flow, max_concurrent_runs=2_147_483_647, throttle_limit=2_147_483_647, throttle_period=1)
    other = make_flow(user, endpoint_name="other")
    limited, free = _run(flow, "a"), _run(other, "a")
    executed = flow_runs_execute(run_ids=[limited.id, free.id])
    assert sorted(str(r.id) for r in executed) == sorted([str(limited.id), str(free.id)])


# `[@, @][]` doubles a list: 40 steps would be 2**40 items, hours of a web process's CPU and all its memory.
DOUBLING = "length(payload.a" + " | [@, @][]" * 40 + ")"


def test_a_key_expression_that_grows_without_bound_stops_at_the_limit_and_gives_no_value(settings):
    settings.LANGRUN_MAX_OUTPUT_BYTES = 64 * 1024
    started = time.monotonic()
    assert run_control_key_value(DOUBLING, request=None, payload={"a": [1]}) == ""
    assert time.monotonic() - started < 5


def test_a_slow_key_expression_stops_at_its_time_limit(monkeypatch):
    monkeypatch.setattr(concurrency, "EXPRESSION_SECONDS", 0.0)
    assert run_control_key_value("payload.k", request=None, payload={"k": "x"}) == ""


@pytest.mark.parametrize(
    "limits",
    [
        {"max_concurrent_runs": 1},  # per flow: its one slot taken
        {"max_concurrent_runs": 2, "concurrency_key": "payload.customer", "throttle_limit": 1, "throttle_period": 3600},
        {"throttle_limit": 1, "throttle_period": 3600},  # per flow: its window full for an hour
    ],
)
def test_the_sweep_rings_no_run_that_must_still_wait_for_its_slot_or_window(flow, enqueued, later, limits):
    # Each sweep rang every such run again (a minute apart, up to a thousand), and each ring cost a worker a claim
    # under the flow's row lock, only to leave the run waiting.
    from flows.services.sweep import flow_runs_sweep

    _limit(flow, **limits)
    first, *waiting = [_run(flow, "a") for _ in range(3)]
    assert flow_run_claim(run_id=first.id)
    FlowRun.objects.filter(status="queued").update(enqueued_at=timezone.now() - timedelta(minutes=5))
    enqueued.clear()
    for _ in range(2):
        flow_runs_sweep()
    assert enqueued == []
    # Once the slot is free (or the window open) the sweep rings the next of them, once.
    FlowRun.objects.filter(pk=first.pk).update(
        status="succeeded", finished_at=timezone.now(), started_at=timezone.now() - timedelta(hours=2)
    )
    for _ in range(2):
        flow_runs_sweep()
    assert enqueued == [str(waiting[0].id)]


def test_the_sweep_reads_a_keys_waiting_runs_without_their_bodies(flow, enqueued):
    # A throttled flow's backlog: the sweep looked at up to a thousand of its runs per key, each read whole (body,
    # payload, request, outputs), to ring the first; a backlog of large bodies took the sweep's memory and time.
    from django.test.utils import CaptureQueriesContext

    _limit(flow, throttle_limit=1, throttle_period=60)
    runs = [_run(flow, "a") for _ in range(3)]
    FlowRun.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))
    enqueued.clear()
    with CaptureQueriesContext(connection) as queries:
        assert run_control_release_keys(older_than=timedelta(seconds=60)) == 1
    assert enqueued == [str(runs[0].id)]
    read_whole = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"flows_flowrun"."body"' in q["sql"]]
    assert read_whole == []
