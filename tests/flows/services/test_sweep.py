"""flows.services.sweep: stale doorbells rung again, interrupted runs recovered, due retries, the schedule."""

import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

import tests.components  # noqa: F401 - registers the test components
from flows.models import Flow, FlowRun
from flows.services import pause, queue
from flows.services.execution import flow_run_claim, flow_run_execute
from flows.services.runs import flow_run_create
from flows.services.sweep import (
    SWEEP_SCHEDULE_NAME,
    flow_runs_enqueue_due_retries,
    flow_runs_recover_interrupted,
    flow_runs_requeue,
    flow_runs_requeue_stale,
    flow_runs_sweep,
)
from tests.helpers import make_due, new_run

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


def test_sweep_requeues_only_stale_queued_runs(flow, user, monkeypatch):
    enqueued = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda *, run_id, **options: enqueued.append(run_id) or True)
    old = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    fresh = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    done = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    FlowRun.objects.filter(pk__in=[old.pk, done.pk]).update(enqueued_at=timezone.now() - timedelta(minutes=5))
    FlowRun.objects.filter(pk=done.pk).update(status="succeeded")
    assert flow_runs_requeue_stale(older_than=timedelta(seconds=60)) == 1
    assert enqueued == [old.pk]
    # Its enqueue time moved on, so the next sweep leaves it alone for another threshold.
    assert flow_runs_requeue_stale(older_than=timedelta(seconds=60)) == 0
    assert fresh.pk not in enqueued


def test_runs_the_sweep_rings_wait_in_their_accounts_lane_with_the_task_their_version_needs(
    flow, user, enqueued, django_capture_on_commit_callbacks
):
    """A stale run, a due retry and an interrupted run go back to their own account's lane, as on intake: one account's
    runs the sweep rings never queue in one lane with every other account's."""
    stale, retry, stuck = (flow_run_create(flow=flow, user=user, trigger="webhook", payload={}) for _ in range(3))
    past = timezone.now() - timedelta(minutes=5)
    FlowRun.objects.filter(pk=stale.pk).update(enqueued_at=past)
    now = timezone.now()
    FlowRun.objects.filter(pk=retry.pk).update(enqueued_at=now - timedelta(seconds=10), next_attempt_at=now - timedelta(seconds=5))
    FlowRun.objects.filter(pk=stuck.pk).update(status="running", attempts=1, started_at=past - timedelta(hours=1))
    flow.max_attempts = 2
    flow.save(update_fields=["max_attempts"])
    enqueued.clear()
    assert flow_runs_requeue_stale() == 1
    assert flow_runs_enqueue_due_retries() == 1
    with django_capture_on_commit_callbacks(execute=True):  # the recovered run is rung once it is queued again
        assert flow_runs_recover_interrupted(lease=timedelta(minutes=1)) == 1
    assert sorted(enqueued) == sorted(str(r.id) for r in (stale, retry, stuck))
    assert all(options == {"flow_id": flow.pk, "quick": True, "account": user.pk} for options in enqueued.options.values())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("held", ["stale", "due_retry"])
