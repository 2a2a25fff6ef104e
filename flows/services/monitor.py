"""Monitoring: Langflow's vertex builds of a flow, from its runs' node results."""

from __future__ import annotations

import json
from typing import Any

from flows.models import Flow, FlowRun, FlowVersion, NodeResult

VERTEX_BUILDS_RUNS = 100


def flow_vertex_builds(*, flow: Flow, runs: int = VERTEX_BUILDS_RUNS) -> dict[str, list[dict[str, Any]]]:
    """Langflow's vertex builds for a flow, from the node results of its latest `runs` finished runs.

    `{node_id: [build, ...]}`, oldest build first per node; nodes that were
    skipped are left out (they were never built).
    """
    latest = list(
        FlowRun.objects.filter(flow=flow, finished_at__isnull=False).order_by("-received_at").values_list("pk", "version_id")[:runs]
    )
    results = (
        NodeResult.objects.filter(run_id__in=[pk for pk, _ in latest])
        .exclude(status=NodeResult.Status.SKIPPED)
        .select_related("run")
        .order_by("run__received_at", "order")
    )
    # Each run's params are its own version's (a run recorded before versions has only the flow's graph).
    versions = FlowVersion.objects.filter(pk__in={version_id for _, version_id in latest if version_id is not None})
    params_of = {version_id: _params_by_node(data) for version_id, data in versions.values_list("pk", "data")}
    params_of[None] = _params_by_node(flow.data)
    builds: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        tweaks = ((result.run.tweaks or {}).get(result.node_id)) or {}
        params_by_node = params_of.get(result.run.version_id, params_of[None])
        params = {**(params_by_node.get(result.node_id) or {}), **tweaks}
        builds.setdefault(result.node_id, []).append(
            {
                "id": result.node_id,
                "valid": result.status == NodeResult.Status.SUCCEEDED,
                "timestamp": result.run.finished_at,
                "flow_id": flow.id,
                "params": json.dumps(params) if params else None,
                "data": {
                    "results": result.output,
                    "outputs": result.output,
                    "status": result.status,
                    "message": result.error,
                    "duration_ms": result.duration_ms,
                    "component_type": result.component_type,
                },
                "artifacts": {},
                "build_id": result.run_id,
            }
        )
    return builds


def _params_by_node(data: Any) -> dict[str, Any]:
    nodes = data.get("nodes") if isinstance(data, dict) else None
    return {n.get("id"): n.get("params") for n in (nodes if isinstance(nodes, list) else []) if isinstance(n, dict)}
