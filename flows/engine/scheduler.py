"""One run's execution: which nodes are ready, which are running, and what each gave.

A node is ready when every node it depends on has finished. Ready nodes start in topological order;
quick sync components run at once (`advance`), the others run as tasks of the event loop (`run`),
awaited or in a thread, so independent branches overlap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from flows.engine.errors import NodeError, RetryableNodeError
from flows.engine.graph import Edge, Graph, Node, resolve_variables
from flows.engine.limits import NeedsThread, _inline_on_loop
from flows.engine.registry import Component, Registry
from flows.engine.results import (
    CANCELLED,
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    NodeResult,
    RunContext,
    RunResult,
    redact_node,
    redact_result,
)

logger = logging.getLogger(__name__)

# Past the run's deadline, a running node gets this long to end by its own time limit (and report
# it in its own words, such as an HTTP timeout) before the runner stops it.
DEADLINE_GRACE = 0.05
# How long stopped nodes get to close what they hold (an HTTP connection) before the run ends without them.
CLEANUP_SECONDS = 1.0

_AWAITED, _THREADED = "awaited", "threaded"
_traits: dict[type, tuple[bool, frozenset[str]]] = {}


def traits(component_cls: type[Component]) -> tuple[bool, frozenset[str]]:
    """Whether the component's `run` is a coroutine function, and the names of its outputs."""
    known = _traits.get(component_cls)
    if known is None:
        known = _traits[component_cls] = (inspect.iscoroutinefunction(component_cls.run), frozenset(o.name for o in component_cls.outputs))
    return known


