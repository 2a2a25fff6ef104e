"""Executes a validated graph in topological order, recording a result for every node."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flows.engine.errors import NodeError, RetryableNodeError
from flows.engine.graph import Graph
from flows.engine.registry import Registry
from flows.engine.registry import registry as default_registry

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"


@dataclass
class RunContext:
    """What a run gives its components: the request's payload, and the named outputs collected so far."""

    payload: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeResult:
    node_id: str
    type: str
    status: str
    order: int
    output: dict[str, Any] | None = None
    error: str = ""
    duration_ms: float = 0.0


@dataclass
class RunResult:
    status: str
    outputs: dict[str, Any]
    nodes: list[NodeResult]
    error: str = ""
    retryable: bool = False  # the failure came from a RetryableNodeError


def run_graph(graph: Graph, *, payload: Any, registry: Registry = default_registry) -> RunResult:
    """Run every node once, in dependency order. The first failing node fails the run; the rest are skipped."""
    context = RunContext(payload=payload)
    produced: dict[str, dict[str, Any]] = {}
    results: list[NodeResult] = []
    failure = ""
    retryable = False

    for order, node_id in enumerate(graph.order):
        node = graph.nodes[node_id]
        result = NodeResult(node_id=node_id, type=node.type, status=SKIPPED, order=order)
        results.append(result)
        if failure:
            continue
        component_cls = registry.get(node.type)
        values, complete = _gather_inputs(graph, node_id, component_cls, produced)
        if not complete:
            continue
        started = time.perf_counter()
        try:
            outputs = component_cls(node_id=node_id, context=context).run(**values)
            unknown = set(outputs) - {o.name for o in component_cls.outputs}
            if unknown:
                raise NodeError(f"{node.type} produced undeclared outputs: {', '.join(sorted(unknown))}")
        except NodeError as exc:
            result.status, result.error = FAILED, str(exc)
            retryable = isinstance(exc, RetryableNodeError)
        except Exception as exc:  # a component bug must fail its run, not the worker
            result.status, result.error = FAILED, f"{type(exc).__name__}: {exc}"
        else:
            result.status, result.output = SUCCEEDED, outputs
            produced[node_id] = outputs
        result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if result.status == FAILED:
            failure = f"Node {node_id!r} ({node.type}) failed: {result.error}"

    return RunResult(status=FAILED if failure else SUCCEEDED, outputs=context.outputs, nodes=results, error=failure, retryable=retryable)


def _gather_inputs(graph: Graph, node_id: str, component_cls, produced) -> tuple[dict[str, Any], bool]:
    """Values for the node's inputs: connected outputs first, then params, then defaults.

    Returns `complete=False` when the node must be skipped: it has incoming edges
    and none delivered a value, or a required input is left without one.
    """
    node = graph.nodes[node_id]
    incoming = graph.incoming(node_id)
    delivered: dict[str, Any] = {}
    for edge in incoming:
        source_outputs = produced.get(edge.source)
        if source_outputs is not None and edge.source_output in source_outputs:
            delivered[edge.target_input] = source_outputs[edge.source_output]
    if incoming and not delivered:
        return {}, False
    values: dict[str, Any] = {}
    for inp in component_cls.inputs:
        if inp.name in delivered:
            values[inp.name] = delivered[inp.name]
        elif inp.name in node.params:
            values[inp.name] = node.params[inp.name]
        elif inp.default is not None or not inp.required:
            values[inp.name] = inp.default
        else:
            return {}, False
    return values, True