def test_runs_a_resume_releases_while_the_sweep_reads_them_are_rung_once(flow, user, enqueued, held):
    """A resumed flow's held runs look lost (or due) to the sweep too. The release marks its page rung and commits while
    the sweep has read the same runs: the release rang them, the sweep does not ring them again."""
    pause.flow_pause(flow=flow)
    runs = [flow_run_create(flow=flow, user=user, trigger="webhook", payload={}) for _ in range(3)]
    past = timezone.now() - timedelta(minutes=5)
    due = {"next_attempt_at": past + timedelta(seconds=1)} if held == "due_retry" else {}
    FlowRun.objects.filter(pk__in=[r.pk for r in runs]).update(enqueued_at=past, **due)
    Flow.objects.filter(pk=flow.pk).update(paused_at=None)
    resumed_at = timezone.now()
    enqueued.clear()
    marked = threading.Event()

    def page_marked_not_committed(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE") and "enqueued_at" in sql:
            marked.set()
            time.sleep(0.5)
        return result

    def release():
        try:
            with connection.execute_wrapper(page_marked_not_committed):
                pause.flow_runs_release(flow_id=flow.pk, resumed_at=resumed_at, limit=10)
        finally:
            connection.close()

    releaser = threading.Thread(target=release)
    releaser.start()
    assert marked.wait(5)
    (flow_runs_requeue_stale if held == "stale" else flow_runs_enqueue_due_retries)()
    releaser.join(10)
    assert sorted(enqueued) == sorted(str(r.id) for r in runs)


def test_sweep_schedule_is_installed_by_migrate(db):
    schedule = Schedule.objects.get(name=SWEEP_SCHEDULE_NAME)
    assert schedule.func == "flows.tasks.sweep" and schedule.schedule_type == Schedule.MINUTES and schedule.repeats == -1


def test_interrupted_run_is_queued_again_while_attempts_remain(flow, user, enqueued, django_capture_on_commit_callbacks):
    flow.max_attempts = 2
    flow.save()
    run = new_run(flow, user)
    assert flow_run_claim(run_id=run.id)
    assert flow_runs_recover_interrupted() == 0  # within its lease
    with django_capture_on_commit_callbacks(execute=True):
        assert flow_runs_recover_interrupted(lease=timedelta(0)) == 1
    run.refresh_from_db()
    assert run.status == "queued" and "Attempt 1 was interrupted" in run.error
    assert str(run.id) in enqueued
    assert list(run.attempt_log.values_list("outcome", flat=True)) == ["interrupted"]
    assert flow_run_execute(run_id=run.id).status == "succeeded"
    run.refresh_from_db()
    assert run.attempts == 2 and run.error == ""


def test_interrupted_run_without_attempts_left_fails_with_a_clear_error(flow, user, settings):
    run = new_run(flow, user)
    flow_run_claim(run_id=run.id)
    assert flow_runs_recover_interrupted(lease=timedelta(0)) == 1
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == ("Attempt 1 was interrupted: its worker stopped, or it ran past its timeout. No attempts left (1 of 1).")


def test_default_lease_is_the_flows_timeout_plus_margin_capped_by_the_task_timeout(flow, user, settings):
    settings.LANGRUN_RUN_TIMEOUT, settings.LANGRUN_FLOW_TIMEOUT, settings.LANGRUN_LEASE_MARGIN = 100, 50, 20

    def stuck_for(seconds: int) -> int:
        FlowRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=seconds))
        return flow_runs_recover_interrupted()

    flow.max_attempts = 5
    flow.save()
    run = new_run(flow, user)
    flow_run_claim(run_id=run.id)
    assert stuck_for(65) == 0  # default flow timeout 50 + margin 20 = 70
    assert stuck_for(75) == 1
    flow_run_claim(run_id=run.id)
    Flow.objects.filter(pk=flow.pk).update(timeout=30)  # the flow's own timeout: 30 + 20
    assert stuck_for(45) == 0
    assert stuck_for(55) == 1
    flow_run_claim(run_id=run.id)
    Flow.objects.filter(pk=flow.pk).update(timeout=1000)  # capped by django-q2's task timeout: 100 + 20
    assert stuck_for(115) == 0
    assert stuck_for(125) == 1


def test_sweep_does_all_its_jobs(flow, user, enqueued, capsys):
    assert flow_runs_sweep() == {
        "recovered": 0,
        "retried": 0,
        "requeued": 0,
        "waiting_keys_rung": 0,
        "keys_released": 0,
        "replay_jobs_resumed": 0,
    }
    call_command("sweep_runs")
    assert "recovered: 0" in capsys.readouterr().out