class Execution:
    """The state of one run; `advance()` runs what needs no waiting, `run()` drives the rest on the loop."""

    def __init__(
        self,
        graph: Graph,
        context: RunContext,
        timeout: float | None,
        registry: Registry,
        on_node: Callable[[NodeResult], Any] | None,
        cancel: asyncio.Event | None,
    ):
        self.graph, self.context, self.registry, self.on_node, self.cancel = graph, context, registry, on_node, cancel
        self.timeout = timeout
        order = graph.order
        self.index: dict[str, int] = {}
        self.results: list[NodeResult] = []
        for i, node_id in enumerate(order):
            self.index[node_id] = i
            self.results.append(NodeResult(node_id, graph.nodes[node_id].type, SKIPPED, i))
        self.incoming: dict[str, list[Edge]] = {}
        self.successors: dict[str, list[int]] = {}  # by edge: a node fed twice by one source is released twice
        self.waiting = [0] * len(order)  # edges into the node from nodes that have not finished
        for edge in graph.edges:
            self.incoming.setdefault(edge.target, []).append(edge)
            self.successors.setdefault(edge.source, []).append(self.index[edge.target])
            self.waiting[self.index[edge.target]] += 1
        self.ready = [i for i, count in enumerate(self.waiting) if not count]  # ascending: a heap already
        self.produced: dict[str, dict[str, Any]] = {}
        self.started: dict[int, float] = {}
        self.announced: set[int] = set()  # given to on_node as running (kept only with an on_node)
        self.reported: set[int] = set()  # given to on_node as ended (kept only with an on_node)
        self.to_start: list[tuple[int, str, type[Component], Component, dict[str, Any]]] = []
        self.running: dict[asyncio.Future, tuple[int, str]] = {}
        self.stopping: set[asyncio.Future] = set()  # cancelled tasks still closing what they hold
        self.failure = ""
        self.retryable = self.timed_out = self.cancelled = self.stopped = self.deadline_handled = False

    @property
    def limit(self) -> str:
        return f"time limit of {self.timeout:g} s" if self.timeout is not None else "time limit"

    # --- Starting nodes ---------------------------------------------------------------------------

    def advance(self) -> None:
        """Start every ready node, in topological order: quick sync components run here and now, the
        others are queued for `run()` to start on the loop."""
        token = _inline_on_loop.set(True)
        try:
            self._advance()
        finally:
            _inline_on_loop.reset(token)

    def _advance(self) -> None:
        context, ready, results, nodes = self.context, self.ready, self.results, self.graph.nodes
        while ready and not self.stopped:
            i = heapq.heappop(ready)
            result = results[i]
            node = nodes[result.node_id]
            if context.deadline is not None and time.monotonic() >= context.deadline:
                self.timed_out = True
                self._fail_run(
                    f"The run exceeded its {self.limit} before node {node.id!r} ({node.type}); the remaining nodes were not run."
                )
                return
            self.started[i] = started = time.perf_counter()
            try:
                component_cls = self.registry.get(node.type)
                values, complete = gather_inputs(node, self.incoming.get(node.id, ()), component_cls, self.produced, context)
                if not complete:
                    self._release(i)
                    self._report(i)
                    continue
                component = component_cls(node_id=node.id, context=context)
            except Exception as exc:  # a missing variable, or a component bug
                self._record(i, None, exc)
                continue
            awaited, output_names = traits(component_cls)
            if awaited:
                self.to_start.append((i, _AWAITED, component_cls, component, values))
                continue
            if not component_cls.quick:
                self.to_start.append((i, _THREADED, component_cls, component, values))
                continue
            self._announce(i)
            try:
                outputs = component.run(**values)
                if not outputs.keys() <= output_names:
                    checked_outputs(component_cls, outputs, context)  # raises, naming the undeclared outputs
                context.check_outputs(outputs)
            except NeedsThread:
                self.to_start.append((i, _THREADED, component_cls, component, values))
                continue
            except Exception as exc:  # a component bug must fail its run, not the worker
                self._record(i, None, exc)
                continue
            # What _record does for a success, written out: most nodes of most runs pass here.
            result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
            result.status, result.output = SUCCEEDED, outputs
            self.produced[node.id] = outputs
            self._release(i)
            if self.on_node is not None:
                self._report(i)

    def settled(self) -> bool:
        """Whether nothing is left to start or to wait for: `result()` is final."""
        return not self.to_start and not self.running and not self.stopping

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        queued, self.to_start = self.to_start, []
        for i, kind, component_cls, component, values in queued:
            if self.stopped:
                continue  # never started: recorded as skipped
            self._announce(i)
            if kind is _AWAITED:
                future = loop.create_task(_awaited(component_cls, component, values, self.context))
            else:
                future = loop.run_in_executor(None, _called, component_cls, component, values, self.context)
            self.running[future] = (i, kind)

    # --- Waiting on the loop ----------------------------------------------------------------------

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        cancel_wait: asyncio.Future | None = None
        try:
            while True:
                if self.cancel is not None and self.cancel.is_set():
                    self._on_cancel()
                self.advance()
                self._start(loop)
                if self.stopping:
                    await self._let_stopped_close()
                if not self.running:
                    break
                waits = set(self.running)
                if self.cancel is not None and not self.stopped:
                    if cancel_wait is None:
                        cancel_wait = loop.create_task(self.cancel.wait())
                    waits.add(cancel_wait)
                timeout = None
                deadline = self.context.deadline
                if deadline is not None and not self.deadline_handled:
                    timeout = max(deadline + DEADLINE_GRACE - time.monotonic(), 0)
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for i, future in sorted((self.running[f][0], f) for f in done if f in self.running):
                    del self.running[future]
                    if future.cancelled():
                        self._record(i, None, NodeError("The node's work was cancelled."))
                    elif future.exception() is not None:
                        self._record(i, None, future.exception())
                    else:
                        self._record(i, future.result(), None)
                if deadline is not None and not self.deadline_handled and time.monotonic() >= deadline + DEADLINE_GRACE:
                    self._on_deadline()
        finally:
            if cancel_wait is not None:
                cancel_wait.cancel()
            for future in self.running:  # only when this run itself is cancelled by its caller
                future.cancel()
        return self.result()

    async def _let_stopped_close(self) -> None:
        stopping, self.stopping = self.stopping, set()
        done, _ = await asyncio.wait(stopping, timeout=CLEANUP_SECONDS)
        for future in done:
            if not future.cancelled():
                future.exception()  # retrieved: the node's result is recorded already

    def _on_deadline(self) -> None:
        """Stop the awaited nodes still running; a node in a thread cannot be stopped and is waited for."""
        self.deadline_handled = True
        awaited = sorted(i for i, kind in self.running.values() if kind is _AWAITED)
        if not awaited:
            return  # `advance` fails the run before the next node starts
        if not self.failure:
            first = self.results[awaited[0]]
            self.timed_out, self.retryable = True, False
            self.failure = f"The run exceeded its {self.limit} in node {first.node_id!r} ({first.type}): it was still running."
        self._stop(f"Still running at the run's {self.limit}.")

    def _on_cancel(self) -> None:
        if self.cancelled or self.failure:
            return
        self.cancelled, self.failure = True, "The run was cancelled."
        self._stop("Cancelled while running.")

    def _stop(self, error: str) -> None:
        """Start no further node and cancel the awaited ones running, recording them failed with `error`."""
        self.stopped = True
        for future, (i, kind) in list(self.running.items()):
            if kind is _AWAITED:
                future.cancel()
                del self.running[future]
                self.stopping.add(future)
                result = self.results[i]
                result.status, result.error = FAILED, error
                result.duration_ms = round((time.perf_counter() - self.started[i]) * 1000, 3)
                self._report(i)

    # --- Recording ----------------------------------------------------------------------------------

    def _record(self, i: int, outputs: dict[str, Any] | None, exc: BaseException | None) -> None:
        result = self.results[i]
        result.duration_ms = round((time.perf_counter() - self.started[i]) * 1000, 3)
        if exc is None:
            result.status, result.output = SUCCEEDED, outputs
            self.produced[result.node_id] = outputs
        else:
            result.status = FAILED
            result.error = str(exc) if isinstance(exc, NodeError) else f"{type(exc).__name__}: {exc}"
            result.traceback = "".join(traceback.format_exception(exc))
            if not self.failure:
                deadline = self.context.deadline
                if deadline is not None and time.monotonic() >= deadline:
                    self.timed_out = True
                    self._fail_run(f"The run exceeded its {self.limit} in node {result.node_id!r} ({result.type}): {result.error}")
                else:
                    self.retryable = isinstance(exc, RetryableNodeError)
                    self._fail_run(f"Node {result.node_id!r} ({result.type}) failed: {result.error}")
        self._release(i)
        self._report(i)

    def _fail_run(self, message: str) -> None:
        self.failure = message
        if self.timed_out:
            self.retryable = False
        self._stop(f"Stopped: {message}")

    def _release(self, i: int) -> None:
        waiting = self.waiting
        for target in self.successors.get(self.results[i].node_id, ()):
            waiting[target] -= 1
            if not waiting[target]:
                heapq.heappush(self.ready, target)

    def _announce(self, i: int) -> None:
        self.results[i].status = RUNNING
        if self.on_node is not None and i not in self.announced:
            self.announced.add(i)
            self._notify(dataclasses.replace(self.results[i]))

    def _report(self, i: int) -> None:
        if self.on_node is not None:
            self.reported.add(i)
            self._notify(dataclasses.replace(self.results[i]))

    def _notify(self, snapshot: NodeResult) -> None:
        try:
            self.on_node(redact_node(snapshot, self.context.secrets))
        except Exception:  # recording progress must not break the run
            logger.exception("on_node failed for node %r", snapshot.node_id)

    def result(self) -> RunResult:
        for i, node in enumerate(self.results):
            if node.status == RUNNING:  # queued for the loop, never started
                node.status = SKIPPED
            if self.on_node is not None and i not in self.reported:
                self._report(i)
        status = CANCELLED if self.cancelled else FAILED if self.failure else SUCCEEDED
        run = RunResult(status, self.context.outputs, self.results, self.failure, self.retryable, self.timed_out)
        return redact_result(run, self.context.secrets)


