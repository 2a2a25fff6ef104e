"""Executes a validated graph in topological order, recording a result for every node."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from flows.engine.errors import NodeError, RetryableNodeError
from flows.engine.graph import Graph, resolve_variables
from flows.engine.limits import DEFAULT_MAX_OUTPUT_BYTES, check_output_size
from flows.engine.registry import Registry
from flows.engine.registry import registry as default_registry

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"
REDACTED = "********"


@dataclass
class RunContext:
    """What a run gives its components: the request's payload, the named outputs collected so far,
    the owner's variables (plain values, resolved by the caller), and the limits the run works within."""

    payload: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    # Values that must never appear in a run's record (credential variables); they are masked.
    secrets: frozenset[str] = frozenset()
    # Hosts (names or CIDRs) outbound HTTP may reach even when they resolve to private addresses.
    http_allowed_hosts: tuple[str, ...] = ()
    # time.monotonic() value after which no further node starts; None for no limit.
    deadline: float | None = None
    # The most bytes a node's outputs may take written as JSON (LANGRUN_MAX_OUTPUT_BYTES); None for no limit.
    max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES

    def remaining(self) -> float | None:
        """Seconds left before the run's deadline (never below a small positive floor), or None."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.001)


@dataclass
class NodeResult:
    node_id: str
    type: str
    status: str
    order: int
    output: dict[str, Any] | None = None
    error: str = ""
    duration_ms: float = 0.0
    traceback: str = ""  # for staff: where an unexpected exception came from


@dataclass
class RunResult:
    status: str
    outputs: dict[str, Any]
    nodes: list[NodeResult]
    error: str = ""
    retryable: bool = False  # the failure came from a RetryableNodeError
    timed_out: bool = False


def run_graph(
    graph: Graph,
    *,
    payload: Any = None,
    context: RunContext | None = None,
    timeout: float | None = None,
    registry: Registry = default_registry,
) -> RunResult:
    """Run every node once, in dependency order.

    A node runs when its inputs have values; nodes fed only by outputs that were
    not produced (a router's unchosen branch) are `skipped`. The first failing
    node fails the run and the nodes after it are skipped; so does reaching the
    `timeout` (seconds), and so does a node whose outputs pass `context.max_output_bytes`
    written as JSON. Credential values in `context.secrets` are masked in
    everything the result holds.
    """
    if context is None:
        context = RunContext(payload=payload)
    if timeout is not None:
        context.deadline = time.monotonic() + timeout
    limit = f"time limit of {timeout:g} s" if timeout is not None else "time limit"
    produced: dict[str, dict[str, Any]] = {}
    results: list[NodeResult] = []
    failure = ""
    retryable = timed_out = False

    for order, node_id in enumerate(graph.order):
        node = graph.nodes[node_id]
        result = NodeResult(node_id=node_id, type=node.type, status=SKIPPED, order=order)
        results.append(result)
        if failure:
            continue
        if context.deadline is not None and time.monotonic() >= context.deadline:
            timed_out = True
            failure = f"The run exceeded its {limit} before node {node_id!r} ({node.type}); the remaining nodes were not run."
            continue
        component_cls = registry.get(node.type)
        started = time.perf_counter()
        try:
            values, complete = _gather_inputs(graph, node_id, component_cls, produced, context)
            if not complete:
                continue
            outputs = component_cls(node_id=node_id, context=context).run(**values)
            unknown = set(outputs) - {o.name for o in component_cls.outputs}
            if unknown:
                raise NodeError(f"{node.type} produced undeclared outputs: {', '.join(sorted(unknown))}")
            check_output_size(outputs, limit=context.max_output_bytes)
        except NodeError as exc:
            result.status, result.error = FAILED, str(exc)
            retryable = isinstance(exc, RetryableNodeError)
            result.traceback = "".join(traceback.format_exception(exc))
        except Exception as exc:  # a component bug must fail its run, not the worker
            result.status, result.error = FAILED, f"{type(exc).__name__}: {exc}"
            result.traceback = "".join(traceback.format_exception(exc))
        else:
            result.status, result.output = SUCCEEDED, outputs
            produced[node_id] = outputs
        result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        if result.status == FAILED:
            if context.deadline is not None and time.monotonic() >= context.deadline:
                timed_out, retryable = True, False
                failure = f"The run exceeded its {limit} in node {node_id!r} ({node.type}): {result.error}"
            else:
                failure = f"Node {node_id!r} ({node.type}) failed: {result.error}"

    run = RunResult(
        status=FAILED if failure else SUCCEEDED,
        outputs=context.outputs,
        nodes=results,
        error=failure,
        retryable=retryable,
        timed_out=timed_out,
    )
    return _redact_result(run, context.secrets)


def _gather_inputs(graph: Graph, node_id: str, component_cls, produced, context: RunContext) -> tuple[dict[str, Any], bool]:
    """Values for the node's inputs: connected outputs first, then params, then defaults.

    Returns `complete=False` when the node must be skipped: it has incoming edges
    and none delivered a value, or none of its required inputs got one. A node
    fed from both branches of a router runs with what the chosen branch gave.
    """
    node = graph.nodes[node_id]
    incoming = graph.incoming(node_id)
    delivered: dict[str, Any] = {}
    for edge in incoming:
        source_outputs = produced.get(edge.source)
        if source_outputs is None or edge.source_output not in source_outputs:
            continue
        value = source_outputs[edge.source_output]
        if component_cls.input(edge.target_input).multiple:
            delivered.setdefault(edge.target_input, []).append(value)
        else:
            delivered[edge.target_input] = value
    if incoming and not delivered:
        return {}, False
    connected = {e.target_input for e in incoming}
    required_connected = {name for name in connected if component_cls.input(name).required}
    if required_connected and not required_connected & delivered.keys():
        return {}, False
    values: dict[str, Any] = {}
    declared = {inp.name for inp in component_cls.inputs}
    for inp in component_cls.inputs:
        if inp.name in delivered:
            values[inp.name] = delivered[inp.name]
        elif inp.name in node.params:
            values[inp.name] = _param(node, inp.name, context)
        elif inp.default is not None or not inp.required or inp.name in connected:
            values[inp.name] = inp.default
        else:
            return {}, False
    if component_cls.extra_inputs is not None:
        for name in node.params:
            if name not in declared:
                values[name] = _param(node, name, context)
        for name in connected - declared:
            values[name] = delivered.get(name)
    return values, True


def _param(node, name: str, context: RunContext) -> Any:
    try:
        return resolve_variables(node.params[name], context.variables)
    except KeyError as exc:
        raise NodeError(f"Parameter {name!r} refers to variable {exc.args[0]!r}, which does not exist.") from None


def _redact(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, secrets) for v in value]
    return value


def _redact_result(run: RunResult, secrets: frozenset[str]) -> RunResult:
    if not secrets:
        return run
    run.outputs = _redact(run.outputs, secrets)
    run.error = _redact(run.error, secrets)
    for node in run.nodes:
        node.output = _redact(node.output, secrets)
        node.error = _redact(node.error, secrets)
        node.traceback = _redact(node.traceback, secrets)
    return run
