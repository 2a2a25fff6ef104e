"""The Respond component: the answer a flow in `flow` response mode gives its webhook caller."""

import pytest

from flows.engine import GraphValidationError, NodeError, RunContext, parse_graph, run_graph
from flows.engine.components.respond import Respond


def respond(**values):
    return Respond(node_id="r", context=RunContext()).run(**values)["response"]


def test_defaults_are_an_empty_200():
    assert respond() == {"status": 200, "headers": {}, "body": ""}


def test_text_body_and_header_values_are_templates():
    answer = respond(
        data={"order": {"id": 7}}, status=201, headers={"Location": "/orders/{order.id}"}, body="Order {order.id} for {who}", who="Ada"
    )
    assert answer == {"status": 201, "headers": {"Location": "/orders/7"}, "body": "Order 7 for Ada"}


def test_one_placeholder_is_the_value_itself_and_json_strings_are_filled():
    assert respond(body="{reply}", reply={"a": [1, 2]})["body"] == {"a": [1, 2]}
    assert respond(body={"ok": True, "id": "{id}", "text": "n={id}"}, id=3)["body"] == {"ok": True, "id": 3, "text": "n=3"}
    # A value with braces is never parsed: only the template is.
    assert respond(body="{reply}", reply="{not a field}")["body"] == "{not a field}"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"status": 500}, "from 200 to 499"),
        ({"status": 101}, "from 200 to 499"),
        ({"body": "{missing}"}, "'missing' is missing"),
        ({"headers": {"X-Id": "{v}"}, "v": "a\r\nSet-Cookie: x=1"}, "one line"),
        ({"data": [1]}, "object as data"),
    ],
)
def test_bad_answers_fail_the_node(values, message):
    with pytest.raises(NodeError, match=message):
        respond(**values)


def graph(**params):
    return {"nodes": [{"id": "r", "type": "Respond", "params": params}], "edges": []}


@pytest.mark.parametrize(
    "params, param",
    [
        ({"status": 503}, "status"),
        ({"headers": {"Content-Length": "3"}}, "headers"),
        ({"headers": {"set-cookie": "a=1"}}, "headers"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
        ({"headers": {"X-Id": "a\nb"}}, "headers"),
        ({"body": "{unclosed"}, "body"),
        ({"body": {"a": ["{x"]}}, "body"),
    ],
)
def test_literal_params_are_checked_when_the_flow_is_saved(params, param):
    with pytest.raises(GraphValidationError) as caught:
        parse_graph(graph(**params))
    assert caught.value.issues[0].loc == ("nodes", 0, "params", param)


def test_in_a_run_the_answer_is_the_nodes_output():
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "r", "type": "Respond", "params": {"status": 202, "body": "hi {name}"}},
        ],
        "edges": [{"source": "hook", "source_output": "data", "target": "r", "target_input": "data"}],
    }
    result = run_graph(parse_graph(data), payload={"name": "Ada"})
    node = next(n for n in result.nodes if n.node_id == "r")
    assert result.status == "succeeded" and node.output == {"response": {"status": 202, "headers": {}, "body": "hi Ada"}}
