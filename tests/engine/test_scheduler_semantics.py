"""Execution semantics: branching, timeouts, tracebacks, variables and their masking; declaration-driven checks."""

import time

import pytest

from flows.engine import (
    Component,
    GraphValidationError,
    Input,
    Output,
    RunContext,
    parse_graph,
    registry,
    run_graph,
    variable_references,
)
from flows.engine.registry import Registry

BRANCHES = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "if", "type": "Condition", "params": {"path": "status", "operator": "equals", "value": "paid"}},
        {"id": "yes", "type": "Template", "params": {"template": "Thanks for paying order {id}"}},
        {"id": "no", "type": "Template", "params": {"template": "Order {id} is {status}"}},
        {"id": "yes_out", "type": "Output", "params": {"name": "paid"}},
        {"id": "join", "type": "TextJoin"},
        {"id": "merged", "type": "Template", "params": {"template": "[{a}{b}]"}},
        {"id": "out", "type": "Output", "params": {"name": "message"}},
        {"id": "merged_out", "type": "Output", "params": {"name": "merged"}},
    ],
    "edges": [
        {"source": "hook", "target": "if"},
        {"source": "if", "source_output": "true", "target": "yes", "target_input": "data"},
        {"source": "if", "source_output": "false", "target": "no", "target_input": "data"},
        {"source": "yes", "target": "yes_out"},
        {"source": "yes", "target": "join", "target_input": "texts"},
        {"source": "no", "target": "join", "target_input": "texts"},
        {"source": "join", "target": "out"},
        {"source": "yes", "target": "merged", "target_input": "a"},
        {"source": "no", "target": "merged", "target_input": "b"},
        {"source": "merged", "target": "merged_out"},
    ],
}


def statuses(result):
    return {n.node_id: n.status for n in result.nodes}


def test_unchosen_branch_is_skipped_and_merge_nodes_run():
    result = run_graph(parse_graph(BRANCHES), payload={"id": 42, "status": "paid"})
    assert result.status == "succeeded"
    assert result.outputs == {
        "paid": "Thanks for paying order 42",
        "message": "Thanks for paying order 42",
        "merged": "[Thanks for paying order 42None]",
    }
    s = statuses(result)
    assert s["no"] == "skipped" and s["yes"] == s["join"] == s["merged"] == "succeeded"


def test_other_branch():
    result = run_graph(parse_graph(BRANCHES), payload={"id": 7, "status": "open"})
    assert result.outputs == {"message": "Order 7 is open", "merged": "[NoneOrder 7 is open]"}
    assert statuses(result)["yes"] == statuses(result)["yes_out"] == "skipped"


class Sleeper(Component):
    """Sleeps for the test."""

    name = "Sleeper"
    inputs = (Input("seconds", "number", connectable=False), Input("data", "any", required=False))
    outputs = (Output("data", "any"),)

    def run(self, *, seconds, data=None):
        time.sleep(seconds)
        return {"data": data}


class Broken(Component):
    """Raises an unexpected exception."""

    name = "Broken"
    inputs = (Input("data", "any", required=False),)
    outputs = (Output("data", "any"),)

    def run(self, *, data=None):
        return {"data": helper_that_breaks(data)}


def helper_that_breaks(data):
    return {}["missing"]


@pytest.fixture
def local_registry():
    reg = Registry()
    for name in ("Webhook", "Output", "Template"):
        reg.register(registry.get(name))
    reg.register(Sleeper)
    reg.register(Broken)
    return reg


def test_run_timeout_fails_the_run_and_stops_further_nodes(local_registry):
    data = {
        "nodes": [
            {"id": "a", "type": "Sleeper", "params": {"seconds": 0.15}},
            {"id": "b", "type": "Sleeper", "params": {"seconds": 0}},
            {"id": "out", "type": "Output"},
        ],
        "edges": [{"source": "a", "target": "b", "target_input": "data"}, {"source": "b", "target": "out"}],
    }
    graph = parse_graph(data, registry=local_registry)
    result = run_graph(graph, payload=None, timeout=0.05, registry=local_registry)
    assert result.status == "failed" and result.timed_out and not result.retryable
    assert "time limit of 0.05 s" in result.error and "'b'" in result.error
    assert [n.status for n in result.nodes] == ["succeeded", "skipped", "skipped"]
    assert run_graph(graph, payload=None, timeout=5, registry=local_registry).status == "succeeded"


def test_unexpected_error_records_a_traceback(local_registry):
    data = {"nodes": [{"id": "x", "type": "Broken"}, {"id": "out", "type": "Output"}], "edges": [{"source": "x", "target": "out"}]}
    result = run_graph(parse_graph(data, registry=local_registry), payload=None, registry=local_registry)
    broken = result.nodes[0]
    assert broken.status == "failed" and broken.error == "KeyError: 'missing'"
    assert "helper_that_breaks" in broken.traceback and "Traceback" in broken.traceback
    assert result.nodes[1].status == "skipped"
    assert result.error.startswith("Node 'x' (Broken) failed")


