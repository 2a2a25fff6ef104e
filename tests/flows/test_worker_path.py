"""The worker's execution of a run: what both its paths store, and what the one-statement path saves."""

import datetime
import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from flows.engine import Component, Input, Output
from flows.engine.registry import register, registry
from flows.models import FlowRun, NodeResult, RunAttempt
from flows.services import execution
from flows.services.execution import _flow_run_claim, _graph_parsed, flow_run_execute
from flows.services.runs import flow_run_create
from flows.services.storable import _json_text, _jsonable

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
