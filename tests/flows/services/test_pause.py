"""flows.services.pause: a paused flow's runs are recorded but held; resume releases them in the order received."""

from datetime import timedelta

import pytest
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services import pause
from flows.services.execution import flow_run_execute, flow_runs_execute
from flows.services.pause import flow_pause, flow_resume
from flows.services.runs import flow_run_create
from flows.services.sweep import flow_runs_enqueue_due_retries, flow_runs_requeue_stale
from webhooks.alerts.services import outbox


def _run(flow, **fields):
    run = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Ada"})
    if fields:
        FlowRun.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


def test_pause_records_when_and_is_idempotent(flow):
    flow_pause(flow=flow)
    first = Flow.objects.get(pk=flow.pk).paused_at
    assert first is not None
    flow_pause(flow=flow)
    assert Flow.objects.get(pk=flow.pk).paused_at == first
    assert flow.paused_at == first


@pytest.mark.parametrize("action", [flow_pause, flow_resume])
def test_pausing_or_resuming_a_flow_deleted_meanwhile_is_404(flow, action):
    """The endpoint looked the flow up, then it was deleted: 404 as its lookup would now answer, never a 500."""
    if action is flow_resume:
        flow_pause(flow=flow)
    Flow.objects.filter(pk=flow.pk).delete()
    with pytest.raises(Http404):
        action(flow=flow)


def test_a_paused_flows_run_is_accepted_but_not_claimed(flow, execute_path):
    flow_pause(flow=flow)
    run = _run(flow)
    assert flow_run_execute(run_id=run.id) is None
    run.refresh_from_db()
    assert run.status == FlowRun.Status.QUEUED and run.attempts == 0 and run.started_at is None


def test_a_batch_of_quick_runs_leaves_a_paused_flows_runs_queued(flow, make_flow, user, execute_path):
    other = make_flow(user, endpoint_name="other")
    flow_pause(flow=flow)
    held, free = _run(flow), _run(other)
    executed = flow_runs_execute(run_ids=[held.id, free.id])
    assert [r.id for r in executed] == [free.id]
    held.refresh_from_db()
    assert held.status == FlowRun.Status.QUEUED


def test_a_batch_of_a_paused_flows_runs_costs_the_worker_the_same_few_queries_whatever_its_size(
    flow, make_flow, user, execute_path, monkeypatch
):
    # A paused flow that keeps receiving webhooks must not keep the workers (which other flows' runs need) busy:
    # its runs are told apart once per batch, not claimed one by one.
    other = make_flow(user, endpoint_name="other")
    flow_pause(flow=flow)
    # What a process reads once in a while (which accounts take alerts) is read here, and kept while this test runs.
    monkeypatch.setattr(outbox, "INTEREST_SECONDS", 3600.0)
    flow_runs_execute(run_ids=[_run(other).id])
    costs = []
    for size in (2, 12):
        held = [_run(flow) for _ in range(size)]
        free = _run(other)
        with CaptureQueriesContext(connection) as queries:
            executed = flow_runs_execute(run_ids=[*(run.id for run in held), free.id])
        assert [run.id for run in executed] == [free.id]
        assert FlowRun.objects.filter(pk__in=[run.id for run in held], status=FlowRun.Status.QUEUED, attempts=0).count() == size
        costs.append(len(queries))
    assert costs[0] == costs[1]


def test_a_paused_flows_run_alone_is_left_queued_after_one_read(flow, execute_path):
    # No transaction (on SQLite, the database's write lock, which every webhook's insert needs) for a run that is held.
    flow_pause(flow=flow)
    run = _run(flow)
    with CaptureQueriesContext(connection) as queries:
        assert flow_run_execute(run_id=run.id) is None
    claims = 1 if execute_path == "returning" else 0  # the hand-written claim, tried first
    sqlite_transaction = 2 if execute_path == "returning" and connection.vendor == "sqlite" else 0  # its BEGIN and COMMIT
    assert len(queries) == 1 + claims + sqlite_transaction, [q["sql"][:80] for q in queries]


def test_a_run_queued_before_the_pause_is_held_too(flow, execute_path):
    run = _run(flow)
    flow_pause(flow=flow)
    assert flow_run_execute(run_id=run.id) is None


def test_a_concurrency_limited_paused_flow_holds_its_runs(flow, execute_path):
    Flow.objects.filter(pk=flow.pk).update(max_concurrent_runs=2)
    flow_pause(flow=flow)
    run = _run(flow)
    assert flow_run_execute(run_id=run.id) is None


def test_resume_releases_held_runs_oldest_first(flow, enqueued):
    flow_pause(flow=flow)
    now = timezone.now()
    runs = [_run(flow, received_at=now - timedelta(seconds=10 - i)) for i in range(5)]
    enqueued.clear()  # the doorbells rung on intake
    released = flow_resume(flow=flow)
    assert released == 5
    assert enqueued == [str(r.id) for r in runs]
    assert Flow.objects.get(pk=flow.pk).paused_at is None
    for run in runs:
        assert flow_run_execute(run_id=run.id).status == FlowRun.Status.SUCCEEDED


