"""Monitoring: Langflow's vertex builds of a flow, from its runs' node results."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db.models import TextField
from django.db.models.functions import Cast, Length

from flows.models import Flow, FlowRun, FlowVersion, NodeResult

VERTEX_BUILDS_RUNS = 100
# At most this many node results, the newest, and at most LANGRUN_MAX_RUN_OUTPUT_BYTES of their outputs (as JSON): a
# hundred runs of a flow of thousands of nodes, or of outputs of megabytes, would make an answer of gigabytes.
VERTEX_BUILDS_MAX = 10_000


def flow_vertex_builds(*, flow: Flow, runs: int = VERTEX_BUILDS_RUNS) -> dict[str, list[dict[str, Any]]]:
    """Langflow's vertex builds for a flow, from the node results of its latest `runs` finished runs.

    `{node_id: [build, ...]}`, oldest build first per node; nodes that were
    skipped are left out (they were never built). Only the newest node results within VERTEX_BUILDS_MAX and
    LANGRUN_MAX_RUN_OUTPUT_BYTES are built.
    """
    # What a build needs of its run, read once per run: a node result joined to its run's whole row would read (and
    # decode) the run's outputs and payload once per node.
    latest = {
        pk: {"version_id": version_id, "tweaks": tweaks or {}, "finished_at": finished_at}
        for pk, version_id, tweaks, finished_at in FlowRun.objects.filter(flow=flow, finished_at__isnull=False)
        .order_by("-received_at")
        .values_list("pk", "version_id", "tweaks", "finished_at")[:runs]
    }
    built = NodeResult.objects.filter(run_id__in=list(latest)).exclude(status=NodeResult.Status.SKIPPED)
    newest = built.annotate(size=Length(Cast("output", TextField()))).order_by("-run__received_at", "-order")
    budget, chosen = settings.LANGRUN_MAX_RUN_OUTPUT_BYTES or None, []
    for pk, size in newest.values_list("pk", "size")[:VERTEX_BUILDS_MAX]:
        budget = budget - (size or 0) if budget is not None else None
        if budget is not None and budget < 0:
            break
        chosen.append(pk)
    results = NodeResult.objects.filter(pk__in=chosen).defer("traceback").order_by("run__received_at", "order")
    # Each run's params are its own version's (a run recorded before versions has only the flow's graph).
    versions = FlowVersion.objects.filter(pk__in={run["version_id"] for run in latest.values() if run["version_id"] is not None})
    params_of = {version_id: _params_by_node(data) for version_id, data in versions.values_list("pk", "data")}
    params_of[None] = _params_by_node(flow.data)
    builds: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        run = latest[result.run_id]
        tweaks = run["tweaks"].get(result.node_id) or {}
        params_by_node = params_of.get(run["version_id"], params_of[None])
        params = {**(params_by_node.get(result.node_id) or {}), **tweaks}
        builds.setdefault(result.node_id, []).append(
            {
                "id": result.node_id,
                "valid": result.status == NodeResult.Status.SUCCEEDED,
                "timestamp": run["finished_at"],
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
