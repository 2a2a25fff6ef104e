"""Flow versions: the immutable graphs a flow had, the one a run executes, and what the webhook needs of one."""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

from django.db import transaction

from flows import engine
from flows.models import Flow, FlowRun, FlowVersion

logger = logging.getLogger(__name__)


class VersionTraits(NamedTuple):
    """What the web side needs to know of a version's graph on every webhook."""

    webhook_schemas: tuple[dict, ...]  # the JSON Schemas of its Webhook nodes
    quick: bool  # every node is a quick component (engine.Component.quick): its runs may be batched


# A version never changes, so its traits are read once per process and version (the flow's UUID in the key
# keeps a version id reused after a rollback from matching): otherwise every webhook would load and decode
# the whole graph for a few facts about it.
@functools.lru_cache(maxsize=1024)
def flow_version_traits(*, flow_id, version_id) -> VersionTraits:
    data = FlowVersion.objects.filter(pk=version_id, flow_id=flow_id).values_list("data", flat=True).first()
    nodes = data.get("nodes") if isinstance(data, dict) else None
    nodes = [node for node in nodes if isinstance(node, dict)] if isinstance(nodes, list) else []
    schemas = tuple(
        node["params"]["schema"]
        for node in nodes
        if node.get("type") == "Webhook" and isinstance(node.get("params"), dict) and isinstance(node["params"].get("schema"), dict)
    )
    return VersionTraits(webhook_schemas=schemas, quick=engine.registry.all_quick(node.get("type") for node in nodes))


def flow_version_quick(*, flow_id, version_id) -> bool:
    """Whether every node of the version is a quick component: its runs may be batched."""
    return flow_version_traits(flow_id=flow_id, version_id=version_id).quick


def flow_version_current(*, flow: Flow) -> FlowVersion:
    """The version equal to the flow's graph: its `current_version` (no query when the lookup joined it), else recorded."""
    current = flow.current_version if flow.current_version_id else None
    if current is not None and current.data == flow.data:
        return current
    return flow_version_record(flow=flow)


def flow_version_record(*, flow: Flow, author=None, message: str = "") -> FlowVersion:
    """The flow's current version: the latest one when its graph equals `flow.data`, else a new one.

    Numbering is serialised per flow by locking the flow's row (SQLite's
    IMMEDIATE transactions serialise writers anyway).
    """
    latest = flow.versions.order_by("-number").first()
    if latest is not None and latest.data == flow.data:
        return _flow_version_point(flow, latest)
    with transaction.atomic():
        Flow.objects.select_for_update().filter(pk=flow.pk).first()
        latest = flow.versions.order_by("-number").first()
        if latest is not None and latest.data == flow.data:
            return _flow_version_point(flow, latest)
        version = FlowVersion.objects.create(
            flow=flow, number=(latest.number + 1) if latest else 1, data=flow.data, author=author, message=message[:500]
        )
        Flow.objects.filter(pk=flow.pk).update(current_version=version)
        flow.current_version = version
    logger.info("Flow version %d recorded", version.number, extra={"flow_id": flow.id})
    return version


def _flow_version_point(flow: Flow, version: FlowVersion) -> FlowVersion:
    if flow.current_version_id != version.pk:
        Flow.objects.filter(pk=flow.pk).update(current_version=version)
        flow.current_version = version
    return version


def flow_run_graph_data(*, run: FlowRun) -> dict:
    """The graph a run executes: its version's, or (for a run recorded before versions) the flow's."""
    return run.version.data if run.version_id else run.flow.data
