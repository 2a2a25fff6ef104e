"""flows.services.execution, batches of quick runs (flow_runs_execute): what a batch records, and that one run's trouble stays its own."""

import dataclasses
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import tests.components  # noqa: F401 - registers the test components
from flows import engine, tasks
from flows.models import FlowRun, NodeResult, RunAttempt
from flows.services import execution
from flows.services.execution import _flow_run_outcome, flow_run_execute, flow_runs_execute
from flows.services.runs import flow_run_cancel
from langrun.logs import RunContextFilter
from tests.helpers import flaky_flow, run_of

pytestmark = pytest.mark.usefixtures("execute_path")


def stored(run_id):
    """What the ledger holds of a run, its attempts and its node results (ids and times left out)."""
    run = FlowRun.objects.get(pk=run_id)
    attempts = list(RunAttempt.objects.filter(run_id=run_id).order_by("number").values_list("number", "outcome", "error", "finished_at"))
    nodes = list(
        NodeResult.objects.filter(run_id=run_id)
        .order_by("order")
        .values_list("node_id", "component_type", "status", "output", "error", "traceback", "order")
    )
    return (run.status, run.attempts, run.outputs, run.error, run.finished_at is not None, attempts, nodes)


# --- Which runs are quick ----------------------------------------------------------


# --- Merging in the broker ---------------------------------------------------------


# --- What a batch records ----------------------------------------------------------


def test_a_batch_records_what_the_runs_alone_would(flow, user, make_flow):
    alone = [run_of(flow, user, name=n) for n in ("Ada", "Bo")]
    for run in alone:
        flow_run_execute(run_id=run.id)
    batch = [run_of(flow, user, name=n) for n in ("Ada", "Bo")]
    done = flow_runs_execute(run_ids=[run.id for run in batch])
    assert sorted(run.outputs["greeting"] for run in done) == ["Hello Ada!", "Hello Bo!"]
    assert all(run.status == "succeeded" and run.finished_at is not None for run in done)

    def same(row):  # finish times differ
        status, attempts, outputs, error, finished, attempt_rows, nodes = row
        return (status, attempts, outputs, error, finished, [a[:3] for a in attempt_rows], nodes)

    assert [same(stored(run.id)) for run in batch] == [same(stored(run.id)) for run in alone]
    for run in batch:
        run_row = FlowRun.objects.get(pk=run.pk)
        assert RunAttempt.objects.get(run=run).finished_at == run_row.finished_at


def test_a_batch_takes_two_statements_for_all_its_runs(flow, user, execute_path):
    if execute_path != "returning" or connection.vendor != "postgresql":
        pytest.skip("one claim and one finish for any number of runs: PostgreSQL's hand-written statements")
    flow_run_execute(run_id=run_of(flow, user).id)  # warm: the flow's graph parsed, statements prepared
    runs = [run_of(flow, user, name=str(i)) for i in range(5)]
    with CaptureQueriesContext(connection) as queries:
        done = flow_runs_execute(run_ids=[run.id for run in runs])
    # The finish takes a savepoint only inside a transaction (this test's), which a worker is not in.
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    assert [s for s in statements if s not in ("SAVEPOINT", "RELEASE")] == ["WITH", "WITH"]
    assert {run.status for run in done} == {"succeeded"} and len(done) == 5


def test_runs_the_batch_claim_leaves_go_one_by_one(flow, user, make_flow):
    limited = make_flow(user, name="Limited")
    limited.max_concurrent_runs = 1
    limited.save()
    finished = run_of(flow, user)
    flow_run_execute(run_id=finished.id)
    cancelled = run_of(flow, user)
    flow_run_cancel(run=cancelled)
    fresh, waiting = run_of(flow, user, name="Bo"), run_of(limited, user, name="Cy")
    ids = [finished.id, fresh.id, cancelled.id, waiting.id, fresh.id]  # a doorbell rung twice too
    done = flow_runs_execute(run_ids=ids)
    assert sorted(str(run.id) for run in done) == sorted([str(fresh.id), str(waiting.id)])
    assert FlowRun.objects.get(pk=fresh.pk).outputs == {"greeting": "Hello Bo!"}
    assert FlowRun.objects.get(pk=waiting.pk).outputs == {"greeting": "Hello Cy!"}
    assert FlowRun.objects.get(pk=cancelled.pk).status == "cancelled"
    assert RunAttempt.objects.filter(run_id=fresh.pk).count() == 1
    assert NodeResult.objects.filter(run_id=fresh.pk).count() == 3
    assert FlowRun.objects.get(pk=finished.pk).attempts == 1


