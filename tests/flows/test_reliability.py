"""Run claims, attempts, retries with backoff, recovery of interrupted runs, concurrency limits, idempotency keys."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

import tests.components  # noqa: F401 - registers the test components
from flows.models import Flow, FlowRun, NodeResult, RunAttempt
from flows.services import execution, queue
from flows.services.execution import _flow_run_finish, _flow_run_outcome, flow_run_backoff, flow_run_claim, flow_run_execute
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from flows.services.sweep import (
    flow_runs_enqueue_due_retries,
    flow_runs_recover_interrupted,
    flow_runs_release_idempotency_keys,
    flow_runs_requeue_stale,
    flow_runs_sweep,
)
from tests.helpers import flaky_flow, side_effect_flow

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def enqueued(monkeypatch):
    """The run ids the services ring the doorbell for (the broker itself is exercised by the e2e tests)."""
    calls = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda *, run_id: calls.append(str(run_id)) or True)
    return calls


def new_run(flow, user, **kw):
    return flow_run_create(flow=flow, user=user, trigger="api", payload={"name": "Ada"}, **kw)


def make_due(run):
    """Move the retry's schedule into the past, as if the backoff had passed."""
    now = timezone.now()
    FlowRun.objects.filter(pk=run.pk).update(enqueued_at=now - timedelta(seconds=2), next_attempt_at=now - timedelta(seconds=1))


# --- retries -------------------------------------------------------------------


def test_retryable_failure_is_retried_after_backoff_until_it_succeeds(user, tmp_path, enqueued, settings):
    settings.LANGRUN_RETRY_BACKOFF = 10
    flow = flow_create(user=user, name="flaky", data=flaky_flow(tmp_path / "calls", fail_times=2))
    flow.max_attempts = 3
    flow.save()
    run = new_run(flow, user)

    before = timezone.now()
    first = flow_run_execute(run_id=run.id)
    assert first.status == "queued" and "upstream answered 503" in first.error
    run.refresh_from_db()
    assert run.attempts == 1 and run.status == "queued"
    assert before + timedelta(seconds=5) <= run.next_attempt_at <= timezone.now() + timedelta(seconds=10)
    # Not before its time, whoever rings.
    assert flow_run_execute(run_id=run.id) is None
    assert flow_runs_enqueue_due_retries() == 0
    assert flow_runs_requeue_stale(older_than=timedelta(0)) == 0

    make_due(run)
    enqueued.clear()
    assert flow_runs_enqueue_due_retries() == 1 and enqueued == [str(run.id)]
    assert flow_runs_enqueue_due_retries() == 0  # rung once per retry
    assert flow_run_execute(run_id=run.id).status == "queued"
    make_due(run)
    final = flow_run_execute(run_id=run.id)

    run.refresh_from_db()
    assert (final.status, run.status, run.attempts, run.error, run.outputs) == ("succeeded", "succeeded", 3, "", {"echo": {"name": "Ada"}})
    attempts = list(run.attempt_log.values_list("number", "outcome"))
    assert attempts == [(1, "retry"), (2, "retry"), (3, "succeeded")]
    assert all("503" in e for e in run.attempt_log.filter(outcome="retry").values_list("error", flat=True))
    assert list(run.node_results.values_list("node_id", "status")) == [("hook", "succeeded"), ("call", "succeeded"), ("out", "succeeded")]
    assert lines(tmp_path / "calls") == 3


def test_retryable_failure_without_attempts_left_fails(user, tmp_path, enqueued):
    flow = flow_create(user=user, name="flaky", data=flaky_flow(tmp_path / "calls", fail_times=5))
    flow.max_attempts = 2
    flow.save()
    run = new_run(flow, user)
    flow_run_execute(run_id=run.id)
    make_due(run)
    assert flow_run_execute(run_id=run.id).status == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.attempts == 2 and "503" in run.error
    assert list(run.attempt_log.values_list("outcome", flat=True)) == ["retry", "failed"]


def test_non_retryable_failure_is_not_retried(user, tmp_path, enqueued):
    flow = flow_create(user=user, name="broken", data=flaky_flow(tmp_path / "calls", fail_times=5, retryable=False))
    flow.max_attempts = 5
    flow.save()
    run = new_run(flow, user)
    assert flow_run_execute(run_id=run.id).status == "failed"
    assert FlowRun.objects.get(pk=run.pk).attempts == 1 and lines(tmp_path / "calls") == 1


def test_default_is_one_attempt(flow):
    assert flow.max_attempts == 1


