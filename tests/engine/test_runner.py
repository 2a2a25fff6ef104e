from flows.engine import parse_graph, run_graph
from tests.conftest import GREETING_FLOW


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
