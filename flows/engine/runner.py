"""Executes a validated graph, recording a result for every node: `run_graph_async` on an event loop,
`run_graph` from synchronous code."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from flows.engine.graph import Graph
from flows.engine.registry import Registry
from flows.engine.registry import registry as default_registry
from flows.engine.results import NodeResult, RunContext, RunResult
from flows.engine.scheduler import Execution


async def run_graph_async(
    graph: Graph,
    *,
    payload: Any = None,
    context: RunContext | None = None,
    timeout: float | None = None,
    registry: Registry = default_registry,
    on_node: Callable[[NodeResult], Any] | None = None,
    cancel: asyncio.Event | None = None,
) -> RunResult:
    """Run every node once; a node starts as soon as every node it depends on has finished.

    A node runs when its inputs have values; nodes fed only by outputs that were not produced (a
    router's unchosen branch) are `skipped`. The first failing node fails the run: nodes still
    running are stopped and the rest skipped. So does reaching the `timeout` (seconds), which also
    stops the nodes running then, and so does a node whose outputs pass `context.max_output_bytes`
    written as JSON. Setting `cancel` stops the running nodes and ends the run `cancelled`.

    Async components are awaited; quick sync components run inline; other sync components run in
    a thread of the loop's default executor. A thread cannot be interrupted: at the time limit, a
    failure or a cancel, the run waits for such a node to return and records what it gave.

    `on_node` gets a copy of a node's result when it starts (`running`) and when it ends; it is
    called on the loop and must not block; an exception it raises is logged and ignored.
    Credential values in `context.secrets` are masked in everything the result and `on_node` get.
    """
    execution = Execution(graph, _context(payload, context, timeout), timeout, registry, on_node, cancel)
    return await execution.run()


def run_graph(
    graph: Graph,
    *,
    payload: Any = None,
    context: RunContext | None = None,
    timeout: float | None = None,
    registry: Registry = default_registry,
) -> RunResult:
    """`run_graph_async` from synchronous code: usable from any thread that has no running event loop.

    A graph of quick components completes without an event loop; otherwise the run finishes on an
    event loop this thread keeps for its runs.
    """
    execution = Execution(graph, _context(payload, context, timeout), timeout, registry, None, None)
    execution.advance()
    if execution.settled():
        return execution.result()
    return _thread_loop().run_until_complete(execution.run())


def _context(payload: Any, context: RunContext | None, timeout: float | None) -> RunContext:
    if context is None:
        context = RunContext(payload=payload)
    if timeout is not None:
        context.deadline = time.monotonic() + timeout
    return context


_local = threading.local()
# A forked child keeps only the forking thread, whose loop shares its epoll instance with the parent.
os.register_at_fork(after_in_child=lambda: _local.__dict__.clear())


def _thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for synchronous runs (a new loop per run would cost more than a quick run)."""
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop
