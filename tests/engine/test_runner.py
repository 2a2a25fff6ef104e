import json
import time

import pytest

from flows.engine import RunContext, parse_graph, run_graph
from flows.engine.limits import DEFAULT_MAX_OUTPUT_BYTES, json_size
from tests.helpers import GREETING_FLOW


def run(payload, data=GREETING_FLOW):
    return run_graph(parse_graph(data), payload=payload)


def test_success_records_every_node_and_named_output():
    result = run({"name": "Ada"})
    assert result.status == "succeeded"
    assert result.outputs == {"greeting": "Hello Ada!"}
    assert [(n.node_id, n.status, n.order) for n in result.nodes] == [
        ("hook", "succeeded", 0),
        ("greet", "succeeded", 1),
        ("out", "succeeded", 2),
    ]
    assert result.nodes[1].output == {"text": "Hello Ada!"}
    assert all(n.duration_ms >= 0 for n in result.nodes)


def test_failing_node_fails_run_and_skips_downstream():
    result = run({"nom": "Ada"})
    assert result.status == "failed"
    assert "greet" in result.error and "'name' is missing" in result.error
    assert [n.status for n in result.nodes] == ["succeeded", "failed", "skipped"]
    assert result.outputs == {}
    assert result.retryable is False


def test_unnamed_output_uses_node_id():
    data = {"nodes": [{"id": "hook", "type": "Webhook"}, {"id": "raw", "type": "Output"}], "edges": [{"source": "hook", "target": "raw"}]}
    assert run([1, 2], data).outputs == {"raw": [1, 2]}


def test_unexpected_component_exception_is_a_node_failure(monkeypatch):
    from flows.engine.components.core import Template

    def boom(self, **values):
        raise RuntimeError("kaput")

    monkeypatch.setattr(Template, "run", boom)
    result = run({"name": "Ada"})
    assert result.status == "failed"
    assert result.nodes[1].error == "RuntimeError: kaput"


def test_retryable_node_errors_mark_the_run_retryable(monkeypatch):
    from flows.engine import RetryableNodeError
    from flows.engine.components.core import Template

    def flaky(self, **values):
        raise RetryableNodeError("upstream timed out")

    monkeypatch.setattr(Template, "run", flaky)
    result = run({"name": "Ada"})
    assert result.status == "failed" and result.retryable is True


# --- The output limit -----------------------------------------------------------------


def test_a_node_output_over_the_limit_fails_its_run_and_nothing_after_it_runs():
    graph = parse_graph(
        {
            "nodes": [
                {"id": "in", "type": "Webhook"},
                {"id": "text", "type": "TextJoin", "params": {"separator": "-"}},
                {"id": "out", "type": "Output"},
            ],
            "edges": [
                {"source": "in", "target": "text", "target_input": "texts"},
                {"source": "in", "target": "text", "target_input": "texts"},
                {"source": "text", "source_output": "text", "target": "out"},
            ],
        }
    )
    ok = run_graph(graph, context=RunContext(payload="x" * 400, max_output_bytes=1000))
    assert ok.status == "succeeded" and ok.outputs == {"out": "x" * 400 + "-" + "x" * 400}
    failed = run_graph(graph, context=RunContext(payload="x" * 600, max_output_bytes=1000))
    assert failed.status == "failed" and not failed.timed_out and failed.outputs == {}
    assert "Node 'text' (TextJoin) failed: its output is larger than the limit of 1000 bytes (LANGRUN_MAX_OUTPUT_BYTES)" in failed.error
    assert [(n.node_id, n.status, n.output) for n in failed.nodes] == [
        ("in", "succeeded", {"data": "x" * 600}),
        ("text", "failed", None),
        ("out", "skipped", None),
    ]


def _fan_out(n: int) -> dict:
    nodes = [{"id": "in", "type": "Webhook"}] + [
        {"id": f"t{i}", "type": "Template", "params": {"template": "{pad}{pad}"}} for i in range(n)
    ]
    return {"nodes": nodes, "edges": [{"source": "in", "target": f"t{i}", "target_input": "data"} for i in range(n)]}


def test_the_outputs_of_a_whole_run_are_bounded_too():
    # Each node within its own limit, a run of many nodes was not: 150 Templates of a 1 MB payload (a 12 kB flow)
    # took a worker to 1 GB, 8,000 would take tens of GB, and an OOM kill fails every run in that worker.
    graph = parse_graph(_fan_out(10))
    payload = {"pad": "x" * 100}
    ok = run_graph(graph, context=RunContext(payload=payload, max_output_bytes=1000, max_run_output_bytes=10_000))
    assert ok.status == "succeeded"
    failed = run_graph(graph, context=RunContext(payload=payload, max_output_bytes=1000, max_run_output_bytes=2_000))
    assert failed.status == "failed" and not failed.timed_out
    assert "the run's outputs together are larger than the limit of 2000 bytes (LANGRUN_MAX_RUN_OUTPUT_BYTES)" in failed.error
    assert sum(n.status == "succeeded" for n in failed.nodes) < 10
    unbounded = run_graph(graph, context=RunContext(payload=payload, max_output_bytes=1000, max_run_output_bytes=None))
    assert unbounded.status == "succeeded"


def test_a_threaded_node_counts_against_the_runs_outputs_too(monkeypatch):
    from flows.engine.components.core import Template

    monkeypatch.setattr(Template, "quick", False)  # runs in a thread, its outputs checked there
    graph = parse_graph(_fan_out(10))
    failed = run_graph(graph, context=RunContext(payload={"pad": "x" * 100}, max_output_bytes=1000, max_run_output_bytes=2_000))
    assert failed.status == "failed" and "LANGRUN_MAX_RUN_OUTPUT_BYTES" in failed.error


def test_output_limit_measures_shared_structures_without_building_them(monkeypatch):
    from flows.engine.components.data import Text

    def huge(self, text=""):
        value = [text]
        for _ in range(200):
            value = [value, value]  # 2^200 copies of `text` when written out
        return {"text": value}

    monkeypatch.setattr(Text, "run", huge)
    graph = parse_graph({"nodes": [{"id": "t", "type": "Text", "params": {"text": "abc"}}], "edges": []})
    started = time.monotonic()
    result = run_graph(graph, context=RunContext())
    assert time.monotonic() - started < 1
    assert result.status == "failed" and f"larger than the limit of {DEFAULT_MAX_OUTPUT_BYTES} bytes" in result.error


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'naïve \u2603 \n "quoted" \x00 \ud800',
        12,
        -1.5e300,
        True,
        None,
        [],
        {},
        [1, "a", {"k": [None, False]}],
        {"é": {"x": 2**70}},
    ],
)
def test_json_size_is_the_size_of_compact_utf8_json(value):
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert json_size(value, limit=10_000) == len(text.encode("utf-8", "surrogatepass"))
    assert json_size(value, limit=0) > 0 or text == ""