def test_released_runs_get_the_task_their_version_needs_in_their_accounts_lane(flow, enqueued):
    flow_pause(flow=flow)
    run = _run(flow)
    enqueued.clear()
    flow_resume(flow=flow)
    # The greeting flow is made of quick components: its runs may be batched, as on intake.
    assert enqueued.options[str(run.id)] == {"flow_id": flow.pk, "quick": True, "account": flow.user_id}


def test_releasing_a_page_costs_the_same_few_queries_whatever_its_size(make_flow, user, enqueued):
    def release(count: int) -> int:
        flow = make_flow(user, endpoint_name=f"backlog-{count}")
        flow_pause(flow=flow)
        for _ in range(count):
            _run(flow)
        with CaptureQueriesContext(connection) as queries:
            assert flow_resume(flow=flow) == count
        return len(queries)

    assert release(2) == release(40)


def test_a_second_release_of_one_resume_rings_no_run_again(flow, enqueued):
    """The task and the sweep may both release after one resume: a run is marked rung before its doorbell, once."""
    from flows.models import FlowRun as Run

    flow_pause(flow=flow)
    runs = [_run(flow) for _ in range(3)]
    enqueued.clear()
    Flow.objects.filter(pk=flow.pk).update(paused_at=None)
    resumed_at = timezone.now()
    assert pause.flow_runs_release(flow_id=flow.pk, resumed_at=resumed_at, limit=10) == 3
    assert pause.flow_runs_release(flow_id=flow.pk, resumed_at=resumed_at, limit=10) == 0
    assert sorted(enqueued) == sorted(str(r.id) for r in runs)
    assert Run.objects.filter(pk__in=[r.pk for r in runs], enqueued_at__lt=resumed_at).count() == 0


def test_resume_leaves_runs_waiting_for_a_retry_to_their_time(flow, enqueued):
    flow_pause(flow=flow)
    waiting = _run(flow, next_attempt_at=timezone.now() + timedelta(minutes=5))
    ready = _run(flow)
    enqueued.clear()
    flow_resume(flow=flow)
    assert enqueued == [str(ready.id)]
    assert waiting.pk


def test_resume_of_a_large_backlog_hands_the_rest_to_a_task(flow, enqueued, monkeypatch, settings):
    settings.LANGRUN_RELEASE_BATCH = 2
    tasks = []

    def ring_release(*, flow_id, resumed_at):
        tasks.append((str(flow_id), resumed_at))
        enqueued.append("release")

    monkeypatch.setattr(pause, "_release_rest_later", ring_release)
    flow_pause(flow=flow)
    now = timezone.now()
    runs = [_run(flow, received_at=now - timedelta(seconds=10 - i)) for i in range(5)]
    enqueued.clear()
    assert flow_resume(flow=flow) == 2
    assert [t[0] for t in tasks] == [str(flow.pk)]
    # The task releases the rest a page at a time, in order, never ringing a run twice, and rings for itself behind
    # each page: the next page is rung once the workers have taken this one from the queue, so another account's
    # runs that came meanwhile wait behind one page of this backlog, not all of it.
    assert tasks_release(tasks[0]) == 2
    assert tasks_release(tasks[-1]) == 1
    ids = [str(r.id) for r in runs]
    assert enqueued == [*ids[:2], "release", *ids[2:4], "release", ids[4]]


def tasks_release(task) -> int:
    from flows.tasks import release_held_runs

    flow_id, resumed_at = task
    return release_held_runs(flow_id, resumed_at.isoformat())


def test_resume_of_a_flow_not_paused_releases_nothing(flow, enqueued):
    _run(flow)
    enqueued.clear()
    assert flow_resume(flow=flow) == 0
    assert enqueued == []


def test_the_sweep_leaves_a_paused_flows_runs_alone(flow, enqueued):
    flow_pause(flow=flow)
    old = timezone.now() - timedelta(hours=1)
    _run(flow, enqueued_at=old)
    _run(flow, enqueued_at=old, next_attempt_at=old + timedelta(minutes=1))
    enqueued.clear()
    assert flow_runs_requeue_stale() == 0
    assert flow_runs_enqueue_due_retries() == 0
    assert enqueued == []


def test_waiting_for_says_why_a_queued_run_waits(flow):
    run = _run(flow)
    assert pause.flow_run_waiting(run=run, flow_paused=False) == {"reason": "worker"}
    assert pause.flow_run_waiting(run=run, flow_paused=True) == {"reason": "flow_paused"}
    run.next_attempt_at = timezone.now() + timedelta(minutes=1)
    assert pause.flow_run_waiting(run=run, flow_paused=False) == {"reason": "retry_backoff", "next_attempt_at": run.next_attempt_at}
    run.status = FlowRun.Status.SUCCEEDED
    assert pause.flow_run_waiting(run=run, flow_paused=True) is None