def test_due_retries_report_the_runs_enqueued(flow, user, monkeypatch):
    runs = [new_run(flow, user) for _ in range(3)]
    for run in runs:
        make_due(run)
    rung = []

    def enqueue(*, run_id, **options):
        rung.append(str(run_id))
        FlowRun.objects.filter(pk=runs[2].pk).update(status="cancelled")  # cancelled after the sweep listed it
        return str(run_id) != str(runs[1].id)  # the broker refused this one

    monkeypatch.setattr(queue, "flow_run_enqueue", enqueue)
    assert flow_runs_enqueue_due_retries() == 1
    assert rung == [str(runs[0].id), str(runs[1].id)]


def test_operators_requeue_of_a_running_run_closes_its_attempt_as_interrupted(flow, user, enqueued):
    run = new_run(flow, user)
    assert flow_run_claim(run_id=run.id)
    assert [r.pk for r in flow_runs_requeue(status="running")] == [run.pk]
    assert enqueued == [str(run.id)]
    assert flow_run_execute(run_id=run.id).status == "succeeded"
    attempts = list(run.attempt_log.order_by("number").values_list("number", "outcome"))
    assert attempts == [(1, "interrupted"), (2, "succeeded")]
    assert run.attempt_log.get(number=1).finished_at is not None


def test_operators_replay_of_failed_runs_goes_past_one_that_cannot_be_replayed(flow, user, enqueued):
    from flows.services.variables import variable_create

    variable = variable_create(user=user, name="GREETING", value="Hi {name}")
    stale = new_run(flow, user, tweaks={"greet": {"template": {"variable": "GREETING"}}})
    good = new_run(flow, user)
    for run, seconds_ago in ((stale, 2), (good, 1)):  # the stale one first, as the requeue takes them
        FlowRun.objects.filter(pk=run.pk).update(status="failed", finished_at=timezone.now() - timedelta(seconds=seconds_ago))
    variable.delete()  # the first run's tweaks no longer fit its graph
    replays = flow_runs_requeue(status="failed")
    assert [replay.replay_of_id for replay in replays] == [good.pk]
    assert not FlowRun.objects.filter(replay_of=stale).exists()


@pytest.mark.django_db(transaction=True)  # the replay's foreign key to its original is checked at the commit
def test_operators_replay_of_failed_runs_goes_past_one_deleted_meanwhile(flow, user, enqueued, monkeypatch):
    from flows.services import sweep

    gone, kept = new_run(flow, user), new_run(flow, user)
    for run, seconds_ago in ((gone, 120), (kept, 60)):
        FlowRun.objects.filter(pk=run.pk).update(status="failed", finished_at=timezone.now() - timedelta(seconds=seconds_ago))
    replay = sweep.flow_run_replay

    def deleted_meanwhile(*, run, user):  # listed, then deleted by retention before its replay
        FlowRun.objects.filter(pk=gone.pk).delete()
        return replay(run=run, user=user)

    monkeypatch.setattr(sweep, "flow_run_replay", deleted_meanwhile)
    replays = flow_runs_requeue(status="failed")
    assert [replay.replay_of_id for replay in replays] == [kept.pk]


def test_runs_within_a_long_lease_do_not_keep_a_run_past_its_short_lease_from_recovery(flow, make_flow, user, settings):
    settings.LANGRUN_RUN_TIMEOUT, settings.LANGRUN_FLOW_TIMEOUT, settings.LANGRUN_LEASE_MARGIN = 1000, 50, 20
    long = make_flow(user, endpoint_name="long")
    Flow.objects.filter(pk=long.pk).update(timeout=900)
    busy = [new_run(long, user) for _ in range(2)]  # running for 200 s, well within their 920 s lease
    stuck = new_run(flow, user)  # running for 100 s, past its 70 s lease
    for run, seconds in ((busy[0], 200), (busy[1], 200), (stuck, 100)):
        flow_run_claim(run_id=run.id)
        FlowRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=seconds))
    assert flow_runs_recover_interrupted(limit=2) == 1
    assert FlowRun.objects.get(pk=stuck.pk).status == "failed"
    assert set(FlowRun.objects.filter(pk__in=[r.pk for r in busy]).values_list("status", flat=True)) == {"running"}
