import copy

import pytest

from flows.engine import GraphValidationError, parse_graph
from tests.helpers import GREETING_FLOW


def issues(data):
    with pytest.raises(GraphValidationError) as exc:
        parse_graph(data)
    return [(i.loc, i.type) for i in exc.value.issues]


def test_valid_graph_has_topological_order():
    graph = parse_graph(GREETING_FLOW)
    assert graph.order == ("hook", "greet", "out")
    assert [e.source_output for e in graph.edges] == ["data", "text"]


def test_default_ports_are_the_first_declared():
    data = {"nodes": [{"id": "a", "type": "Webhook"}, {"id": "b", "type": "Output"}], "edges": [{"source": "a", "target": "b"}]}
    edge = parse_graph(data).edges[0]
    assert (edge.source_output, edge.target_input) == ("data", "value")


@pytest.mark.parametrize("data", [None, [], "x", {"nodes": "x"}])
def test_data_must_be_an_object_with_lists(data):
    assert issues(data)


def test_unknown_component_type_is_located():
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["type"] = "Nope"
    assert (("nodes", 1, "type"), "unknown_component") in issues(data)


def test_duplicate_node_id():
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"].append({"id": "hook", "type": "Webhook"})
    assert (("nodes", 3, "id"), "duplicate_id") in issues(data)


def test_a_node_id_longer_than_its_results_column_is_refused():
    # A node's results are stored under its id (200 characters): on PostgreSQL every run of a flow with a
    # longer id failed ("The run's result could not be recorded (DataError)"), on SQLite it succeeded.
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][2]["id"] = "o" * 201
    data["edges"][1]["target"] = "o" * 201
    assert issues(data) == [(("nodes", 2, "id"), "string_too_long")]
    data["nodes"][2]["id"] = data["edges"][1]["target"] = "o" * 200
    assert parse_graph(data).order == ("hook", "greet", "o" * 200)


def test_edges_to_unknown_nodes_and_ports():
    data = copy.deepcopy(GREETING_FLOW)
    data["edges"] += [
        {"source": "ghost", "target": "out"},
        {"source": "hook", "target": "greet", "source_output": "nope", "target_input": "data"},
        {"source": "hook", "target": "out", "target_input": "nope"},
    ]
    found = issues(data)
    assert (("edges", 2, "source"), "unknown_node") in found
    assert (("edges", 3, "source_output"), "unknown_output") in found
    assert (("edges", 4, "target_input"), "unknown_input") in found


def test_second_edge_into_one_input_is_refused():
    data = copy.deepcopy(GREETING_FLOW)
    data["edges"].append({"source": "hook", "target": "out", "target_input": "value"})
    assert (("edges", 2, "target_input"), "duplicate_edge") in issues(data)


def test_cycle_is_refused():
    data = {
        "nodes": [
            {"id": "a", "type": "Template", "params": {"template": "x"}},
            {"id": "b", "type": "Template", "params": {"template": "y"}},
        ],
        "edges": [{"source": "a", "target": "b", "target_input": "data"}, {"source": "b", "target": "a", "target_input": "data"}],
    }
    found = issues(data)
    assert len(found) == 1 and found[0][1] == "cycle" and found[0][0][0] == "edges"


def test_required_input_neither_connected_nor_set():
    data = {"nodes": [{"id": "x", "type": "Extract", "params": {"query": "a"}}], "edges": []}
    assert (("nodes", 0, "params", "data"), "missing") in issues(data)


def test_param_type_and_unknown_param():
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["params"] = {"template": 42}
    data["nodes"][2]["params"] = {"colour": "red"}
    found = issues(data)
    assert (("nodes", 1, "params", "template"), "str_type") in found
    assert (("nodes", 2, "params", "colour"), "extra_forbidden") in found


def test_non_connectable_input_cannot_take_an_edge():
    data = copy.deepcopy(GREETING_FLOW)
    data["edges"][0]["target_input"] = "template"
    assert (("edges", 0, "target_input"), "unknown_input") in issues(data)


def test_every_problem_is_reported_at_once():
    data = {"nodes": [{"id": "a", "type": "X"}, {"id": "b", "type": "Y"}, {"type": "Webhook"}], "edges": []}
    assert len(issues(data)) == 3


def test_tweaks_override_params_without_touching_the_original():
    from flows.engine import apply_tweaks

    tweaked = apply_tweaks(GREETING_FLOW, {"greet": {"template": "Hi {name}"}})
    assert parse_graph(tweaked).nodes["greet"].params == {"template": "Hi {name}"}
    assert GREETING_FLOW["nodes"][1]["params"] == {"template": "Hello {name}!"}


def test_tweaks_to_unknown_nodes_or_bad_params_are_refused():
    from flows.engine import apply_tweaks

    with pytest.raises(GraphValidationError) as exc:
        apply_tweaks(GREETING_FLOW, {"ghost": {"x": 1}, "greet": "nope"})
    assert [(i.loc, i.type) for i in exc.value.issues] == [(("tweaks", "ghost"), "unknown_node"), (("tweaks", "greet"), "object_type")]
    assert (("nodes", 1, "params", "template"), "str_type") in issues(apply_tweaks(GREETING_FLOW, {"greet": {"template": 5}}))


def test_aliases_rename_tweaked_params_and_must_name_params():
    from flows.engine import apply_tweaks

    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["aliases"] = {"pattern": "template"}
    tweaked = apply_tweaks(data, {"greet": {"pattern": "Hi {name}"}})
    assert tweaked["nodes"][1]["params"] == {"template": "Hi {name}"}
    assert parse_graph(tweaked).nodes["greet"].params == {"template": "Hi {name}"}
    data["nodes"][2]["aliases"] = {"x": "nope"}
    assert (("nodes", 2, "aliases", "x"), "unknown_input") in issues(data)


def test_a_refused_node_is_reported_once_not_again_through_its_edges():
    # Its edges and the inputs they feed are not problems of their own: the node's parameter is the one to fix.
    data = copy.deepcopy(GREETING_FLOW)
    template = next(n for n in data["nodes"] if n["type"] == "Template")
    template["params"]["template"] = 123
    with pytest.raises(GraphValidationError) as caught:
        parse_graph(data)
    index = data["nodes"].index(template)
    assert [issue.loc for issue in caught.value.issues] == [("nodes", index, "params", "template")]
