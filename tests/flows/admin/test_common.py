"""flows.admin.common: validation issues described with the node or edge they concern."""

import pytest

from flows import engine
from flows.admin.common import describe_issue


def test_describe_issue_names_nodes_and_edges():
    data = {"nodes": [{"id": "a", "type": "Webhook"}, "junk"], "edges": [{"source": "a", "target": "zz"}]}
    with pytest.raises(engine.GraphValidationError) as exc:
        engine.parse_graph(data)
    described = [describe_issue(i, data) for i in exc.value.issues]
    assert "Node #1: A node must be an object with 'id', 'type' and optional 'params'." in described
    assert "Edge #0 (a → zz), target: Edge target 'zz' is not a node of this flow." in described
    assert describe_issue(engine.ValidationIssue((), "bad", "x"), None) == "data: bad"
