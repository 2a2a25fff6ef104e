"""Langflow flow exports (React-Flow JSON) to langrun's native format.

Each supported Langflow component maps to one native node that keeps the Langflow
node id (so a Langflow tweak keyed by node id still applies); template field values
become params and edge handles are renamed to native input and output names.
Everything that cannot be converted is reported at once, every unsupported node by
id and type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.engine import GraphValidationError, ValidationIssue


class ImportProblem(GraphValidationError):
    """A Langflow export that cannot be converted; `issues` lists every problem (locations in the export)."""


@dataclass(frozen=True)
class _Spec:
    native: str
    inputs: dict[str, str] = field(default_factory=dict)  # Langflow field name -> native input
    outputs: dict[str, str] = field(default_factory=dict)  # Langflow output name -> native output
    params: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] = lambda template, node: {}
    # A reason the node cannot be converted as configured, or None.
    refuse: Callable[[dict[str, Any]], str | None] = lambda template: None
    # Langflow field name -> native param, kept on the node so that Langflow-style tweaks apply.
    aliases: dict[str, str] = field(default_factory=dict)


def _object(value: Any) -> dict[str, Any]:
    """`value` where the export should hold an object, else an empty one: a malformed export is reported, never a crash."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """`value` where the export should hold a name or an id, else None (a list or an object names nothing)."""
    return value if isinstance(value, str) else None


def _value(template: dict[str, Any], name: str) -> Any:
    item = template.get(name)
    return item.get("value") if isinstance(item, dict) else None


def _set(params: dict[str, Any], name: str, value: Any) -> None:
    if value is not None and value != "" and value != [] and value != {}:
        params[name] = value


def _table(value: Any) -> Any:
    """Langflow's table inputs (`[{"key": k, "value": v}]`) as an object."""
    if isinstance(value, list) and all(isinstance(row, dict) and "key" in row for row in value):
        return {str(row["key"]): row.get("value", "") for row in value if row.get("key") not in (None, "")}
    if isinstance(value, str) and value.strip().startswith(("{", "[")):
        try:
            return _table(json.loads(value))
        except (ValueError, RecursionError):  # not JSON, or nested deeper than it can be read: kept as text
            return value
    return value


def _secret(template: dict[str, Any], name: str) -> Any:
    """A Langflow field loaded from a global variable becomes a variable reference of the same name."""
    item = template.get(name)
    if isinstance(item, dict) and item.get("load_from_db") and isinstance(item.get("value"), str) and item["value"]:
        return {"variable": item["value"]}
    return _value(template, name)


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            return value
    return value


_PROMPT_VARIABLE = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


def _prompt_variables(template: dict[str, Any], node: dict[str, Any]) -> list[str]:
    custom = _object(node.get("custom_fields")).get("template")
    if isinstance(custom, list):
        return [str(v) for v in custom]
    return _PROMPT_VARIABLE.findall(_text(_value(template, "template")) or "")


def _prompt_params(template: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"template": _value(template, "template") or ""}
    for name in _prompt_variables(template, node):
        _set(params, name, _value(template, name))
    return params


def _prompt_inputs(node_data: dict[str, Any]) -> dict[str, str]:
    node = _object(node_data.get("node"))
    names = _prompt_variables(_object(node.get("template")), node)
    return {name: name for name in names}


_OPERATORS = {
    "equals": "equals",
    "not equals": "not_equals",
    "contains": "contains",
    "starts with": "starts_with",
    "ends with": "ends_with",
    "regex": "matches",
    "less than": "lt",
    "less than or equal": "le",
    "greater than": "gt",
    "greater than or equal": "ge",
}


def _router_params(template: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"operator": _OPERATORS.get(_value(template, "operator") or "equals", "equals")}
    params["value"] = _value(template, "match_text") if _value(template, "match_text") is not None else ""
    if isinstance(_value(template, "case_sensitive"), bool):
        params["case_sensitive"] = _value(template, "case_sensitive")
    return params


def _router_refuse(template: dict[str, Any]) -> str | None:
    operator = _value(template, "operator") or "equals"
    if not isinstance(operator, str) or operator not in _OPERATORS:
        return f"operator {_value(template, 'operator')!r} has no equivalent"
    if _value(template, "true_case_message") or _value(template, "false_case_message"):
        return "custom true/false case messages are not supported (leave them empty to pass the input through)"
    return None


