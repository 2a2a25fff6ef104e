"""Errors raised by the flow engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValidationIssue:
    """One problem found in a flow's graph.

    `loc` is the path to the offending value inside the flow's `data`
    (for example `("nodes", 3, "params", "template")`).
    """

    loc: tuple[str | int, ...]
    msg: str
    type: str


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class GraphValidationError(EngineError):
    """A graph that cannot be run; `issues` lists every problem found, not just the first."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = list(issues)
        super().__init__("; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in self.issues))


class NodeError(EngineError):
    """Raised by a component when its node cannot produce a result; the message is shown to the user."""


class RetryableNodeError(NodeError):
    """A failure that may pass on another attempt (a timeout, a refused connection, a 5xx answer)."""
