"""flows.services.execution: claim, execute and finish a run on both of the worker's paths, retries, lost claims, concurrency limits, outcomes the database cannot store."""

import datetime
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import tests.components  # noqa: F401 - registers the test components
from flows.engine import Component, Input, Output
from flows.engine.registry import register, registry
from flows.models import FlowRun, NodeResult, RunAttempt
from flows.services import execution
from flows.services.execution import (
    _flow_run_claim,
    _flow_run_finish,
    _flow_run_outcome,
    _graph_parsed,
    flow_run_backoff,
    flow_run_claim,
    flow_run_execute,
)
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from flows.services.storable import _json_text, _jsonable
from flows.services.sweep import (
    flow_runs_enqueue_due_retries,
    flow_runs_recover_interrupted,
    flow_runs_requeue_stale,
)
from tests.helpers import at_once, flaky_flow, lines, make_due, new_run, side_effect_flow

pytestmark = pytest.mark.usefixtures("execute_path")


class AppendToList(Component):
    """Test only: appends the input to its list param and outputs the list (a component that changes what it is given)."""

    name = "TestAppendToList"
    inputs = (Input("data", "any"), Input("items", "list", connectable=False))
    outputs = (Output("items", "list"),)

    def run(self, *, data: Any, items: list) -> dict[str, Any]:
        items.append(data)
        return {"items": items}


if AppendToList.name not in registry:
    register(AppendToList)


APPEND_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "add", "type": "TestAppendToList", "params": {"items": ["first"]}},
        {"id": "out", "type": "Output", "params": {"name": "items"}},
    ],
    "edges": [
        {"source": "hook", "target": "add", "target_input": "data"},
        {"source": "add", "target": "out", "target_input": "value"},
    ],
}


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


def run_of(flow, user, payload=None, **kw):
    return flow_run_create(flow=flow, user=user, trigger="webhook", payload=payload or {"name": "Ada"}, **kw)


def test_the_returned_run_reads_what_it_did_not_load(flow, user):
    run = run_of(flow, user, body='{"name": "Ada"}', content_type="application/json")
    done = flow_run_execute(run_id=run.id)
    assert (done.status, done.attempts, done.outputs) == ("succeeded", 1, {"greeting": "Hello Ada!"})
    assert (done.body, done.content_type, done.trigger, done.flow.name) == ('{"name": "Ada"}', "application/json", "webhook", flow.name)
    assert done.version.number == 1
    stored = FlowRun.objects.get(pk=run.pk)
    assert (stored.status, stored.outputs, stored.finished_at, stored.worker) == (done.status, done.outputs, done.finished_at, done.worker)
    outputs = list(NodeResult.objects.filter(run=run).values_list("node_id", "output", "error", "traceback"))
    assert outputs == [
        ("hook", {"data": {"name": "Ada"}}, "", ""),
        ("greet", {"text": "Hello Ada!"}, "", ""),
        ("out", {"value": "Hello Ada!"}, "", ""),
    ]
    assert all(d >= 0 for d in NodeResult.objects.filter(run=run).values_list("duration_ms", flat=True))
    [attempt] = RunAttempt.objects.filter(run=run)
    assert (attempt.number, attempt.outcome, attempt.started_at, attempt.finished_at) == (
        1,
        "succeeded",
        stored.started_at,
        stored.finished_at,
    )


def test_no_outputs_are_stored_as_null_not_as_json_null(flow, user):
    failed = run_of(flow, user, payload={"other": 1})  # the template's {name} is missing
    flow_run_execute(run_id=failed.id)
    skipped = NodeResult.objects.get(run=failed, node_id="out")
    assert skipped.status == "skipped" and NodeResult.objects.filter(pk=skipped.pk, output__isnull=True).exists()
    greet = NodeResult.objects.get(run=failed, node_id="greet")
    assert greet.status == "failed" and "'name' is missing" in greet.error and "Traceback" in greet.traceback
    flow.versions.update(data={"nodes": [{"id": "x", "type": "Gone"}]})
    invalid = run_of(flow, user)
    assert flow_run_execute(run_id=invalid.id).outputs is None
    assert FlowRun.objects.filter(pk=invalid.pk, status="failed", outputs__isnull=True).exists()


