"""flows.services.watch: one thread per process tells waiting callers when their run ended."""

import threading
import time

import pytest
from django.db import connection

from flows.models import FlowRun, NodeResult
from flows.services import waits
from flows.services.watch import LedgerWatch
from langrun.waits import PARKING

pytestmark = pytest.mark.django_db(transaction=True)


def _queued(flow) -> FlowRun:
    return FlowRun.objects.create(flow=flow, user=flow.user, status=FlowRun.Status.QUEUED, payload={})


def _finish_later(run: FlowRun, seconds: float) -> threading.Thread:
    def finish():
        time.sleep(seconds)
        FlowRun.objects.filter(pk=run.pk).update(status=FlowRun.Status.SUCCEEDED)
        connection.close()

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_a_waiter_is_told_when_its_run_ends_and_not_before(flow):
    run = _queued(flow)
    watch = LedgerWatch(tick=0.02)
    assert watch.wait_for_end(run_id=run.pk, timeout=0.3) is False  # still queued
    finisher = _finish_later(run, 0.2)
    started = time.monotonic()
    assert watch.wait_for_end(run_id=run.pk, timeout=5) is True
    assert 0.15 < time.monotonic() - started < 1.0
    finisher.join()


def test_many_waiters_share_one_thread_and_each_hears_of_its_own_run(flow):
    runs = [_queued(flow) for _ in range(6)]
    watch = LedgerWatch(tick=0.02)
    results = {}

    def wait(run):
        results[run.pk] = watch.wait_for_end(run_id=run.pk, timeout=1.5)

    waiters = [threading.Thread(target=wait, args=(run,)) for run in runs]
    for waiter in waiters:
        waiter.start()
    FlowRun.objects.filter(pk__in=[r.pk for r in runs[:3]]).update(status=FlowRun.Status.FAILED)
    for waiter in waiters:
        waiter.join()
    assert [results[r.pk] for r in runs] == [True, True, True, False, False, False]
    assert [t.name for t in threading.enumerate()].count("ledger-watch") >= 1
    assert watch._waiting == {}  # nothing left behind


def test_a_waiting_caller_gives_back_its_connection_and_is_parked_meanwhile(flow, monkeypatch):
    run = _queued(flow)
    seen = {}
    wait_for_end = waits.WATCH.wait_for_end

    def watched(**kwargs):
        seen["connection"] = connection.connection
        return wait_for_end(**kwargs)

    monkeypatch.setattr(waits.WATCH, "wait_for_end", watched)

    def finish():
        time.sleep(0.3)
        seen["parked"] = PARKING.count
        FlowRun.objects.filter(pk=run.pk).update(status=FlowRun.Status.SUCCEEDED)
        connection.close()

    finisher = threading.Thread(target=finish)
    finisher.start()
    connection.ensure_connection()
    waited = waits.flow_run_wait(run_id=run.pk, timeout=5)
    finisher.join()
    assert waited.status == FlowRun.Status.SUCCEEDED
    assert seen["connection"] is None  # closed (given back to the pool, where there is one) while waiting
    assert seen["parked"] == 1 and PARKING.count == 0


def test_a_caller_waiting_for_a_run_deleted_meanwhile_gets_a_404(flow):
    # The run's flow deleted while its caller waited (?wait=, /run, a flow answering for itself): the wait's last
    # read found no run, and the caller got a 500.
    from django.http import Http404

    run = _queued(flow)

    def delete():
        time.sleep(0.2)
        FlowRun.objects.filter(pk=run.pk).delete()
        connection.close()

    deleter = threading.Thread(target=delete)
    deleter.start()
    with pytest.raises(Http404):
        waits.flow_run_wait(run_id=run.pk, timeout=0.6)
    deleter.join()


def _rung_within(doorbell, seconds: float) -> bool:
    return doorbell.wait(seconds)


def test_a_stream_following_a_run_is_rung_when_its_run_or_nodes_change_and_not_otherwise(flow, settings):
    settings.LANGRUN_STREAM_POLL = 0.02
    run = _queued(flow)
    watch = LedgerWatch(tick=0.02)
    doorbell = watch.follow(("run", str(run.pk)))
    try:
        assert _rung_within(doorbell, 2)  # the first read
        assert not _rung_within(doorbell, 0.3)  # nothing changed
        NodeResult.objects.create(run=run, node_id="hook", component_type="Webhook", status=NodeResult.Status.RUNNING, order=0)
        assert _rung_within(doorbell, 2)
        NodeResult.objects.filter(run=run).update(status=NodeResult.Status.SUCCEEDED)
        assert _rung_within(doorbell, 2)
        FlowRun.objects.filter(pk=run.pk).update(status=FlowRun.Status.SUCCEEDED)
        assert _rung_within(doorbell, 2)
        assert not _rung_within(doorbell, 0.3)
    finally:
        watch.unfollow(doorbell)
    assert watch._doorbells == []


def test_a_stream_following_a_flow_is_rung_when_a_webhook_run_arrives(flow, settings):
    from django.utils import timezone

    settings.LANGRUN_STREAM_POLL = 0.02
    watch = LedgerWatch(tick=0.02)
    doorbell = watch.follow(("flow", str(flow.pk), timezone.now()))
    try:
        assert _rung_within(doorbell, 2)
        assert not _rung_within(doorbell, 0.3)
        FlowRun.objects.create(flow=flow, user=flow.user, status=FlowRun.Status.QUEUED, payload={}, trigger=FlowRun.Trigger.API)
        assert not _rung_within(doorbell, 0.3)  # not a webhook run: not this stream's
        FlowRun.objects.create(flow=flow, user=flow.user, status=FlowRun.Status.QUEUED, payload={}, trigger=FlowRun.Trigger.WEBHOOK)
        assert _rung_within(doorbell, 2)
    finally:
        watch.unfollow(doorbell)


def test_an_event_stream_reads_when_rung_and_stops_following_when_closed(flow, settings):
    from flows.services.events import RunEventsSource, event_stream
    from flows.services.watch import WATCH

    settings.LANGRUN_STREAM_POLL = 0.02
    run = _queued(flow)
    stream = event_stream(RunEventsSource(run_id=run.pk), keepalive=30, lifetime=30)
    reads = []

    def read():
        reads.extend(stream)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    NodeResult.objects.create(run=run, node_id="hook", component_type="Webhook", status=NodeResult.Status.SUCCEEDED, order=0)
    FlowRun.objects.filter(pk=run.pk).update(status=FlowRun.Status.SUCCEEDED)
    reader.join(5)
    assert not reader.is_alive()
    text = "".join(reads)
    assert "event: node_finished" in text and "event: run_finished" in text
    assert WATCH._doorbells == []


def test_a_failed_read_of_the_ledger_is_logged_and_the_waiters_are_told_at_the_next(flow, monkeypatch, caplog):
    run = _queued(flow)
    FlowRun.objects.filter(pk=run.pk).update(status=FlowRun.Status.SUCCEEDED)
    watch = LedgerWatch(tick=0.02)
    real, calls = LedgerWatch._ended, []

    def flaky(keys):
        calls.append(keys)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(keys)

    monkeypatch.setattr(LedgerWatch, "_ended", staticmethod(flaky))
    assert watch.wait_for_end(run_id=run.pk, timeout=5) is True
    assert len(calls) >= 2
    assert "Could not read the ledger" in caplog.text