def test_many_runs_wait_for_what_each_would_alone_in_the_same_few_queries(user, make_flow, enqueued):
    def flow_of(name, **limits):
        flow = make_flow(user, endpoint_name=name)
        Flow.objects.filter(pk=flow.pk).update(**limits)
        flow.refresh_from_db()
        return flow

    def runs_of(flow, name, count, **fields):
        made = [flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": name}) for _ in range(count)]
        if fields:
            FlowRun.objects.filter(pk__in=[run.pk for run in made]).update(**fields)

    now = timezone.now()
    keyed = flow_of("keyed", max_concurrent_runs=2, concurrency_key="payload.name")
    runs_of(keyed, "x", 2, status=FlowRun.Status.RUNNING, started_at=now)
    runs_of(keyed, "x", 1)  # its key's slots are taken
    runs_of(keyed, "y", 2)  # the first may start, the second comes after it
    runs_of(keyed, "y", 1, next_attempt_at=now + timedelta(minutes=1))
    keyless = flow_of("keyless", max_concurrent_runs=1)
    runs_of(keyless, "x", 1, status=FlowRun.Status.RUNNING, started_at=now)
    runs_of(keyless, "y", 2)
    throttled = flow_of("throttled", throttle_limit=2, throttle_period=60, throttle_key="payload.name")
    runs_of(throttled, "z", 2, status=FlowRun.Status.SUCCEEDED, started_at=now, finished_at=now)
    runs_of(throttled, "z", 1)  # its window is full
    runs_of(throttled, "w", 1, status=FlowRun.Status.SUCCEEDED, started_at=now, finished_at=now)
    runs_of(throttled, "w", 2)  # the first may start, the second comes after it
    runs_of(flow_of("paused", max_concurrent_runs=1, paused_at=now), "x", 1)
    runs = list(FlowRun.objects.order_by("received_at", "id"))

    with CaptureQueriesContext(connection) as queries:
        together = pause.flow_runs_waiting(runs=runs)
    assert len(queries) <= 4
    alone = {run.pk: pause.flow_run_waiting(run=run, flow_paused=run.flow.paused_at is not None, flow=run.flow) for run in runs}
    assert together == alone
    details = [detail for detail in alone.values() if detail is not None]
    assert {detail["reason"] for detail in details} == set(pause.WAITING_REASONS)
    assert {(detail["reason"], detail.get("behind_older_run")) for detail in details} >= {("concurrency", True), ("throttle", True)}
    assert any(detail.get("next_start_at") for detail in details)


@pytest.mark.parametrize("status", ["running", "succeeded"])
def test_pause_does_not_touch_runs_already_started(flow, status):
    run = _run(flow, status=status)
    flow_pause(flow=flow)
    run.refresh_from_db()
    assert run.status == status


def test_the_sweep_leaves_a_resumed_flows_held_runs_to_their_pages_while_the_release_goes_on(flow, enqueued, monkeypatch, settings):
    # The runs still waiting for their page looked lost to the sweep (rung long ago, their flow no longer paused): it
    # rang up to a thousand of them at once, ahead of the pages that keep other accounts' runs from waiting behind them.
    from flows.services.sweep import flow_runs_sweep

    settings.LANGRUN_RELEASE_BATCH = 2
    tasks = []
    monkeypatch.setattr(pause, "_release_rest_later", lambda *, flow_id, resumed_at: tasks.append((flow_id, resumed_at)))
    flow_pause(flow=flow)
    old = timezone.now() - timedelta(hours=1)
    runs = [_run(flow, enqueued_at=old, received_at=old + timedelta(seconds=i)) for i in range(5)]
    enqueued.clear()
    assert flow_resume(flow=flow) == 2
    flow_runs_sweep()
    assert enqueued == [str(r.id) for r in runs[:2]]  # the sweep rang none of those the next pages ring
    assert tasks_release(tasks[-1]) == 2
    flow_runs_sweep()
    assert tasks_release(tasks[-1]) == 1
    assert enqueued == [str(r.id) for r in runs]


def test_the_sweep_rings_a_resumed_flows_held_runs_when_its_release_stopped(flow, enqueued, monkeypatch, settings):
    # The task ringing the next page was lost (Redis keeps no receipts) or its worker died: the sweep rings the rest.
    from flows.services.sweep import flow_runs_sweep

    settings.LANGRUN_RELEASE_BATCH = 2
    monkeypatch.setattr(pause, "_release_rest_later", lambda **kwargs: None)
    flow_pause(flow=flow)
    old = timezone.now() - timedelta(hours=1)
    runs = [_run(flow, enqueued_at=old, received_at=old + timedelta(seconds=i)) for i in range(5)]
    assert flow_resume(flow=flow) == 2
    later = timezone.now() + timedelta(seconds=settings.LANGRUN_REQUEUE_AFTER + 1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    enqueued.clear()
    flow_runs_sweep()  # (the first page, still queued a while after its ring, looks lost too by then)
    assert {str(r.id) for r in runs[2:]} <= set(enqueued)
