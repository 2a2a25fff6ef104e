"""flows.diagram: a graph drawn as SVG, in layers, escaped."""

import re

from flows import diagram, engine


def test_diagram_layers_follow_dependencies():
    data = {
        "nodes": [
            {"id": "out", "type": "Output", "params": {"name": "o"}},
            {"id": "t2", "type": "Template", "params": {"template": "b"}},
            {"id": "hook", "type": "Webhook"},
            {"id": "t1", "type": "Template", "params": {"template": "a"}},
        ],
        "edges": [
            {"source": "hook", "target": "t1", "target_input": "data"},
            {"source": "hook", "target": "t2", "target_input": "data"},
            {"source": "t1", "target": "out", "target_input": "value"},
        ],
    }
    boxes = diagram.layout(engine.parse_graph(data))
    assert boxes["hook"].x < boxes["t1"].x == boxes["t2"].x < boxes["out"].x
    assert boxes["t1"].y != boxes["t2"].y
    svg = diagram.render_svg(engine.parse_graph(data), statuses={"t1": "failed"})
    assert svg.count('<path class="lr-edge"') == 3
    assert 'class="lr-node lr-node-failed" data-node-id="t1"' in svg


def test_diagram_escapes_node_ids():
    data = {"nodes": [{"id": "<script>x</script>", "type": "Webhook"}], "edges": []}
    svg = diagram.render_svg(engine.parse_graph(data))
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_diagram_fits_long_node_ids_and_labels_branches():
    data = {
        "nodes": [
            {"id": "Webhook-Rt5y6", "type": "Webhook"},
            {"id": "ConditionalRouter-Fg4h5", "type": "Condition", "params": {"value": "paid"}},
            {"id": "ChatOutput-Tru3e", "type": "Output"},
            {"id": "ChatOutput-Fa1se", "type": "Output"},
        ],
        "edges": [
            {"source": "Webhook-Rt5y6", "target": "ConditionalRouter-Fg4h5", "target_input": "data"},
            {"source": "ConditionalRouter-Fg4h5", "source_output": "true", "target": "ChatOutput-Tru3e", "target_input": "value"},
            {"source": "ConditionalRouter-Fg4h5", "source_output": "false", "target": "ChatOutput-Fa1se", "target_input": "value"},
        ],
    }
    graph = engine.parse_graph(data)
    boxes = diagram.layout(graph)
    assert {b.width for b in boxes.values()} == {diagram.node_width(graph)} and diagram.node_width(graph) > diagram.NODE_WIDTH
    assert boxes["Webhook-Rt5y6"].x + boxes["Webhook-Rt5y6"].width < boxes["ConditionalRouter-Fg4h5"].x
    svg = diagram.render_svg(graph)
    assert ">ConditionalRouter-Fg4h5</text>" in svg  # whole, not cut
    labels = re.findall(r'<text class="lr-edge-label"[^>]*>([^<]*)</text>', svg)
    assert sorted(labels) == ["false", "true"]  # the webhook's single output is not labelled
    # An id too long for the widest box is cut in the middle, keeping the end that tells nodes apart.
    long_id = "LanguageModelComponent-" + "x" * 40 + "-AbCdE"
    svg = diagram.render_svg(engine.parse_graph({"nodes": [{"id": long_id, "type": "Webhook"}], "edges": []}))
    shown = re.search(r'<text class="lr-node-id"[^>]*>([^<]*)</text>', svg).group(1)
    assert shown.startswith("LanguageModelComponent-") and shown.endswith("…-AbCdE") and len(shown) < len(long_id)
    assert f'width="{diagram.NODE_MAX_WIDTH}"' in svg
