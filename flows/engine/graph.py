"""The native flow format: parsing and validation against the component registry.

A flow's `data` is `{"nodes": [{"id", "type", "params"?, "aliases"?}], "edges": [{"source",
"target", "source_output"?, "target_input"?}]}`. `parse_graph` checks all of it
and reports every problem with its location, or returns a `Graph` ready to run.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import Any

from flows.engine.errors import GraphValidationError, ValidationIssue
from flows.engine.registry import Registry, type_accepts, types_compatible
from flows.engine.registry import registry as default_registry


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    source_output: str
    target_input: str


@dataclass(frozen=True)
class Graph:
    """A validated graph: nodes by id (in declaration order), edges, and a topological order."""

    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    order: tuple[str, ...]

    def incoming(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.target == node_id]


# A run's results are stored per node under its id, in a column of this size (flows.models.NodeResult.node_id):
# a longer id could not be recorded, and every run of the flow failed on PostgreSQL.
MAX_NODE_ID = 200


def _name(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def is_variable_ref(value: Any) -> bool:
    """`{"variable": "NAME"}`: a parameter value taken from the owner's variables when the flow runs."""
    return isinstance(value, dict) and len(value) == 1 and _name(value.get("variable"))


def variable_references(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every variable a flow's params refer to, as `(loc, name)`, anywhere inside a param's value."""
    found: list[tuple[tuple[str | int, ...], str]] = []

    def walk(value: Any, loc: tuple) -> None:
        if is_variable_ref(value):
            found.append((loc, value["variable"]))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, key))
        elif isinstance(value, list):
            for k, item in enumerate(value):
                walk(item, (*loc, k))

    nodes = data.get("nodes") if isinstance(data, dict) else None
    for i, node in enumerate(nodes if isinstance(nodes, list) else []):
        params = node.get("params") if isinstance(node, dict) else None
        if isinstance(params, dict):
            for name, value in params.items():
                walk(value, ("nodes", i, "params", name))
    return found


def resolve_variables(value: Any, variables: dict[str, Any]) -> Any:
    """`value` with every variable reference replaced by its value; an unknown name raises KeyError."""
    if is_variable_ref(value):
        return variables[value["variable"]]
    if isinstance(value, dict):
        return {k: resolve_variables(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_variables(v, variables) for v in value]
    return value


def parse_graph(data: Any, *, registry: Registry = default_registry) -> Graph:
    """Validate `data` in the native format and return the graph; raise GraphValidationError otherwise."""
    issues: list[ValidationIssue] = []

    def issue(loc: tuple, msg: str, type_: str) -> None:
        issues.append(ValidationIssue(loc=loc, msg=msg, type=type_))

    if not isinstance(data, dict):
        raise GraphValidationError([ValidationIssue((), "A flow's data must be an object with 'nodes' and 'edges'.", "object_type")])
    unknown_keys = sorted(set(data) - {"nodes", "edges"})
    for key in unknown_keys:
        issue((key,), f"Unknown key {key!r}; a flow's data has only 'nodes' and 'edges'.", "extra_forbidden")
    raw_nodes = data.get("nodes")
    raw_edges = data.get("edges", [])
    if not isinstance(raw_nodes, list):
        issue(("nodes",), "'nodes' must be a list of nodes.", "list_type")
        raw_nodes = []
    if not isinstance(raw_edges, list):
        issue(("edges",), "'edges' must be a list of edges.", "list_type")
        raw_edges = []

    nodes: dict[str, Node] = {}
    node_index: dict[str, int] = {}
    refused: set[str] = set()  # nodes with a problem of their own: their edges are not problems again
    for i, raw in enumerate(raw_nodes):
        node = _parse_node(raw, i, registry, issue)
        if node is None:
            if isinstance(raw, dict) and _name(raw.get("id")):
                refused.add(raw["id"])
            continue
        if node.id in nodes:
            issue(("nodes", i, "id"), f"Duplicate node id {node.id!r} (first used by node {node_index[node.id]}).", "duplicate_id")
            continue
        nodes[node.id] = node
        node_index[node.id] = i

    edges: list[Edge] = []
    edge_index: dict[Edge, int] = {}
    fed: dict[tuple[str, str], int] = {}
    fed_by_refused: set[str] = set()
    for j, raw in enumerate(raw_edges):
        ends = [raw.get(end) for end in ("source", "target")] if isinstance(raw, dict) else []
        if any(isinstance(end, str) and end in refused for end in ends):
            if isinstance(ends[1], str):
                fed_by_refused.add(ends[1])
            continue
        edge = _parse_edge(raw, j, nodes, registry, issue)
        if edge is None:
            continue
        key = (edge.target, edge.target_input)
        if key in fed and not registry.get(nodes[edge.target].type).input(edge.target_input).multiple:
            issue(
                ("edges", j, "target_input"),
                f"Input {edge.target_input!r} of node {edge.target!r} is already fed by edge {fed[key]}.",
                "duplicate_edge",
            )
            continue
        fed[key] = j
        edges.append(edge)
        edge_index[edge] = j

    for node_id, node in nodes.items():
        if node_id in fed_by_refused:  # which of its inputs that edge fed is the refused node's to tell
            continue
        component = registry.get(node.type)
        i = node_index[node_id]
        for inp in component.inputs:
            if inp.required and inp.default is None and inp.name not in node.params and (node_id, inp.name) not in fed:
                issue(
                    ("nodes", i, "params", inp.name),
                    f"Node {node_id!r} ({node.type}) needs input {inp.name!r}: connect an edge to it or set it in params.",
                    "missing",
                )

    order: tuple[str, ...] = ()
    if not issues:
        sorter = graphlib.TopologicalSorter({node_id: set() for node_id in nodes})
        for edge in edges:
            sorter.add(edge.target, edge.source)
        try:
            order = tuple(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            first = next(e for e in edges if e.source == cycle[1] and e.target == cycle[0]) if len(cycle) > 1 else None
            loc = ("edges", edge_index[first]) if first else ("edges",)
            issue(loc, f"The graph has a cycle: {' -> '.join(reversed(cycle))}.", "cycle")

    if issues:
        raise GraphValidationError(issues)
    return Graph(nodes=nodes, edges=tuple(edges), order=order)


def _parse_node(raw: Any, i: int, registry: Registry, issue) -> Node | None:
    if not isinstance(raw, dict):
        issue(("nodes", i), "A node must be an object with 'id', 'type' and optional 'params'.", "object_type")
        return None
    ok = True
    for key in sorted(set(raw) - {"id", "type", "params", "aliases"}):
        issue(("nodes", i, key), f"Unknown key {key!r}; a node has 'id', 'type', 'params' and 'aliases'.", "extra_forbidden")
        ok = False
    node_id, type_name, params = raw.get("id"), raw.get("type"), raw.get("params", {})
    if not _name(node_id):
        issue(("nodes", i, "id"), "A node needs a non-empty string 'id'.", "missing" if node_id is None else "string_type")
        ok = False
    elif len(node_id) > MAX_NODE_ID:
        issue(("nodes", i, "id"), f"A node id may have at most {MAX_NODE_ID} characters.", "string_too_long")
        ok = False
    if not _name(type_name):
        issue(("nodes", i, "type"), "A node needs a component 'type'.", "missing" if type_name is None else "string_type")
        return None
    component = registry.get(type_name)
    if component is None:
        issue(
            ("nodes", i, "type"), f"Unknown component type {type_name!r}. Known types: {', '.join(registry.names())}.", "unknown_component"
        )
        return None
    aliases = raw.get("aliases") or {}
    if not isinstance(aliases, dict):
        issue(("nodes", i, "aliases"), "'aliases' must be an object {other name: param}.", "object_type")
        ok = False
    else:
        for alias, target in aliases.items():
            if not isinstance(target, str) or component.input(target) is None:
                issue(("nodes", i, "aliases", alias), f"Alias {alias!r} must name a parameter of {type_name}.", "unknown_input")
                ok = False
    if params is None:
        params = {}
    if not isinstance(params, dict):
        issue(("nodes", i, "params"), "'params' must be an object.", "object_type")
        return None
    for name, value in params.items():
        inp = component.input(name)
        loc = ("nodes", i, "params", name)
        if inp is None:
            known = ", ".join(x.name for x in component.inputs) or "none"
            issue(loc, f"{type_name} has no parameter {name!r} (its inputs: {known}).", "extra_forbidden")
            ok = False
        elif is_variable_ref(value):
            if inp.type not in ("str", "any") or inp.multiple:
                issue(loc, f"{type_name}.{name} is of type {inp.type} and cannot take a variable (variables hold text).", "variable_type")
                ok = False
        elif inp.multiple and not isinstance(value, list):
            issue(loc, f"{type_name}.{name} takes a list of {inp.type} values.", "list_type")
            ok = False
        elif inp.multiple and not all(type_accepts(inp.type, v) for v in value):
            issue(loc, f"Every item of {type_name}.{name} must be of type {inp.type}.", f"{inp.type}_type")
            ok = False
        elif not inp.multiple and not type_accepts(inp.type, value):
            issue(loc, f"{type_name}.{name} must be of type {inp.type}, got {_type_name(value)}.", f"{inp.type}_type")
            ok = False
        elif inp.choices is not None and value not in inp.choices:
            issue(loc, f"{type_name}.{name} must be one of {', '.join(map(repr, inp.choices))}.", "enum")
            ok = False
    if not ok:
        return None
    literal = {k: v for k, v in params.items() if not is_variable_ref(v)}
    for name, msg, type_ in component.check_params(literal):
        issue(("nodes", i, "params", name), msg, type_)
        ok = False
    if not ok:
        return None
    return Node(id=node_id, type=type_name, params=dict(params))


def _parse_edge(raw: Any, j: int, nodes: dict[str, Node], registry: Registry, issue) -> Edge | None:
    if not isinstance(raw, dict):
        issue(("edges", j), "An edge must be an object with 'source' and 'target'.", "object_type")
        return None
    for key in sorted(set(raw) - {"source", "target", "source_output", "target_input"}):
        issue(
            ("edges", j, key),
            f"Unknown key {key!r}; an edge has 'source', 'target', 'source_output' and 'target_input'.",
            "extra_forbidden",
        )
        return None
    ends = {}
    for end in ("source", "target"):
        value = raw.get(end)
        if not _name(value):
            issue(("edges", j, end), f"An edge needs a '{end}' node id.", "missing" if value is None else "string_type")
        elif value not in nodes:
            issue(("edges", j, end), f"Edge {end} {value!r} is not a node of this flow.", "unknown_node")
        else:
            ends[end] = nodes[value]
    if len(ends) != 2:
        return None
    source_cls, target_cls = registry.get(ends["source"].type), registry.get(ends["target"].type)

    source_output = raw.get("source_output")
    if source_output is None:
        if not source_cls.outputs:
            issue(("edges", j, "source"), f"Node {ends['source'].id!r} ({source_cls.name}) has no outputs.", "unknown_output")
            return None
        source_output = source_cls.outputs[0].name
    output = source_cls.output(source_output) if isinstance(source_output, str) else None
    if output is None:
        known = ", ".join(o.name for o in source_cls.outputs) or "none"
        issue(("edges", j, "source_output"), f"{source_cls.name} has no output {source_output!r} (its outputs: {known}).", "unknown_output")
        return None

    connectable = [i for i in target_cls.inputs if i.connectable]
    target_input = raw.get("target_input")
    if target_input is None:
        if not connectable:
            issue(("edges", j, "target"), f"Node {ends['target'].id!r} ({target_cls.name}) has no inputs.", "unknown_input")
            return None
        target_input = connectable[0].name
    inp = target_cls.input(target_input) if isinstance(target_input, str) else None
    if inp is None or not inp.connectable:
        known = ", ".join(i.name for i in connectable) or "none"
        issue(
            ("edges", j, "target_input"),
            f"{target_cls.name} has no connectable input {target_input!r} (its inputs: {known}).",
            "unknown_input",
        )
        return None
    if not types_compatible(output.type, inp.type):
        issue(
            ("edges", j),
            f"{source_cls.name}.{output.name} gives {output.type}, but {target_cls.name}.{inp.name} accepts {inp.type}.",
            "type_mismatch",
        )
        return None
    return Edge(source=ends["source"].id, target=ends["target"].id, source_output=source_output, target_input=target_input)


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "list", str: "str", bool: "bool", type(None): "null", int: "int", float: "number"}
    return names.get(type(value), type(value).__name__)


def apply_tweaks(data: Any, tweaks: Any) -> Any:
    """A copy of `data` with per-node parameter overrides `{node_id: {param: value}}` (Langflow's tweaks).

    Unknown node ids and malformed tweaks raise GraphValidationError located
    under `("tweaks", ...)`; the parameters themselves are checked when the
    result is parsed, like saved ones.
    """
    if not tweaks:
        return data
    if not isinstance(tweaks, dict):
        raise GraphValidationError([ValidationIssue(("tweaks",), "Tweaks must be an object {node_id: {param: value}}.", "object_type")])
    nodes = data.get("nodes") if isinstance(data, dict) else None
    ids = {n.get("id") for n in nodes if isinstance(n, dict)} if isinstance(nodes, list) else set()
    issues = []
    for node_id, params in tweaks.items():
        if node_id not in ids:
            issues.append(ValidationIssue(("tweaks", node_id), f"Tweak for unknown node {node_id!r}.", "unknown_node"))
        elif not isinstance(params, dict):
            issues.append(ValidationIssue(("tweaks", node_id), "A node's tweaks must be an object {param: value}.", "object_type"))
    if issues:
        raise GraphValidationError(issues)
    tweaked = dict(data)
    tweaked["nodes"] = [
        {**n, "params": {**(n.get("params") or {}), **_unalias(tweaks[n["id"]], n.get("aliases"))}}
        if isinstance(n, dict) and n.get("id") in tweaks
        else n
        for n in nodes
    ]
    return tweaked


def _unalias(params: dict[str, Any], aliases: Any) -> dict[str, Any]:
    """Tweaks may use a node's `aliases` (e.g. the Langflow field names an imported node came from)."""
    if not isinstance(aliases, dict):
        return params
    renamed = {}
    for name, value in params.items():
        target = aliases.get(name)
        renamed[target if isinstance(target, str) else name] = value
    return renamed
