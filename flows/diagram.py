"""A flow's graph drawn as SVG on the server: boxes in layers, left to right in dependency order.

No JavaScript and no external assets: the admin embeds the returned markup, and the
colours come from CSS classes (flows/static/flows/admin.css) that use the admin's
theme variables, so the drawing follows Django's light and dark themes.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from flows import engine

NODE_WIDTH = 170  # at least; wider for long node ids (Langflow's `ConditionalRouter-Fg4h5`), up to NODE_MAX_WIDTH
NODE_MAX_WIDTH = 300
NODE_HEIGHT = 52
GAP_X = 70
GAP_Y = 24
MARGIN = 12
_ID_CHAR_PX = 9  # a generous average for the 13px bold id, so that a label never overflows its box
_PADDING = 20


@dataclass(frozen=True)
class Box:
    node_id: str
    type: str
    x: int
    y: int
    width: int = NODE_WIDTH


def node_width(graph: engine.Graph) -> int:
    longest = max((len(node_id) for node_id in graph.nodes), default=0)
    return max(NODE_WIDTH, min(NODE_MAX_WIDTH, _PADDING + _ID_CHAR_PX * longest))


def layout(graph: engine.Graph) -> dict[str, Box]:
    """Place each node in the layer after its deepest predecessor; within a layer, in topological order."""
    width = node_width(graph)
    layer: dict[str, int] = {}
    for node_id in graph.order:
        layer[node_id] = max((layer[e.source] + 1 for e in graph.incoming(node_id)), default=0)
    rows: dict[int, int] = {}
    boxes = {}
    for node_id in graph.order:
        col = layer[node_id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        boxes[node_id] = Box(
            node_id=node_id,
            type=graph.nodes[node_id].type,
            x=MARGIN + col * (width + GAP_X),
            y=MARGIN + row * (NODE_HEIGHT + GAP_Y),
            width=width,
        )
    return boxes


def _short(text: str, limit: int) -> str:
    """At most `limit` characters, cut in the middle: the end of an id (`…-Fg4h5`) tells same-type nodes apart."""
    if len(text) <= limit:
        return text
    tail = min(6, limit // 3)
    return text[: limit - 1 - tail] + "…" + text[-tail:]


def _branching(graph: engine.Graph) -> set[str]:
    """Nodes whose edges leave from more than one output (a Condition's `true` and `false`): their edges get labels."""
    outputs: dict[str, set[str]] = {}
    for edge in graph.edges:
        outputs.setdefault(edge.source, set()).add(edge.source_output)
    return {node_id for node_id, names in outputs.items() if len(names) > 1}


def render_svg(graph: engine.Graph, *, statuses: dict[str, str] | None = None) -> str:
    """The graph as an `<svg>` element; `statuses` (node id -> status) colours the boxes, e.g. for a run."""
    boxes = layout(graph)
    statuses = statuses or {}
    box_width = node_width(graph)
    id_chars = (box_width - _PADDING) // _ID_CHAR_PX
    branching = _branching(graph)
    width = max((b.x for b in boxes.values()), default=0) + box_width + MARGIN
    height = max((b.y for b in boxes.values()), default=0) + NODE_HEIGHT + MARGIN
    parts = [
        f'<svg class="lr-diagram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Flow diagram">',
        '<defs><marker id="lr-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto-start-reverse"><path class="lr-arrowhead" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>',
    ]
    for edge in graph.edges:
        src, dst = boxes[edge.source], boxes[edge.target]
        x1, y1 = src.x + src.width, src.y + NODE_HEIGHT // 2
        x2, y2 = dst.x - 2, dst.y + NODE_HEIGHT // 2
        mid = (x1 + x2) // 2
        title = escape(f"{edge.source}.{edge.source_output} → {edge.target}.{edge.target_input}")
        parts.append(
            f'<path class="lr-edge" d="M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}" marker-end="url(#lr-arrow)">'
            f"<title>{title}</title></path>"
        )
        if edge.source in branching:
            parts.append(
                f'<text class="lr-edge-label" x="{mid}" y="{(y1 + y2) // 2 + 4}" text-anchor="middle">{escape(_short(edge.source_output, 10))}</text>'
            )
    for box in boxes.values():
        status = statuses.get(box.node_id, "")
        css = f"lr-node lr-node-{escape(status)}" if status else "lr-node"
        label = f"{box.node_id} ({box.type})" + (f": {status}" if status else "")
        parts.append(
            f'<g class="{css}" data-node-id="{escape(box.node_id)}"><title>{escape(label)}</title>'
            f'<rect x="{box.x}" y="{box.y}" width="{box.width}" height="{NODE_HEIGHT}" rx="6"/>'
            f'<text class="lr-node-id" x="{box.x + 10}" y="{box.y + 21}">{escape(_short(box.node_id, id_chars))}</text>'
            f'<text class="lr-node-type" x="{box.x + 10}" y="{box.y + 40}">{escape(_short(box.type, 22))}'
            + (f" · {escape(status)}" if status else "")
            + "</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