async def _awaited(component_cls: type[Component], component: Component, values: dict[str, Any], context: RunContext) -> dict[str, Any]:
    return checked_outputs(component_cls, await component.run(**values), context)


def _called(component_cls: type[Component], component: Component, values: dict[str, Any], context: RunContext) -> dict[str, Any]:
    return checked_outputs(component_cls, component.run(**values), context)


def checked_outputs(component_cls: type[Component], outputs: dict[str, Any], context: RunContext) -> dict[str, Any]:
    unknown = set(outputs) - {o.name for o in component_cls.outputs}
    if unknown:
        raise NodeError(f"{component_cls.name} produced undeclared outputs: {', '.join(sorted(unknown))}")
    context.check_outputs(outputs)
    return outputs


def gather_inputs(node: Node, incoming: list[Edge], component_cls, produced, context: RunContext) -> tuple[dict[str, Any], bool]:
    """Values for the node's inputs: connected outputs first, then params, then defaults.

    Returns `complete=False` when the node must be skipped: it has incoming edges
    and none delivered a value, or none of its required inputs got one. A node
    fed from both branches of a router runs with what the chosen branch gave.
    """
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


def _param(node: Node, name: str, context: RunContext) -> Any:
    try:
        return resolve_variables(node.params[name], context.variables)
    except KeyError as exc:
        raise NodeError(f"Parameter {name!r} refers to variable {exc.args[0]!r}, which does not exist.") from None