def test_a_run_recorded_before_versions_executes_the_flows_graph(flow, user):
    run = run_of(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(version=None)
    done = flow_run_execute(run_id=run.id)
    assert done.version_id is None and done.outputs == {"greeting": "Hello Ada!"}
    assert FlowRun.objects.get(pk=run.pk).status == "succeeded"


def test_tweaked_and_plain_runs_of_one_version_each_run_their_own_graph(flow, user):
    tweaked = run_of(flow, user, tweaks={"greet": {"template": "Bye {name}"}})
    plain = run_of(flow, user)
    tweaked_again = run_of(flow, user, tweaks={"greet": {"template": "Bye {name}"}})
    assert [flow_run_execute(run_id=r.id).outputs for r in (tweaked, plain, tweaked_again)] == [
        {"greeting": "Bye Ada"},
        {"greeting": "Hello Ada!"},
        {"greeting": "Bye Ada"},
    ]


def test_a_component_changing_its_params_does_not_change_the_next_run(make_flow, user):
    flow = make_flow(user, data=APPEND_FLOW, name="append")
    first, second = run_of(flow, user, payload={"n": 1}), run_of(flow, user, payload={"n": 2})
    assert flow_run_execute(run_id=first.id).outputs == {"items": ["first", {"n": 1}]}
    assert flow_run_execute(run_id=second.id).outputs == {"items": ["first", {"n": 2}]}


def test_values_json_cannot_hold_are_stored_as_jsonable_makes_them():
    value = {1: ("a", datetime.date(2026, 1, 2)), "none": None, "nested": [{"t": (1, 2.5)}]}
    assert json.loads(_json_text(value)) == _jsonable(value)
    assert _json_text(None) is None and _jsonable(None) is None


def test_one_statement_claim_and_one_statement_finish(flow, user, execute_path):
    if execute_path != "returning":
        pytest.skip("counts the round trips of the hand-written path")
    warm, run = run_of(flow, user), run_of(flow, user)
    flow_run_execute(run_id=warm.id)
    with CaptureQueriesContext(connection) as queries:
        assert flow_run_execute(run_id=run.id).status == "succeeded"
    sent = [q["sql"].split(" times: ")[-1].split()[0] for q in queries.captured_queries]  # executemany: "4 times: INSERT …"
    if connection.vendor == "postgresql":
        # No BEGIN/COMMIT either: each statement is atomic by itself (the finish takes a savepoint only
        # inside a transaction, this test's; a worker is in none).
        assert [s for s in sent if s not in ("SAVEPOINT", "RELEASE")] == ["WITH", "WITH"]
    else:  # SQLite: the claim's three statements in one transaction, the finish's three in another
        assert sent == ["SAVEPOINT", "UPDATE", "INSERT", "SELECT", "RELEASE", "SAVEPOINT", "UPDATE", "UPDATE", "INSERT", "RELEASE"]


def test_the_graph_of_a_version_is_parsed_once_per_process(flow, user, execute_path):
    if execute_path != "returning":
        pytest.skip("the parsed-graph cache is the one-statement path's")
    _graph_parsed.cache_clear()
    for _ in range(3):
        flow_run_execute(run_id=run_of(flow, user).id)
    info = _graph_parsed.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_runs_of_a_concurrency_limited_flow_take_the_general_path(flow, user, execute_path, monkeypatch):
    if execute_path != "returning":
        pytest.skip("which path the hand-written claim leaves to the general one")
    general = []
    monkeypatch.setattr(execution, "_flow_run_claim", lambda real=_flow_run_claim, **kw: general.append("claim") or real(**kw))
    flow.max_concurrent_runs = 2
    flow.save()
    assert flow_run_execute(run_id=run_of(flow, user).id).status == "succeeded"
    assert general == ["claim"]
    flow.max_concurrent_runs = None
    flow.save()
    assert flow_run_execute(run_id=run_of(flow, user).id).status == "succeeded"
    assert general == ["claim"]


def test_execute_records_outputs_and_node_results(queued_run):
    run = flow_run_execute(run_id=queued_run.id)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 1
    assert run.outputs == {"greeting": "Hello Ada!"}
    assert run.started_at <= run.finished_at
    rows = list(run.node_results.values_list("node_id", "component_type", "status", "order"))
    assert rows == [("hook", "Webhook", "succeeded", 0), ("greet", "Template", "succeeded", 1), ("out", "Output", "succeeded", 2)]


def test_failed_node_fails_run_with_node_and_message(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"other": 1})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "'greet'" in run.error and "'name' is missing" in run.error
    assert dict(run.node_results.values_list("node_id", "status")) == {"hook": "succeeded", "greet": "failed", "out": "skipped"}


def test_claim_is_once_only(queued_run):
    assert flow_run_claim(run_id=queued_run.id) is True
    assert flow_run_claim(run_id=queued_run.id) is False


def test_duplicate_delivery_does_nothing(queued_run):
    flow_run_execute(run_id=queued_run.id)
    assert flow_run_execute(run_id=queued_run.id) is None
    queued_run.refresh_from_db()
    assert queued_run.attempts == 1 and NodeResult.objects.filter(run=queued_run).count() == 3


def test_invalid_stored_graph_fails_the_run(flow, user):
    # A component type that was removed after the flow was saved: its stored version still names it.
    type(flow).objects.filter(pk=flow.pk).update(data={"nodes": [{"id": "x", "type": "Gone"}]})
    flow.versions.update(data={"nodes": [{"id": "x", "type": "Gone"}]})
    flow.refresh_from_db()
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "Unknown component type 'Gone'" in run.error


def test_task_entry_point_runs_the_service(queued_run):
    from flows.tasks import execute_run

    assert execute_run(str(queued_run.id)) == "succeeded"
    assert execute_run(str(queued_run.id)) is None


@pytest.mark.parametrize(
    ("setting", "limit", "name", "error"),
    [
        ("LANGRUN_MAX_OUTPUT_BYTES", 200, "A" * 300, "its output is larger than the limit of 200 bytes (LANGRUN_MAX_OUTPUT_BYTES)"),
        # The greeting flow's three nodes each hold the name.
        ("LANGRUN_MAX_RUN_OUTPUT_BYTES", 400, "A" * 150, "the run's outputs together are larger than the limit of 400 bytes"),
    ],
)
def test_an_output_over_its_limit_fails_that_run_only(flow, user, settings, setting, limit, name, error):
    setattr(settings, setting, limit)
    small = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    large = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": name})
    flow_run_execute(run_id=small.id)
    flow_run_execute(run_id=large.id)
    small.refresh_from_db()
    large.refresh_from_db()
    assert (small.status, large.status) == ("succeeded", "failed")
    assert error in large.error


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
        results = at_once(*[lambda run_id=run.id: flow_run_execute(run_id=run_id)] * 2)
        assert sorted(r is None for r in results) == [False, True]
    assert lines(tmp_path / "effects") == 5
    assert set(FlowRun.objects.values_list("status", "attempts")) == {("succeeded", 1)}
    assert RunAttempt.objects.count() == 5


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