def _api_params(template: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    _set(params, "url", _value(template, "url_input") or _value(template, "urls"))
    if isinstance(params.get("url"), list):
        params["url"] = params["url"][0] if params["url"] else None
    method = _value(template, "method") or "GET"
    _set(params, "method", method.upper() if isinstance(method, str) else method)  # a method that is no text fails the graph's check
    _set(params, "headers", _table(_value(template, "headers")))
    _set(params, "query", _table(_value(template, "query_params")))
    _set(params, "body", _table(_value(template, "body")))
    _set(params, "timeout", _number(_value(template, "timeout")))
    return params


def _api_refuse(template: dict[str, Any]) -> str | None:
    if (_value(template, "mode") or "URL") != "URL":
        return f"mode {_value(template, 'mode')!r} is not supported (use URL mode)"
    urls = _value(template, "urls")
    if isinstance(urls, list) and len(urls) > 1:
        return "several URLs are not supported"
    return None


def _model_params(template: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    _set(params, "model", _value(template, "model_name"))
    _set(params, "api_key", _secret(template, "api_key"))
    _set(params, "base_url", _value(template, "openai_api_base") or _value(template, "base_url"))
    _set(params, "system_prompt", _value(template, "system_message"))
    _set(params, "temperature", _number(_value(template, "temperature")))
    max_tokens = _number(_value(template, "max_tokens"))
    if isinstance(max_tokens, int) and max_tokens > 0:
        params["max_tokens"] = max_tokens
    _set(params, "prompt", _value(template, "input_value"))
    return params


def _model_refuse(template: dict[str, Any]) -> str | None:
    provider = _value(template, "provider")
    if provider not in (None, "", "OpenAI"):
        return f"provider {provider!r} is not supported (only OpenAI-compatible APIs)"
    return None


def _parser_refuse(template: dict[str, Any]) -> str | None:
    mode = _value(template, "mode") or "Parser"
    return None if mode == "Parser" else f"mode {mode!r} is not supported (use Parser mode with a pattern)"


_TEXT_IN = _Spec(
    "Text",
    inputs={"input_value": "text"},
    outputs={"message": "text", "text": "text"},
    params=lambda t, n: {"text": _value(t, "input_value")} if isinstance(_value(t, "input_value"), str) else {},
    aliases={"input_value": "text"},
)
_TEXT_OUT = _Spec("Output", inputs={"input_value": "value"}, outputs={"message": "value", "text": "value"})
_PROMPT = _Spec("Template", outputs={"prompt": "text"}, params=_prompt_params)
_MODEL = _Spec(
    "LanguageModel",
    inputs={"input_value": "prompt"},
    outputs={"text_output": "text", "model_output": "response"},
    params=_model_params,
    refuse=_model_refuse,
    aliases={
        "input_value": "prompt",
        "model_name": "model",
        "openai_api_base": "base_url",
        "system_message": "system_prompt",
    },
)

SPECS: dict[str, _Spec] = {
    "Webhook": _Spec("Webhook", outputs={"output_data": "data"}),
    "ChatInput": _TEXT_IN,
    "TextInput": _TEXT_IN,
    "ChatOutput": _TEXT_OUT,
    "TextOutput": _TEXT_OUT,
    "Prompt": _PROMPT,
    "Prompt Template": _PROMPT,
    "ParserComponent": _Spec(
        "Template",
        inputs={"input_data": "data"},
        outputs={"parsed_text": "text"},
        params=lambda t, n: {"template": _value(t, "pattern") or ""},
        refuse=_parser_refuse,
        aliases={"pattern": "template"},
    ),
    "ParseData": _Spec(
        "Template",
        inputs={"data": "data"},
        outputs={"text": "text"},
        params=lambda t, n: {"template": _value(t, "template") or ""},
    ),
    "ConditionalRouter": _Spec(
        "Condition",
        inputs={"input_text": "data"},
        outputs={"true_result": "true", "false_result": "false"},
        params=_router_params,
        refuse=_router_refuse,
        aliases={"match_text": "value"},
    ),
    "APIRequest": _Spec(
        "HTTPRequest",
        outputs={"data": "body"},
        params=_api_params,
        refuse=_api_refuse,
        aliases={"url_input": "url", "query_params": "query"},
    ),
    "OpenAIModel": _MODEL,
    "LanguageModelComponent": _MODEL,
}

# Nodes that only annotate the canvas.
_IGNORED_NODE_TYPES = {"noteNode"}


def is_langflow_flow(document: Any) -> bool:
    """True when `document` (a flow, with `data.nodes`) is in Langflow's format rather than langrun's."""
    data = document.get("data") if isinstance(document, dict) else None
    nodes = data.get("nodes") if isinstance(data, dict) else None
    return isinstance(nodes, list) and any(isinstance(n, dict) and isinstance(n.get("data"), dict) for n in nodes)


def _handle(edge: dict[str, Any], key: str) -> dict[str, Any]:
    handle = _object(edge.get("data")).get(key)
    if isinstance(handle, dict):
        return handle
    raw = edge.get(key)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw.replace("œ", '"'))
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def langflow_to_native(document: dict[str, Any]) -> dict[str, Any]:
    """`{"name", "description", "endpoint_name", "data"}` for one Langflow flow; raises ImportProblem."""
    issues: list[ValidationIssue] = []
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ImportProblem([ValidationIssue(("data",), "A Langflow flow needs data.nodes.", "missing")])
    raw_edges = data.get("edges") or []
    if not isinstance(raw_edges, list):
        raise ImportProblem([ValidationIssue(("data", "edges"), "data.edges must be a list.", "list_type")])

    nodes: list[dict[str, Any]] = []
    specs: dict[str, _Spec] = {}
    extra_inputs: dict[str, dict[str, str]] = {}
    for i, raw in enumerate(data["nodes"]):
        if isinstance(raw, dict) and _text(raw.get("type")) in _IGNORED_NODE_TYPES:
            continue
        node_data = raw.get("data") if isinstance(raw, dict) else None
        node_id = (raw.get("id") if isinstance(raw, dict) else None) or _object(node_data).get("id")
        type_name = _object(node_data).get("type")
        if not isinstance(node_data, dict) or not isinstance(node_id, str) or not isinstance(type_name, str):
            issues.append(ValidationIssue(("data", "nodes", i), "A Langflow node needs an id and data.type.", "missing"))
            continue
        spec = SPECS.get(type_name)
        node = _object(node_data.get("node"))
        template = _object(node.get("template"))
        reason = spec.refuse(template) if spec else None
        if spec is None or reason:
            why = f": {reason}" if reason else " has no langrun equivalent"
            issues.append(
                ValidationIssue(
                    ("data", "nodes", i), f"Unsupported component {type_name!r} (node {node_id}){why}.", "unsupported_component"
                )
            )
            continue
        params = {k: v for k, v in spec.params(template, node).items() if v is not None}
        nodes.append(
            {
                "id": node_id,
                "type": spec.native,
                **({"params": params} if params else {}),
                **({"aliases": dict(spec.aliases)} if spec.aliases else {}),
            }
        )
        specs[node_id] = spec
        if spec is _PROMPT:
            extra_inputs[node_id] = _prompt_inputs(node_data)

    edges: list[dict[str, Any]] = []
    for j, raw in enumerate(raw_edges):
        if not isinstance(raw, dict):
            issues.append(ValidationIssue(("data", "edges", j), "An edge must be an object.", "object_type"))
            continue
        source, target = _text(raw.get("source")), _text(raw.get("target"))
        if source not in specs or target not in specs:
            continue  # an edge of an unsupported node: that node is already reported
        output = _text(_handle(raw, "sourceHandle").get("name"))
        field_name = _text(_handle(raw, "targetHandle").get("fieldName"))
        native_output = specs[source].outputs.get(output)
        native_input = {**specs[target].inputs, **extra_inputs.get(target, {})}.get(field_name)
        if native_output is None:
            issues.append(
                ValidationIssue(
                    ("data", "edges", j), f"Output {output!r} of node {source} has no langrun equivalent.", "unsupported_handle"
                )
            )
        if native_input is None:
            issues.append(
                ValidationIssue(
                    ("data", "edges", j), f"Input {field_name!r} of node {target} has no langrun equivalent.", "unsupported_handle"
                )
            )
        if native_output and native_input:
            edges.append({"source": source, "source_output": native_output, "target": target, "target_input": native_input})
            # A connected field's literal value in the export is only the UI's leftover.
            for node in nodes:
                if node["id"] == target and native_input in node.get("params", {}):
                    del node["params"][native_input]
    if issues:
        raise ImportProblem(issues)
    return {
        "name": str(document.get("name") or "Imported flow")[:200],
        "description": str(document.get("description") or ""),
        "endpoint_name": document.get("endpoint_name") or None,
        "data": {"nodes": nodes, "edges": edges},
    }