@pytest.mark.parametrize("attempt, low, high", [(1, 5, 10), (2, 10, 20), (3, 20, 40), (10, 50, 100)])
def test_backoff_is_exponential_capped_and_jittered(settings, attempt, low, high):
    settings.LANGRUN_RETRY_BACKOFF, settings.LANGRUN_RETRY_BACKOFF_MAX = 10, 100
    waits = {flow_run_backoff(attempt=attempt).total_seconds() for _ in range(50)}
    assert all(low <= w <= high for w in waits)
    assert len(waits) > 1  # jitter


# --- recovery --------------------------------------------------------------------


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


def test_worker_that_lost_its_claim_writes_nothing(flow, user, enqueued):
    """A worker declared dead that comes back after another worker re-ran the run cannot overwrite the result."""
    flow.max_attempts = 2
    flow.save()
    run = new_run(flow, user)
    flow_run_claim(run_id=run.id)
    stale = FlowRun.objects.select_related("flow").get(pk=run.pk)  # what the first worker holds (attempts=1)
    flow_runs_recover_interrupted(lease=timedelta(0))
    assert flow_run_execute(run_id=run.id).status == "succeeded"
    result = _flow_run_finish(stale, status="failed", outputs=None, error="late", nodes=[])
    run.refresh_from_db()
    assert result.status == "succeeded" and run.status == "succeeded" and run.error == "" and run.attempts == 2
    assert NodeResult.objects.filter(run=run).count() == 3


def test_finished_run_is_never_executed_again(flow, user, enqueued):
    run = new_run(flow, user)
    assert flow_run_execute(run_id=run.id).status == "succeeded"
    assert flow_run_execute(run_id=run.id) is None
    assert flow_runs_recover_interrupted(lease=timedelta(0)) == 0
    assert FlowRun.objects.get(pk=run.pk).attempts == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_on_one_run_execute_it_once(make_user, tmp_path):
    user = make_user()
    flow = flow_create(user=user, name="effect", data=side_effect_flow(tmp_path / "effects", delay=0.2))
    runs = [new_run(flow, user) for _ in range(5)]
    for run in runs:
        barrier = threading.Barrier(2)
        results = []

        def worker(run_id=run.id, barrier=barrier, results=results):
            barrier.wait()
            try:
                results.append(flow_run_execute(run_id=run_id))
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(r is None for r in results) == [False, True]
    assert lines(tmp_path / "effects") == 5
    assert set(FlowRun.objects.values_list("status", "attempts")) == {("succeeded", 1)}
    assert RunAttempt.objects.count() == 5


# --- concurrency limit -----------------------------------------------------------


def test_runs_beyond_the_flow_concurrency_limit_wait_in_the_queue(flow, user, enqueued):
    flow.max_concurrent_runs = 1
    flow.save()
    first, second = new_run(flow, user), new_run(flow, user)
    assert flow_run_claim(run_id=first.id)
    assert flow_run_execute(run_id=second.id) is None
    assert FlowRun.objects.get(pk=second.pk).status == "queued"
    enqueued.clear()
    # The first run finishing rings for the one waiting.
    running = FlowRun.objects.select_related("flow").get(pk=first.pk)
    _flow_run_finish(running, status="succeeded", outputs={}, error="", nodes=[])
    assert enqueued == [str(second.id)]
    assert flow_run_execute(run_id=second.id).status == "succeeded"


# --- idempotency keys --------------------------------------------------------------


def test_same_idempotency_key_returns_the_original_run(flow, user, make_flow, enqueued):
    first = new_run(flow, user, idempotency_key="evt-1")
    again = new_run(flow, user, idempotency_key="evt-1")
    other = new_run(flow, user, idempotency_key="evt-2")
    elsewhere = new_run(make_flow(user, endpoint_name="other"), user, idempotency_key="evt-1")
    assert (first.deduplicated, again.deduplicated, other.deduplicated, elsewhere.deduplicated) == (False, True, False, False)
    assert again.pk == first.pk and other.pk != first.pk and elsewhere.pk != first.pk
    assert FlowRun.objects.count() == 3


def test_idempotency_key_is_free_again_after_the_retention_window(flow, user, settings, enqueued):
    settings.LANGRUN_IDEMPOTENCY_RETENTION = 60
    first = new_run(flow, user, idempotency_key="evt-1")
    FlowRun.objects.filter(pk=first.pk).update(received_at=timezone.now() - timedelta(seconds=61))
    later = new_run(flow, user, idempotency_key="evt-1")
    assert later.pk != first.pk and not later.deduplicated
    assert FlowRun.objects.get(pk=first.pk).idempotency_key is None
    FlowRun.objects.filter(pk=later.pk).update(received_at=timezone.now() - timedelta(seconds=61))
    assert flow_runs_release_idempotency_keys() == 1
    assert not FlowRun.objects.filter(idempotency_key__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_run(make_user, make_flow):
    user = make_user()
    flow = make_flow(user)
    barrier = threading.Barrier(8)
    ids = []

    def send():
        barrier.wait()
        try:
            ids.append(new_run(flow, user, idempotency_key="same").pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert FlowRun.objects.count() == 1


# --- the sweep -----------------------------------------------------------------


def test_sweep_does_all_its_jobs(flow, user, enqueued, capsys):
    assert flow_runs_sweep() == {"recovered": 0, "retried": 0, "requeued": 0, "keys_released": 0}
    call_command("sweep_runs")
    assert "recovered: 0" in capsys.readouterr().out


def test_due_retries_report_the_runs_enqueued(flow, user, monkeypatch):
    runs = [new_run(flow, user) for _ in range(3)]
    for run in runs:
        make_due(run)
    rung = []

    def enqueue(*, run_id):
        rung.append(str(run_id))
        FlowRun.objects.filter(pk=runs[2].pk).update(status="cancelled")  # cancelled after the sweep listed it
        return str(run_id) != str(runs[1].id)  # the broker refused this one

    monkeypatch.setattr(queue, "flow_run_enqueue", enqueue)
    assert flow_runs_enqueue_due_retries() == 1
    assert rung == [str(runs[0].id), str(runs[1].id)]


# --- outputs the database cannot store ------------------------------------------

NUL_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "char", "type": "Template", "params": {"template": "{name:c}"}},
        {"id": "out", "type": "Output", "params": {"name": "char"}},
    ],
    "edges": [
        {"source": "hook", "target": "char", "target_input": "data"},
        {"source": "char", "target": "out", "target_input": "value"},
    ],
}


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_run_whose_output_cannot_be_stored_fails_with_a_clear_error(user, attempt):
    flow = flow_create(user=user, name="NUL", data=NUL_FLOW, max_attempts=3)
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"name": 0})
    if attempt == 2:  # a later attempt is finished by the general path
        FlowRun.objects.filter(pk=run.pk).update(attempts=1)
        RunAttempt.objects.create(run=run, number=1, outcome="interrupted", started_at=timezone.now())
    flow_run_execute(run_id=run.id)
    row = FlowRun.objects.get(pk=run.pk)
    assert (row.status, row.attempts, row.outputs) == ("failed", attempt, None)
    assert row.error == "Node 'char' output contains a NUL character, which cannot be stored."
    assert RunAttempt.objects.get(run=run, number=attempt).outcome == "failed"


def test_a_run_whose_finish_the_database_refuses_fails_instead_of_staying_running(flow, user, monkeypatch):
    real = _flow_run_outcome
    monkeypatch.setattr(execution, "_flow_run_outcome", lambda run, parse: real(run, parse)._replace(error="refused \ud800"))
    run = new_run(flow, user)
    flow_run_execute(run_id=run.id)
    row = FlowRun.objects.get(pk=run.pk)
    assert (row.status, row.outputs, row.finished_at is not None) == ("failed", None, True)
    assert row.error.startswith("The run's result could not be recorded")
    assert RunAttempt.objects.get(run=run).outcome == "failed"


# --- the API's view of it ---------------------------------------------------------


def test_flow_api_sets_attempts_and_concurrency(key_client):
    from tests.helpers import GREETING_FLOW

    body = {"name": "R", "data": GREETING_FLOW, "max_attempts": 3, "max_concurrent_runs": 2}
    created = key_client.post("/api/v1/flows/", body, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["max_attempts"], created.json()["max_concurrent_runs"], created.json()["signed"]) == (3, 2, False)
    flow_id = created.json()["id"]
    patched = key_client.patch(f"/api/v1/flows/{flow_id}", {"max_concurrent_runs": None}, format="json")
    assert patched.status_code == 200 and patched.json()["max_concurrent_runs"] is None
    bad = key_client.post("/api/v1/flows/", {**body, "max_attempts": 0}, format="json")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "max_attempts"]
    assert key_client.post("/api/v1/flows/", {"name": "D", "data": GREETING_FLOW}, format="json").json()["max_attempts"] == 1


def test_run_detail_shows_every_attempt(key_client, flow, user, enqueued):
    flow.max_attempts = 2
    flow.save()
    run = new_run(flow, user)
    flow_run_claim(run_id=run.id)
    flow_runs_recover_interrupted(lease=timedelta(0))
    flow_run_execute(run_id=run.id)
    log = key_client.get(f"/api/v1/runs/{run.id}/attempts").json()
    assert [(a["number"], a["outcome"]) for a in log] == [(1, "interrupted"), (2, "succeeded")]
    assert "interrupted" in log[0]["error"] and log[1]["finished_at"]
