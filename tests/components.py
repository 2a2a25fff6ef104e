"""Fault-injection components, registered only in tests (and in the processes e2e tests start, through
LANGRUN_COMPONENT_MODULES=tests.components). Each appends a line to a file per execution, so tests count
side effects across processes."""

from __future__ import annotations

import os
import time
from typing import Any

from flows.engine import Component, Input, NodeError, Output, RetryableNodeError
from flows.engine.registry import register, registry


def _record(path: str) -> int:
    """Append one line; returns how many lines were there before (O_APPEND keeps concurrent writers whole)."""
    before = 0
    if os.path.exists(path):
        with open(path) as f:
            before = sum(1 for _ in f)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return before


def _register(cls):
    return cls if cls.name in registry else register(cls)


@_register
class TestSideEffect(Component):
    """Sleeps, then records one side effect (a line in `path`): interrupted before the end, it records nothing."""

    name = "TestSideEffect"
    description = "Test only: waits `delay` seconds, then appends a line to `path`."
    inputs = (
        Input("data", "any", required=False, description="Passed through."),
        Input("path", "str", description="File that counts executions.", connectable=False),
        Input("delay", "number", required=False, default=0, description="Seconds to wait first.", connectable=False),
    )
    outputs = (Output("data", "any", "The input, unchanged."),)

    def run(self, *, path: str, delay: float = 0, data: Any = None) -> dict[str, Any]:
        time.sleep(delay)
        _record(path)
        return {"data": data}


@_register
class TestFlaky(Component):
    """Fails its first `fail_times` executions (counted in `path`), retryably or not, then succeeds."""

    name = "TestFlaky"
    description = "Test only: fails the first `fail_times` times, then passes its input on."
    inputs = (
        Input("data", "any", required=False, description="Passed through."),
        Input("path", "str", description="File that counts executions.", connectable=False),
        Input("fail_times", "int", description="Executions that fail.", connectable=False),
        Input("retryable", "bool", required=False, default=True, description="Raise RetryableNodeError.", connectable=False),
    )
    outputs = (Output("data", "any", "The input, unchanged."),)

    def run(self, *, path: str, fail_times: int, retryable: bool = True, data: Any = None) -> dict[str, Any]:
        if _record(path) < fail_times:
            raise (RetryableNodeError if retryable else NodeError)("upstream answered 503")
        return {"data": data}