def test_variables_are_resolved_at_run_time_and_credentials_masked():
    data = {
        "nodes": [
            {
                "id": "t",
                "type": "Template",
                "params": {"template": "key={key} user={user}", "key": {"variable": "API_KEY"}, "user": {"variable": "USER"}},
            },
            {"id": "out", "type": "Output", "params": {"name": {"variable": "OUT_NAME"}}},
        ],
        "edges": [{"source": "t", "target": "out"}],
    }
    graph = parse_graph(data)
    context = RunContext(variables={"API_KEY": "sk-very-secret", "USER": "ada", "OUT_NAME": "text"}, secrets=frozenset({"sk-very-secret"}))
    result = run_graph(graph, context=context)
    assert result.outputs == {"text": "key=******** user=ada"}
    assert "sk-very-secret" not in repr(result)
    assert graph.nodes["t"].params["key"] == {"variable": "API_KEY"}


def test_missing_variable_at_run_time_fails_the_node_naming_it():
    data = {"nodes": [{"id": "t", "type": "Text", "params": {"text": {"variable": "GONE"}}}], "edges": []}
    result = run_graph(parse_graph(data), context=RunContext())
    assert result.status == "failed" and "'GONE'" in result.error


def test_variable_references_are_found_with_their_location():
    data = {
        "nodes": [
            {"id": "h", "type": "HTTPRequest", "params": {"url": "https://x", "headers": {"Authorization": {"variable": "TOKEN"}}}},
            {"id": "m", "type": "LanguageModel", "params": {"model": "m", "api_key": {"variable": "OPENAI_API_KEY"}, "prompt": "x"}},
        ],
        "edges": [],
    }
    parse_graph(data)
    assert variable_references(data) == [
        (("nodes", 0, "params", "headers", "Authorization"), "TOKEN"),
        (("nodes", 1, "params", "api_key"), "OPENAI_API_KEY"),
    ]


def test_variable_cannot_stand_for_a_non_text_param():
    with pytest.raises(GraphValidationError) as exc:
        parse_graph(
            {"nodes": [{"id": "h", "type": "HTTPRequest", "params": {"url": "https://x", "timeout": {"variable": "T"}}}], "edges": []}
        )
    assert [(i.loc, i.type) for i in exc.value.issues] == [(("nodes", 0, "params", "timeout"), "variable_type")]


def test_output_type_must_fit_input_type():
    data = {
        "nodes": [
            {"id": "h", "type": "HTTPRequest", "params": {"url": "https://x"}},
            {"id": "j", "type": "JSONBuild"},
            {"id": "b", "type": "JSONBuild", "params": {}},
            {"id": "w", "type": "Webhook"},
        ],
        "edges": [],
    }
    # status (int) may feed a number or any input, not an object one.
    parse_graph({**data, "edges": [{"source": "h", "source_output": "status", "target": "j", "target_input": "code"}]})
    with pytest.raises(GraphValidationError) as exc:
        parse_graph(
            {
                "nodes": [
                    {"id": "h", "type": "HTTPRequest", "params": {"url": "https://x"}},
                    {"id": "m", "type": "LanguageModel", "params": {"model": "x"}},
                    {"id": "t", "type": "Text"},
                ],
                "edges": [
                    {"source": "h", "source_output": "status", "target": "t", "target_input": "text"},
                    {"source": "t", "target": "m"},
                ],
            }
        )
    assert [(i.loc, i.type) for i in exc.value.issues] == [(("edges", 0), "type_mismatch")]


def test_webhook_schema_is_checked_at_save_and_by_the_node():
    with pytest.raises(GraphValidationError) as exc:
        parse_graph({"nodes": [{"id": "h", "type": "Webhook", "params": {"schema": {"type": "nonsense"}}}], "edges": []})
    assert exc.value.issues[0].type == "json_schema"
    graph = parse_graph(
        {"nodes": [{"id": "h", "type": "Webhook", "params": {"schema": {"type": "object", "required": ["id"]}}}], "edges": []}
    )
    assert run_graph(graph, payload={"id": 1}).status == "succeeded"
    failed = run_graph(graph, payload={"x": 1})
    assert failed.status == "failed" and "'id' is a required property" in failed.error


def test_catalogue_describes_every_component():
    names = {c["name"] for c in registry.catalogue()}
    assert {
        "Webhook",
        "Extract",
        "Template",
        "Condition",
        "HTTPRequest",
        "LanguageModel",
        "JSONBuild",
        "TextJoin",
        "Output",
        "Text",
    } <= names
    textjoin = next(c for c in registry.catalogue() if c["name"] == "TextJoin")
    assert textjoin["inputs"][0]["multiple"] is True and textjoin["description"]
    assert next(c for c in registry.catalogue() if c["name"] == "Condition")["outputs"] == [
        {"name": "true", "type": "any", "description": "The input, when the comparison holds."},
        {"name": "false", "type": "any", "description": "The input, when it does not."},
    ]