def test_a_run_that_raises_stays_running_and_the_others_are_recorded(flow, user, monkeypatch, caplog):
    runs = [run_of(flow, user, name=n) for n in ("Ada", "boom", "Cy")]
    real = engine.run_graph

    def run_graph(graph, *, context, **kw):
        if context.payload == {"name": "boom"}:
            raise RuntimeError("a bug in the engine")
        return real(graph, context=context, **kw)

    monkeypatch.setattr(engine, "run_graph", run_graph)
    ids = [run.id for run in runs]
    if execution._returning_sql():
        with caplog.at_level(logging.ERROR, logger="flows.services"):
            done = flow_runs_execute(run_ids=ids)
        assert sorted(run.outputs["greeting"] for run in done) == ["Hello Ada!", "Hello Cy!"]
        assert "a bug in the engine" in caplog.text
    else:  # one by one, as single runs: the exception reaches the task, after the runs before it
        with pytest.raises(RuntimeError, match="a bug in the engine"):
            flow_runs_execute(run_ids=ids)
    assert FlowRun.objects.get(pk=runs[0].pk).status == "succeeded"
    assert FlowRun.objects.get(pk=runs[1].pk).status == "running"  # the sweep recovers it, as it would alone


def test_a_retryable_failure_in_a_batch_goes_back_to_the_queue(tmp_path, make_flow, flow, user):
    flaky = make_flow(user, data=flaky_flow(tmp_path / "calls", fail_times=1), name="Flaky")
    flaky.max_attempts = 2
    flaky.save()
    first, retried = run_of(flow, user), run_of(flaky, user)
    done = flow_runs_execute(run_ids=[first.id, retried.id])
    assert {str(run.id): run.status for run in done} == {str(first.id): "succeeded", str(retried.id): "queued"}
    row = FlowRun.objects.get(pk=retried.pk)
    assert (row.status, row.attempts, row.next_attempt_at is not None) == ("queued", 1, True)
    assert list(RunAttempt.objects.filter(run=retried).values_list("outcome", flat=True)) == ["retry"]
    # Its second attempt, batched with another run, is finished the way later attempts are (no node results left over).
    FlowRun.objects.filter(pk=retried.pk).update(next_attempt_at=None)
    other = run_of(flow, user, name="Bo")
    done = flow_runs_execute(run_ids=[retried.id, other.id])
    assert sorted(run.status for run in done) == ["succeeded", "succeeded"]
    assert stored(retried.id)[:2] == ("succeeded", 2)
    assert list(RunAttempt.objects.filter(run=retried).order_by("number").values_list("outcome", flat=True)) == ["retry", "succeeded"]
    assert NodeResult.objects.filter(run=retried).count() == 3


@pytest.mark.parametrize(
    "meanwhile",
    [
        {"status": "failed", "error": "interrupted"},  # the sweep declared the attempt interrupted, with none left
        {"attempts": 2, "error": "interrupted"},  # ... or queued it again, and another worker claimed it
    ],
)
def test_a_run_whose_claim_was_lost_meanwhile_records_nothing(flow, user, monkeypatch, caplog, meanwhile):
    kept, lost = run_of(flow, user, name="Ada"), run_of(flow, user, name="Bo")
    real = _flow_run_outcome

    def outcome(run, parse):
        if run.pk == lost.pk:
            FlowRun.objects.filter(pk=run.pk).update(**meanwhile)
        return real(run, parse)

    monkeypatch.setattr(execution, "_flow_run_outcome", outcome)
    with caplog.at_level(logging.WARNING, logger="flows.services"):
        done = flow_runs_execute(run_ids=[kept.id, lost.id])
    by_id = {run.pk: run for run in done}
    assert by_id[kept.pk].status == "succeeded"
    assert (by_id[lost.pk].status, by_id[lost.pk].error) == (meanwhile.get("status", "running"), "interrupted")  # as the ledger holds it
    assert FlowRun.objects.get(pk=lost.pk).finished_at is None
    assert NodeResult.objects.filter(run=lost).count() == 0
    assert RunAttempt.objects.get(run=lost).outcome == "running"
    assert "finished after losing its claim" in caplog.text


def test_the_batch_task_logs_each_run(flow, user, caplog):
    runs = [run_of(flow, user, name=n) for n in ("Ada", "Bo")]
    caplog.handler.addFilter(RunContextFilter())
    with caplog.at_level(logging.INFO, logger="flows.tasks"):
        assert tasks.execute_quick_runs([(str(run.id), str(flow.id)) for run in runs]) == ["succeeded", "succeeded"]
    lines = [r for r in caplog.records if r.name == "flows.tasks"]
    assert len(lines) == 2 and all("Run succeeded (version 1), one of 2" in r.getMessage() for r in lines)
    assert sorted(str(r.run_id) for r in lines) == sorted(str(run.id) for run in runs)


# --- Outputs the database cannot store ---------------------------------------------

# `{n:c}` turns a number into its character: 0 is a NUL, 0xD800 a lone surrogate. Neither can be stored
# in PostgreSQL (nor a lone surrogate in SQLite's text), wherever it appears in what a run records.
CHAR_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "char", "type": "Template", "params": {"template": "{n:c}"}},
        {"id": "out", "type": "Output", "params": {"name": "char"}},
    ],
    "edges": [
        {"source": "hook", "target": "char", "target_input": "data"},
        {"source": "char", "target": "out", "target_input": "value"},
    ],
}


