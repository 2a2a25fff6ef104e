"""What a run gives its components (RunContext) and what it gives back (NodeResult, RunResult)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flows.engine.limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_RUN_OUTPUT_BYTES, OutputTooLarge, RunOutputTooLarge, json_size

RUNNING, SUCCEEDED, FAILED, SKIPPED, CANCELLED = "running", "succeeded", "failed", "skipped", "cancelled"
REDACTED = "********"


@dataclass
class RunContext:
    """What a run gives its components: the request's payload, the named outputs collected so far,
    the owner's variables (plain values, resolved by the caller), and the limits the run works within."""

    payload: Any = None
    # The webhook request's {method, headers, query}, secrets masked; None for a run no request started.
    request: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    # Values that must never appear in a run's record (credential variables); they are masked.
    secrets: frozenset[str] = frozenset()
    # Hosts (names or CIDRs) outbound HTTP may reach even when they resolve to private addresses.
    http_allowed_hosts: tuple[str, ...] = ()
    # time.monotonic() value after which no further node starts and running ones are stopped; None for no limit.
    deadline: float | None = None
    # The most bytes a node's outputs may take written as JSON (LANGRUN_MAX_OUTPUT_BYTES); None for no limit.
    max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES
    # The most bytes the outputs of all of a run's nodes may take together (LANGRUN_MAX_RUN_OUTPUT_BYTES); None for no
    # limit. Each node within its own limit, a run of thousands of nodes could otherwise take all of a worker's memory.
    max_run_output_bytes: int | None = DEFAULT_MAX_RUN_OUTPUT_BYTES
    _output_bytes: int = field(default=0, init=False, repr=False, compare=False)
    _output_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def check_outputs(self, outputs: Any) -> None:
        """Raise OutputTooLarge for a node's outputs past `max_output_bytes`, else count them against the run's
        `max_run_output_bytes` and raise RunOutputTooLarge once the run's outputs together pass it."""
        node_limit, run_limit = self.max_output_bytes, self.max_run_output_bytes
        if node_limit is None and run_limit is None:
            return
        size = json_size(outputs, limit=min(x for x in (node_limit, run_limit) if x is not None))
        if node_limit is not None and size > node_limit:
            raise OutputTooLarge(node_limit)
        if run_limit is None:
            return
        with self._output_lock:
            self._output_bytes += size
            if self._output_bytes > run_limit:
                raise RunOutputTooLarge(run_limit)

    def remaining(self) -> float | None:
        """Seconds left before the run's deadline (never below a small positive floor), or None."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.001)


@dataclass
class NodeResult:
    """One node's part of a run: `running` while it runs, then `succeeded`, `failed` or `skipped`."""

    node_id: str
    type: str
    status: str
    order: int  # the node's index in the graph's topological order
    output: dict[str, Any] | None = None
    error: str = ""
    duration_ms: float = 0.0
    traceback: str = ""  # for staff: where an unexpected exception came from


@dataclass
class RunResult:
    status: str  # succeeded, failed or cancelled
    outputs: dict[str, Any]
    nodes: list[NodeResult]
    error: str = ""
    retryable: bool = False  # the failure came from a RetryableNodeError
    timed_out: bool = False


def redact(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def redact_node(node: NodeResult, secrets: frozenset[str]) -> NodeResult:
    if secrets:
        node.output = redact(node.output, secrets)
        node.error = redact(node.error, secrets)
        node.traceback = redact(node.traceback, secrets)
    return node


def redact_result(run: RunResult, secrets: frozenset[str]) -> RunResult:
    if not secrets:
        return run
    run.outputs = redact(run.outputs, secrets)
    run.error = redact(run.error, secrets)
    for node in run.nodes:
        redact_node(node, secrets)
    return run
