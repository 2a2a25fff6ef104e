"""Langflow's shapes for a run: the RunResponse of `/run`, its chat messages, its error body, its vertex builds.

Built from the run ledger (a run and its node results), so the answer of `/run`, its stream and the
webhook-events stream describe a run the same way, whichever process executed it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from flows.models import FlowRun, NodeResult
from flows.services.versions import flow_run_graph_data

# A message's fields as Langflow's Chat Output sends them; langrun's Output node speaks as Langflow's does.
SENDER, SENDER_NAME = "Machine", "AI"
USER_SENDER, USER_SENDER_NAME = "User", "User"


def langflow_timestamp(when: datetime | None) -> str:
    """A time as Langflow writes a message's `timestamp`: `2026-12-06 11:21:06.481735 UTC`."""
    return (when or timezone.now()).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def langflow_message(
    *, text: str, run: FlowRun, session_id: str, component_id: str | None, sender: str = SENDER, sender_name: str = SENDER_NAME
) -> dict[str, Any]:
    """A chat message as Langflow's `results.message` and `add_message` event carry it."""
    fields = {
        "text": text,
        "sender": sender,
        "sender_name": sender_name,
        "session_id": session_id,
        "timestamp": langflow_timestamp(run.finished_at),
        "flow_id": str(run.flow_id),
        "run_id": str(run.id),
        "files": [],
        "error": False,
        "edit": False,
        "properties": {"source": {"id": component_id, "display_name": None, "source": None}, "state": "complete"},
        "category": "message",
        "content_blocks": [],
    }
    return {**fields, "text_key": "text", "component_id": component_id, "data": dict(fields)}


def output_node_ids(run: FlowRun) -> set[str]:
    """The ids of the run's Output nodes (a Langflow Chat or Text Output imports as one)."""
    nodes = (flow_run_graph_data(run=run) or {}).get("nodes", [])
    return {n.get("id") for n in nodes if isinstance(n, dict) and n.get("type") == "Output"}


def reported_nodes(run: FlowRun, nodes: list[NodeResult], *, output_type: str, output_component: str) -> list[NodeResult]:
    """The nodes `/run` reports: one named component, every node for `debug`, else the Output nodes."""
    if output_component:
        return [n for n in nodes if n.node_id == output_component]
    if output_type == "debug":
        return list(nodes)
    outputs = output_node_ids(run)
    return [n for n in nodes if n.node_id in outputs]


def result_data(run: FlowRun, node: NodeResult, *, session_id: str, is_output: bool) -> dict[str, Any]:
    """One node's ResultData: langrun's `results` (the node's outputs by name) with, for an Output node
    whose value is text, Langflow's `results.message` and `outputs.message`."""
    produced = node.output if isinstance(node.output, dict) else {}
    results = dict(produced) if isinstance(node.output, dict) else node.output
    outputs = {name: {"message": value, "type": "text" if isinstance(value, str) else "object"} for name, value in produced.items()}
    messages, artifacts = [], {}
    text = produced.get("value") if is_output else None
    if isinstance(text, str) and node.status == NodeResult.Status.SUCCEEDED:
        results["message"] = langflow_message(text=text, run=run, session_id=session_id, component_id=node.node_id)
        outputs["message"] = {"message": text, "type": "text"}
        artifacts = {"message": text, "sender": SENDER, "sender_name": SENDER_NAME, "files": [], "type": "object"}
        messages = [
            {
                "message": text,
                "sender": SENDER,
                "sender_name": SENDER_NAME,
                "session_id": session_id,
                "stream_url": None,
                "component_id": node.node_id,
                "files": [],
                "type": "text",
            }
        ]
    return {
        "results": results,
        "outputs": outputs,
        "artifacts": artifacts,
        "logs": {name: [] for name in outputs},
        "messages": messages,
        "timedelta": node.duration_ms / 1000 if node.duration_ms else None,
        "duration": f"{round(node.duration_ms)} ms" if node.duration_ms else None,
        "component_id": node.node_id,
        "component_display_name": node.component_type,
        "used_frozen_result": False,
        "status": node.status,
        "error": node.error,
    }


def run_response(run: FlowRun, *, inputs: dict, output_type: str, output_component: str, session_id: str) -> dict[str, Any]:
    """Langflow's RunResponse for a finished run, plus langrun's `run_id`, `status` and `error`."""
    nodes = list(run.node_results.order_by("order"))
    outputs = output_node_ids(run)
    reported = reported_nodes(run, nodes, output_type=output_type, output_component=output_component)
    return {
        "session_id": session_id,
        "outputs": [
            {"inputs": inputs, "outputs": [result_data(run, n, session_id=session_id, is_output=n.node_id in outputs) for n in reported]}
        ],
        "run_id": run.id,
        "status": run.status,
        "error": run.error,
    }


def run_error_detail(run: FlowRun) -> str:
    """Langflow's `detail` for a run that failed: its error body (message, traceback, …) as JSON text."""
    message = run.error or f"The run ended {run.status}."
    body = {"message": message, "traceback": None, "description": None, "code": None, "suggestion": None, "source": None}
    return json.dumps(body)