@pytest.mark.parametrize("code, named", [(0, "a NUL character"), (0xD800, "an unpaired surrogate character")])
def test_an_output_that_cannot_be_stored_fails_its_run_alone(flow, user, make_flow, code, named):
    chars = make_flow(user, data=CHAR_FLOW, name="Chars")
    good, bad, after = run_of(flow, user, name="Ada"), run_of(chars, user, n=code), run_of(chars, user, n=65)
    done = flow_runs_execute(run_ids=[good.id, bad.id, after.id])
    assert {str(run.id): run.status for run in done} == {str(good.id): "succeeded", str(bad.id): "failed", str(after.id): "succeeded"}
    assert stored(good.id)[:3] == ("succeeded", 1, {"greeting": "Hello Ada!"})
    assert stored(after.id)[:3] == ("succeeded", 1, {"char": "A"})
    status, attempts, outputs, error, finished, attempt_rows, nodes = stored(bad.id)
    assert (status, attempts, outputs, finished) == ("failed", 1, None, True)
    assert error == f"Node 'char' output contains {named}, which cannot be stored."
    assert [(a[1], a[2]) for a in attempt_rows] == [("failed", error)]
    by_node = {n[0]: n for n in nodes}
    assert by_node["char"][2:5] == ("failed", None, f"Its output contains {named}, which cannot be stored.")
    assert by_node["hook"][2:4] == ("succeeded", {"data": {"n": code}})


def test_an_error_text_that_cannot_be_stored_is_stored_escaped(flow, user, monkeypatch):
    runs = [run_of(flow, user, name=n) for n in ("Ada", "bad")]
    real = engine.run_graph

    def run_graph(graph, *, context, **kw):
        result = real(graph, context=context, **kw)
        if context.payload == {"name": "bad"}:
            result = dataclasses.replace(result, status="failed", outputs=None, error="bad \x00 and \ud800 here")
        return result

    monkeypatch.setattr(engine, "run_graph", run_graph)
    done = flow_runs_execute(run_ids=[run.id for run in runs])
    assert sorted(run.status for run in done) == ["failed", "succeeded"]
    assert FlowRun.objects.get(pk=runs[1].pk).error == "bad \\x00 and \\ud800 here"
    assert FlowRun.objects.get(pk=runs[0].pk).outputs == {"greeting": "Hello Ada!"}


def test_an_infinite_number_in_the_outputs_fails_its_run_alone(flow, user, monkeypatch):
    runs = [run_of(flow, user, name=n) for n in ("Ada", "inf")]
    real = engine.run_graph

    def run_graph(graph, *, context, **kw):
        result = real(graph, context=context, **kw)
        if context.payload == {"name": "inf"}:
            result = dataclasses.replace(result, outputs={"greeting": float("inf")})
        return result

    monkeypatch.setattr(engine, "run_graph", run_graph)
    done = flow_runs_execute(run_ids=[run.id for run in runs])
    assert sorted(run.status for run in done) == ["failed", "succeeded"]
    assert stored(runs[1].id)[:4] == (
        "failed",
        1,
        None,
        "The run's outputs contain a number that is infinite or NaN, which cannot be stored.",
    )
    assert FlowRun.objects.get(pk=runs[0].pk).outputs == {"greeting": "Hello Ada!"}


def _circular():
    loop = []
    loop.append(loop)
    return {"loop": loop}


@pytest.mark.parametrize(
    "spoil",
    [
        {"error": "unstorable \ud800"},  # the database itself refuses it
        {"outputs": _circular()},  # JSON cannot write it
    ],
)
def test_a_finish_that_fails_anyway_fails_that_run_alone(flow, user, monkeypatch, caplog, spoil):
    """Defence in depth: whatever makes a finish fail, the batch falls back to finishing each run on its own."""
    runs = [run_of(flow, user, name=n) for n in ("Ada", "bad", "Cy")]
    real = _flow_run_outcome

    def outcome(run, parse):
        found = real(run, parse)
        if run.payload == {"name": "bad"}:  # past the storable check
            found = found._replace(**spoil)
        return found

    monkeypatch.setattr(execution, "_flow_run_outcome", outcome)
    with caplog.at_level(logging.ERROR, logger="flows.services"):
        done = flow_runs_execute(run_ids=[run.id for run in runs])
    assert {str(run.id): run.status for run in done} == {
        str(runs[0].id): "succeeded",
        str(runs[1].id): "failed",
        str(runs[2].id): "succeeded",
    }
    assert [FlowRun.objects.get(pk=run.pk).outputs for run in (runs[0], runs[2])] == [{"greeting": "Hello Ada!"}, {"greeting": "Hello Cy!"}]
    status, attempts, outputs, error, finished, attempt_rows, nodes = stored(runs[1].id)
    assert (status, attempts, outputs, finished, nodes) == ("failed", 1, None, True, [])
    assert error.startswith("The run's result could not be recorded")
    assert [a[1] for a in attempt_rows] == ["failed"]
    assert "could not be recorded" in caplog.text
