"""What the ledger can hold: a run's outcome made storable on every database, and values as JSON text."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, NamedTuple

from flows import engine
from flows.models import FlowRun, NodeResult


class RunOutcome(NamedTuple):
    """What a run's execution came to, for its finish to record."""

    status: str
    outputs: Any
    error: str
    nodes: list[engine.NodeResult]


def _outcome_storable(outcome: RunOutcome) -> RunOutcome:
    """The outcome as the ledger can hold it, whatever the database: what `_unstorable` finds in an output
    fails the run (that node's output is dropped, its error says why); a NUL or an unpaired surrogate
    in an error or a traceback is written escaped."""
    nodes, spoiled = [], ""
    for node in outcome.nodes:
        problem = _unstorable(node.output)
        error, traceback = _text_storable(node.error), _text_storable(node.traceback)
        if problem:
            spoiled = spoiled or f"Node {node.node_id!r} output contains {problem}, which cannot be stored."
            error = f"Its output contains {problem}, which cannot be stored."
            node = dataclasses.replace(node, status=NodeResult.Status.FAILED, output=None, error=error, traceback=traceback)
        elif error is not node.error or traceback is not node.traceback:
            node = dataclasses.replace(node, error=error, traceback=traceback)
        nodes.append(node)
    if not spoiled and (problem := _unstorable(outcome.outputs)):
        spoiled = f"The run's outputs contain {problem}, which cannot be stored."
    if spoiled:
        return RunOutcome(FlowRun.Status.FAILED, None, spoiled, nodes)
    return RunOutcome(outcome.status, outcome.outputs, _text_storable(outcome.error), nodes)


def _unstorable(value: Any) -> str:
    """What in `value` (as `_json_text` writes it) no database's JSON can hold, or "": a NUL character or an
    unpaired surrogate in a string, or an infinite or NaN number (valid Python, not JSON)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:  # shared, or circular (which `_json_text` refuses in its turn)
                continue
            seen.add(id(item))
            stack.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "a number that is infinite or NaN"
        elif item is not None and not isinstance(item, bool | int):
            text = item if isinstance(item, str) else str(item)
            if "\x00" in text:
                return "a NUL character"
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return "an unpaired surrogate character"
    return ""


def _text_storable(text: str) -> str:
    """`text` with NUL characters and unpaired surrogates escaped (`\\x00`, `\\ud800`); `text` itself when it has none."""
    if not text or ("\x00" not in text and text.isascii()):
        return text
    escaped = text.replace("\x00", "\\x00")
    try:
        escaped.encode("utf-8")
    except UnicodeEncodeError:
        escaped = escaped.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped if escaped != text else text


def _json_text(value: Any) -> str | None:
    """`value` as JSON text for a jsonb column (anything JSON cannot hold as its str); None is SQL NULL."""
    return None if value is None else json.dumps(value, default=str)


def _jsonable(value: Any) -> Any:
    """`value` as it comes back from a JSON column once `_json_text` has written it."""
    text = _json_text(value)
    return None if text is None else json.loads(text)


def node_result_row(run_id, node: engine.NodeResult, *, status: str | None = None) -> NodeResult:
    """The NodeResult row of one node's result in the engine's terms (its output made JSON-able)."""
    return NodeResult(
        run_id=run_id,
        node_id=node.node_id,
        component_type=node.type,
        status=status or node.status,
        output=_jsonable(node.output),
        error=node.error,
        traceback=node.traceback,
        duration_ms=node.duration_ms,
        order=node.order,
    )
