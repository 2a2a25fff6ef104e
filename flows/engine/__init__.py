"""langrun's flow engine: plain Python, no Django.

A flow is a graph of components. `parse_graph` validates a flow's native JSON
against the component registry; `run_graph_async` executes a parsed graph on an event loop,
`run_graph` from synchronous code.
"""

from flows.engine.errors import GraphValidationError, NodeError, RetryableNodeError, ValidationIssue
from flows.engine.graph import Edge, Graph, Node, apply_tweaks, is_variable_ref, parse_graph, resolve_variables, variable_references
from flows.engine.registry import Component, Input, Output, registry
from flows.engine.results import NodeResult, RunContext, RunResult
from flows.engine.runner import run_graph, run_graph_async

# Importing the package registers the built-in components.
from flows.engine import components  # noqa: F401, E402  isort: skip

__all__ = [
    "Component",
    "Edge",
    "Graph",
    "GraphValidationError",
    "Input",
    "Node",
    "NodeError",
    "NodeResult",
    "Output",
    "RetryableNodeError",
    "RunContext",
    "RunResult",
    "ValidationIssue",
    "apply_tweaks",
    "is_variable_ref",
    "parse_graph",
    "registry",
    "resolve_variables",
    "run_graph",
    "run_graph_async",
    "variable_references",
]
