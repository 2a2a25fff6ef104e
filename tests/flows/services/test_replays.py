"""flows.services.replays: bulk replay jobs, replaying matching runs in batches at a bounded rate."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from flows.models import Flow, FlowRun, ReplayJob
from flows.services import replays
from flows.services.replays import replay_job_create, replay_job_step, replay_jobs_resume_stalled, replay_runs_count
from flows.services.runs import flow_run_create
from tests.helpers import FlowDeletedMeanwhile


def _run(flow, **fields):
    run = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Ada"})
    if fields:
        FlowRun.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


@pytest.fixture
def steps(monkeypatch):
    """The job steps the service enqueues (a worker would run them), and no real sleeping."""
    enqueued, slept = [], []
    monkeypatch.setattr(replays, "_step_later", lambda *, job_id, step=None: enqueued.append(str(job_id)))
    monkeypatch.setattr(replays, "_sleep", slept.append)
    return enqueued, slept


def test_count_matches_the_run_lists_filters_and_the_owner(flow, make_flow, make_user, user):
    other = make_flow(make_user("bob"), endpoint_name="theirs")
    now = timezone.now()
    failed = [_run(flow, status="failed") for _ in range(3)]
    _run(flow, status="succeeded")
    _run(flow, status="failed", received_at=now - timedelta(days=3))
    _run(other, status="failed")
    assert replay_runs_count(user=user, filters={"status": "failed"}) == 4
    assert replay_runs_count(user=user, filters={"status": "failed", "received_after": now - timedelta(days=1)}) == 3
    assert replay_runs_count(user=user, filters={"flow": str(flow.pk), "trigger": "webhook"}) == 5
    assert replay_runs_count(user=user, filters={"ids": [str(failed[0].pk), str(other.pk)]}) == 1
    assert replay_runs_count(user=user, filters={"received_before": now - timedelta(days=1)}) == 1


def test_a_job_replays_every_matching_run_once_in_batches(flow, user, steps, settings):
    enqueued, slept = steps
    settings.LANGRUN_REPLAY_BATCH = 2
    settings.LANGRUN_REPLAY_RATE = 1
    originals = [_run(flow, status="failed") for _ in range(5)]
    job = replay_job_create(user=user, filters={"status": "failed"})
    assert (job.status, job.matched, job.created) == ("pending", 5, 0)
    for _ in range(3):  # a batch per step
        job = replay_job_step(job_id=job.pk)
    assert (job.status, job.matched, job.created, job.failed) == ("succeeded", 5, 5, 0)
    assert job.started_at and job.finished_at
    replayed = FlowRun.objects.filter(trigger="replay")
    assert sorted(r.replay_of_id for r in replayed) == sorted(r.pk for r in originals)
    assert {r.status for r in replayed} == {"queued"}
    # Bounded rate: a batch of 2 runs at 1 a second takes 2 seconds (waiting, less the batch's own time) before the next.
    assert 3 < sum(slept) <= 4 and len(slept) == 2
    # Running the step again (a duplicate doorbell) replays nothing more.
    assert replay_job_step(job_id=job.pk).created == 5
    assert replayed.count() == 5


def test_a_jobs_own_replays_never_match_it(flow, user, steps):
    _run(flow)
    job = replay_job_create(user=user, filters={"status": "queued"})
    job = replay_job_step(job_id=job.pk)
    assert (job.matched, job.created) == (1, 1)
    assert FlowRun.objects.count() == 2


def test_a_step_replays_one_batch_and_rings_for_the_next_behind_it(flow, user, steps, settings, django_capture_on_commit_callbacks):
    # The next step takes its turn in the queue behind this batch's replays: other accounts' runs that came meanwhile
    # wait behind a batch of the job, not all of it.
    enqueued, _ = steps
    settings.LANGRUN_REPLAY_BATCH = 2
    for _ in range(5):
        _run(flow, status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        job = replay_job_create(user=user, filters={"status": "failed"})
    assert enqueued == [str(job.pk)]
    job = replay_job_step(job_id=job.pk)
    assert (job.status, job.created) == ("running", 2) and enqueued == [str(job.pk)] * 2
    job = replay_job_step(job_id=job.pk, step=job.step)
    assert (job.status, job.created) == ("running", 4)
    job = replay_job_step(job_id=job.pk, step=job.step)
    assert (job.status, job.created) == ("succeeded", 5) and len(enqueued) == 3
    assert FlowRun.objects.filter(trigger="replay").count() == 5


def test_a_second_doorbell_for_the_same_step_replays_nothing(flow, user, steps, settings):
    # The sweep rings again for a job whose step waited long in the queue: whichever doorbell comes second stops, so
    # the job never goes on as two chains of steps.
    enqueued, _ = steps
    settings.LANGRUN_REPLAY_BATCH = 2
    for _ in range(5):
        _run(flow, status="failed")
    job = replay_job_step(job_id=replay_job_create(user=user, filters={"status": "failed"}).pk)
    rung = job.step
    assert replay_job_step(job_id=job.pk, step=rung).created == 4
    assert replay_job_step(job_id=job.pk, step=rung).created == 4  # the same doorbell again
    assert FlowRun.objects.filter(trigger="replay").count() == 4


def test_runs_that_cannot_be_replayed_are_counted_with_why(flow, user, steps):
    pruned = _run(flow, status="failed", payload=None, payload_pruned_at=timezone.now())
    _run(flow, status="failed")
    job = replay_job_step(job_id=replay_job_create(user=user, filters={"status": "failed"}).pk)
    assert (job.status, job.created, job.failed) == ("succeeded", 1, 1)
    assert job.errors[0]["run_id"] == str(pruned.pk) and "retention" in job.errors[0]["msg"]


def test_current_version_replays_run_the_flows_current_graph(flow, user, steps):
    from flows.services.flows import flow_update
    from tests.helpers import greeting_with_template

    original = _run(flow, status="failed")
    flow = flow_update(flow=flow, author=user, data=greeting_with_template("Hi {name}"))
    job = replay_job_step(job_id=replay_job_create(user=user, filters={"status": "failed"}, current_version=True).pk)
    assert job.created == 1
    replay = FlowRun.objects.get(replay_of=original)
    assert replay.version_id == flow.current_version_id != original.version_id


def test_a_step_that_lost_the_job_writes_nothing(flow, user, steps, monkeypatch):
    for _ in range(3):
        _run(flow, status="failed")
    job = replay_job_create(user=user, filters={"status": "failed"})
    real_batch = replays._replay_batch

    def taken_over(job, runs, step):
        ReplayJob.objects.filter(pk=job.pk).update(step=step + 1)  # the sweep gave the job to another step
        return real_batch(job, runs, step)

    monkeypatch.setattr(replays, "_replay_batch", taken_over)
    replay_job_step(job_id=job.pk)
    assert not FlowRun.objects.filter(trigger="replay").exists()
    assert ReplayJob.objects.get(pk=job.pk).created == 0


def test_the_sweep_resumes_a_job_whose_worker_stopped(flow, user, steps, settings):
    enqueued, _ = steps
    _run(flow, status="failed")
    job = replay_job_create(user=user, filters={"status": "failed"})
    enqueued.clear()
    assert replay_jobs_resume_stalled() == 0  # pending, just created: its doorbell is on its way
    stale = timezone.now() - replays.STALLED_AFTER - timedelta(seconds=1)
    ReplayJob.objects.filter(pk=job.pk).update(status="running", heartbeat_at=stale, created_at=stale)
    assert replay_jobs_resume_stalled() == 1 and enqueued == [str(job.pk)]
    assert replay_job_step(job_id=job.pk).status == "succeeded"


def test_the_next_steps_task_waits_in_the_jobs_accounts_lane_with_its_replays(flow, user, settings, monkeypatch):
    """With Redis, a batch's replays wait in their account's lane: the task replaying the next batch must queue there
    too, behind them, not in the lane of the service's own tasks, which the workers take from in its own turn."""
    from django_q.signing import SignedPackage

    from flows.services import queue

    if not settings.Q_CLUSTER.get("redis"):
        pytest.skip("lanes are the Redis broker's")
    monkeypatch.setattr(replays, "_sleep", lambda seconds: None)
    settings.LANGRUN_REPLAY_BATCH = 1
    broker = queue._get_broker()
    broker.purge_queue()
    for _ in range(2):
        _run(flow, status="failed")
    job = replay_job_create(user=user, filters={"status": "failed"})
    replay_job_step(job_id=job.pk)
    lane = [SignedPackage.loads(task) for task in broker.connection.lrange(f"{broker.list_key}:a:{user.pk}", 0, -1)]
    assert [(task["func"], task["args"]) for task in lane] == [(replays.STEP_TASK, (str(job.pk), 1))]
    assert broker.connection.llen(broker.list_key) == 0
    broker.purge_queue()


