"""Event streams: a run's progress (`/runs/{id}/events`) and Langflow's live webhook events of a flow.

The views only check who asks and for what; the events come from flows/services/events.py, a plain
generator that a StreamingHttpResponse sends as it goes.
"""

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotAcceptable, NotFound, Throttled
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.views import APIView

from flows.models import FlowRun
from flows.services.events import RunEventsSource, WebhookEventsSource, event_stream
from flows.views import flow_of
from langrun.schema import error
from langrun.waits import STREAMS

EVENT_STREAM = "text/event-stream; charset=utf-8"
# An open stream holds a web thread: a client past its share is told to come back (an EventSource does by itself).
STREAM_RETRY_AFTER = 5
STREAM_REFUSED = error("Too many open event streams (for you, or in this server process); retry after Retry-After seconds.")


def sse_schema(events: list[str]) -> dict:
    """The OpenAPI description of one server-sent event of a stream: its name and its JSON data."""
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": events},
            "data": {"type": "string", "description": "The event's data as JSON text."},
        },
        "required": ["event", "data"],
    }


class StreamSlot:
    """One of this process's stream slots for `user` (langrun.waits.STREAMS), taken at once (429 when none is free).

    Used as a context manager around what the stream needs first: leaving it by an exception gives the slot back;
    `response()` hands it to the response, which gives it back when it is closed (the stream ended, or its client
    went away)."""

    def __init__(self, user):
        self.owner = str(user.pk)
        if not STREAMS.take(owner=self.owner):
            raise Throttled(wait=STREAM_RETRY_AFTER, detail="Too many open event streams: close one, or retry later.")
        self.held = True

    def __enter__(self) -> "StreamSlot":
        return self

    def __exit__(self, *exc) -> None:
        self.give_back()

    def give_back(self) -> None:
        if self.held:
            self.held = False
            STREAMS.give_back(owner=self.owner)

    def response(self, chunks) -> StreamingHttpResponse:
        response = StreamingHttpResponse(_HeldStream(chunks, self), content_type=EVENT_STREAM)
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a proxy (nginx) must not hold the events back
        return response


class _HeldStream:
    """A stream's chunks with its slot: StreamingHttpResponse closes it when the response is closed."""

    def __init__(self, chunks, slot: StreamSlot):
        self.chunks, self.owner = chunks, slot.owner
        slot.held = False  # the response holds it now: the context manager's exit no longer gives it back

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        owner, self.owner = self.owner, None
        try:
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()
        finally:
            if owner is not None:
                STREAMS.give_back(owner=owner)


class StreamNegotiation(DefaultContentNegotiation):
    """An EventSource asks for `text/event-stream`: the stream answers it, and any error is JSON, never a 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class RunEventsView(APIView):
    """Server-sent events of one of your runs: `node_started`, `node_finished` (with the node's output), and
    `run_finished`, after which the stream ends. A run already finished gives its whole history and ends."""

    content_negotiation_class = StreamNegotiation

    @extend_schema(
        summary="A run's events (server-sent events)",
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                sse_schema(["node_started", "node_finished", "run_finished"]), description="The run's events; the stream ends with the run."
            ),
            404: error("No run of yours with this id."),
            429: STREAM_REFUSED,
        },
    )
    def get(self, request, pk):
        if not FlowRun.objects.filter(pk=pk, flow__user=request.user).exists():
            raise NotFound("Run not found")
        with StreamSlot(request.user) as slot:
            return slot.response(event_stream(RunEventsSource(run_id=pk)))


class WebhookEventsView(APIView):
    """Langflow's live webhook events of one of your flows, as server-sent events: `connected`, then for each webhook
    run received while listening `vertices_sorted`, `build_start`, `add_message`, `end_vertex` and `end`;
    `heartbeat` when nothing happens for a while."""

    content_negotiation_class = StreamNegotiation

    @extend_schema(
        summary="Live webhook events of a flow (server-sent events, Langflow's format)",
        parameters=[OpenApiParameter("flow_id_or_name", str, OpenApiParameter.PATH, description="A flow's id or endpoint name.")],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                sse_schema(["connected", "vertices_sorted", "build_start", "add_message", "end_vertex", "end", "heartbeat"]),
                description="Langflow's build events of the flow's webhook runs.",
            ),
            404: error("No flow of yours with this id or endpoint name."),
            429: STREAM_REFUSED,
        },
    )
    def get(self, request, flow_id_or_name: str):
        flow = flow_of(request.user, flow_id_or_name)
        with StreamSlot(request.user) as slot:
            return slot.response(event_stream(WebhookEventsSource(flow=flow)))
