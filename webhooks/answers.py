"""What the webhook answers once a run is recorded: the flow's `response`.

`accepted` (the default) is the 202 the view writes; `static` is the flow's fixed answer; `flow` is what the run's
Respond node produced, read from its node result once the run has finished (the waiting is flows/services/waits.py,
under the caps of langrun/waits.py).
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

from flows.engine.components.respond import BODILESS_STATUSES, answer_headers_problem, answer_status_problem
from flows.models import FlowRun, NodeResult

RESPOND = "Respond"
FAILED_BEFORE_ANSWER = "The flow's run ended before a Respond node answered."


# An answer is the flow owner's content served from this server's address, where the admin's and the API's sessions
# live: whatever its type (an HTML page, an SVG), a browser treats it as a page of no origin, which runs no script,
# sends no cookies and reaches nothing of this origin; and never as a type other than the one it says.
SANDBOX_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
_SANDBOX_NAMES = frozenset(name.lower() for name in SANDBOX_HEADERS)


def webhook_answer(*, status: int, headers: dict[str, str], body: Any, replayed: bool) -> HttpResponse:
    """An answer of the flow's making: text as text/plain, anything else as JSON, unless its headers say otherwise.

    Sandboxed (SANDBOX_HEADERS, over the flow's own). `langrun_flow_headers` keeps these headers for the view to put
    back over those DRF sets (Allow, Vary).
    """
    headers = {name: value for name, value in headers.items() if name.lower() not in _SANDBOX_NAMES} | SANDBOX_HEADERS
    if isinstance(body, str):
        content, content_type = body.encode("utf-8", "replace"), "text/plain; charset=utf-8"
    else:
        content, content_type = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace"), "application/json"
    response = HttpResponse(b"" if status in BODILESS_STATUSES else content, status=status, content_type=content_type)
    for name, value in headers.items():
        response[name] = value
    if replayed:
        response["Idempotent-Replayed"] = "true"
    response.langrun_flow_headers = headers
    return response


def webhook_static_answer(*, response: dict, replayed: bool) -> HttpResponse:
    """The `static` mode's answer, the same for every request recorded (a repeated delivery too)."""
    return webhook_answer(status=response["status"], headers=response["headers"], body=response["body"], replayed=replayed)


def webhook_run_answer(*, run: FlowRun, status_url: str, replayed: bool) -> HttpResponse:
    """The `flow` mode's answer for a finished run (its node results prefetched in order).

    The first Respond node that succeeded, in the graph's order, answers, even if a later node failed; a run that
    succeeded without one (no Respond node, or its branch skipped) answers its outputs as JSON; a run that failed or
    was cancelled before any answered is a 502 naming the run (not its error: the caller may be a third party).
    """
    for node in run.node_results.all():
        if node.component_type == RESPOND and node.status == NodeResult.Status.SUCCEEDED and _is_answer(node.output):
            answer = node.output["response"]
            return webhook_answer(status=answer["status"], headers=answer["headers"], body=answer["body"], replayed=replayed)
    if run.status == FlowRun.Status.SUCCEEDED:
        return webhook_answer(status=200, headers={}, body=run.outputs, replayed=replayed)
    body = {"detail": FAILED_BEFORE_ANSWER, "status": run.status, "run_id": str(run.id), "status_url": status_url}
    return webhook_answer(status=502, headers={"Location": status_url}, body=body, replayed=replayed)


def _is_answer(output: Any) -> bool:
    # What a Respond node recorded, checked again: the component checks it, but a row is only data.
    answer = output.get("response") if isinstance(output, dict) else None
    return (
        isinstance(answer, dict)
        and answer_status_problem(answer.get("status")) is None
        and answer_headers_problem(answer.get("headers")) is None
        and "body" in answer
    )