@pytest.mark.django_db(transaction=True)  # the replays' foreign keys are checked when the batch commits
@pytest.mark.parametrize("deleted", ["flow", "run"])
def test_a_run_deleted_after_the_batch_was_listed_is_skipped_and_the_job_goes_on(make_flow, user, steps, monkeypatch, deleted):
    kept = make_flow(user, endpoint_name="kept")
    gone = make_flow(user, endpoint_name="gone")
    first, lost, last = _run(kept, status="failed"), _run(gone, status="failed"), _run(kept, status="failed")
    job = replay_job_create(user=user, filters={"status": "failed"})
    real_batch = replays._replay_batch

    def deleted_meanwhile(job, runs, step):
        (Flow.objects.filter(pk=gone.pk) if deleted == "flow" else FlowRun.objects.filter(pk=lost.pk)).delete()
        return real_batch(job, runs, step)

    monkeypatch.setattr(replays, "_replay_batch", deleted_meanwhile)
    job = replay_job_step(job_id=job.pk)
    assert (job.status, job.matched, job.created, job.failed, job.error) == ("succeeded", 3, 2, 1, "")
    assert job.errors == [{"run_id": str(lost.pk), "msg": f"Run {lost.pk} was deleted before it was replayed."}]
    assert sorted(FlowRun.objects.filter(trigger="replay").values_list("replay_of_id", flat=True)) == sorted([first.pk, last.pk])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps the delete and the batch apart")
@pytest.mark.django_db(transaction=True)
def test_a_flow_deleted_while_its_runs_are_replayed_is_skipped(make_flow, user, steps):
    # The batch waits for the delete holding the flow, then finds its runs gone, rather than breaking the replays'
    # foreign keys at its commit.
    kept = make_flow(user, endpoint_name="kept")
    gone = make_flow(user, endpoint_name="gone")
    _run(kept, status="failed"), _run(gone, status="failed")
    job = replay_job_create(user=user, filters={"status": "failed"})
    with FlowDeletedMeanwhile(gone):
        job = replay_job_step(job_id=job.pk)
    assert (job.status, job.created, job.failed) == ("succeeded", 1, 1)
    assert not Flow.objects.filter(pk=gone.pk).exists()
    assert FlowRun.objects.filter(trigger="replay", flow=kept).count() == 1


def test_a_step_of_a_job_deleted_meanwhile_does_nothing(flow, user, steps):
    enqueued, _ = steps
    _run(flow, status="failed")
    job = replay_job_create(user=user, filters={"status": "failed"})
    ReplayJob.objects.filter(pk=job.pk).delete()
    assert replay_job_step(job_id=job.pk) is None
    assert not FlowRun.objects.filter(trigger="replay").exists() and enqueued == []
