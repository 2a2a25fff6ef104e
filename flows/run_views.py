"""Langflow's Simplified Run Flow: `POST /api/v1/run/{flow_id_or_name}`, answered as Langflow answers it."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from flows.engine import GraphValidationError
from flows.langflow_serializers import RunAcceptedSerializer, RunFailedSerializer, RunResponseSerializer, SimplifiedRunRequestSerializer
from flows.models import FlowRun
from flows.services.events import RunStreamSource, event_stream
from flows.services.langflow import run_error_detail, run_response
from flows.services.runs import flow_run_create, flow_run_input_payload
from flows.services.variables import variables_from_headers
from flows.services.waits import flow_run_execute_sync, flow_run_start_here
from flows.stream_views import STREAM_REFUSED, StreamNegotiation, StreamSlot
from flows.views import flow_of, run_status_url
from langrun.exceptions import RequestValidationError
from langrun.filters import query_value
from langrun.parsers import JSONParser, json_text_unstorable
from langrun.schema import error


def _tweak_errors(exc: GraphValidationError, data: dict) -> RequestValidationError:
    """Locate tweak problems under ["body", "tweaks", node_id, ...], including bad tweaked params."""
    nodes = data.get("nodes") or []
    errors = []
    for issue in exc.issues:
        loc = list(issue.loc)
        if loc[:1] == ["tweaks"]:
            loc = loc[1:]
        elif loc[:1] == ["nodes"] and len(loc) >= 2 and isinstance(loc[1], int) and loc[1] < len(nodes):
            node_id = nodes[loc[1]].get("id") if isinstance(nodes[loc[1]], dict) else loc[1]
            rest = loc[2:]
            loc = [node_id, *(rest[1:] if rest[:1] == ["params"] else rest)]
        errors.append({"loc": ["body", "tweaks", *loc], "msg": issue.msg, "type": issue.type})
    return RequestValidationError(errors)


_TRUE, _FALSE = {"true", "1", "yes", "on", "t", "y"}, {"false", "0", "no", "off", "f", "n", ""}


def _stream_param(raw: str | None) -> bool:
    """Langflow's `?stream=` boolean (FastAPI's spellings); anything else is its 422."""
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise RequestValidationError.single(["query", "stream"], "Input should be a valid boolean, unable to interpret input", "bool_parsing")


class SimplifiedRunView(APIView):
    """Run a flow and answer with its results (Langflow's Simplified Run Flow).

    The run is recorded with trigger `api` and executes in this request. When it
    takes longer than `LANGRUN_SYNC_RUN_TIMEOUT` seconds, the answer is a 202 with
    the run's id and status URL, and the run goes on to finish on its own. A run
    that fails answers as Langflow does: 500 with its error body as `detail`.

    With `?stream=true` the answer is Langflow's stream (`text/event-stream`, one JSON record
    `{"event", "data"}` per event): `add_message` for the input and for each text output as its node
    finishes, then `end` with the RunResponse, or `error` for a run that failed.
    """

    serializer_class = SimplifiedRunRequestSerializer
    parser_classes = [JSONParser]  # as Langflow's: tweaks are nested objects, which forms cannot carry
    content_negotiation_class = StreamNegotiation

    @extend_schema(
        summary="Run a flow and wait for its results",
        request=SimplifiedRunRequestSerializer,
        responses={
            (200, "application/json"): RunResponseSerializer,
            (200, "text/event-stream"): OpenApiResponse(
                {"type": "string"},
                description="With ?stream=true: Langflow's records, each one JSON line {event, data} and a blank line (not SSE fields).",
            ),
            202: OpenApiResponse(RunAcceptedSerializer, description="Still running at the timeout; follow status_url."),
            404: error("No flow of yours with this id or endpoint name."),
            429: STREAM_REFUSED,
            500: OpenApiResponse(
                RunFailedSerializer,
                description="The run failed (it is recorded): Langflow's error body as JSON text in `detail`, with the run's id.",
            ),
        },
        parameters=[
            OpenApiParameter("flow_id_or_name", str, OpenApiParameter.PATH, description="A flow's id or endpoint name."),
            OpenApiParameter(
                "stream", bool, OpenApiParameter.QUERY, description="Answer with Langflow's event stream (text/event-stream)."
            ),
        ],
    )
    def post(self, request, flow_id_or_name: str):
        stream = _stream_param(query_value(request.GET, "stream"))
        body = SimplifiedRunRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        params = body.validated_data
        problem = json_text_unstorable(params["input_value"]) if params["input_value"] else None
        if problem is not None:  # JSON whose value could be neither stored nor read back
            raise RequestValidationError.single(["body", "input_value"], *problem)
        flow = flow_of(request.user, flow_id_or_name)
        node_ids = {n.get("id") for n in (flow.data or {}).get("nodes", []) if isinstance(n, dict)}
        if params["output_component"] and params["output_component"] not in node_ids:
            raise RequestValidationError.single(
                ["body", "output_component"], f"The flow has no node {params['output_component']!r}.", "unknown_node"
            )
        if stream:  # an open stream holds a web thread: it takes a slot first (429 when none is free)
            with StreamSlot(request.user) as slot:
                run = self._create(request, flow, params)
                flow_run_start_here(run=run)
                source = RunStreamSource(
                    run_id=run.id,
                    flow=flow,
                    input_value=params["input_value"],
                    output_type=params["output_type"],
                    output_component=params["output_component"],
                    session_id=params["session_id"] or str(flow.id),
                    render=lambda answer: RunResponseSerializer(answer).data,
                )
                return slot.response(event_stream(source))
        run = self._create(request, flow, params)
        session_id = params["session_id"] or str(flow.id)
        run = flow_run_execute_sync(run=run, timeout=settings.LANGRUN_SYNC_RUN_TIMEOUT)
        status_url = run_status_url(request, run.id)
        if run.status not in FlowRun.TERMINAL:
            accepted = {"message": "The run is still in progress", "status": "in progress", "run_id": run.id, "status_url": status_url}
            return Response(RunAcceptedSerializer(accepted).data, status=status.HTTP_202_ACCEPTED, headers={"Location": status_url})
        run.flow = flow
        if run.status != FlowRun.Status.SUCCEEDED:
            # Langflow answers a failed run with a 500 whose detail is its error body; the run is in the ledger.
            failed = {"detail": run_error_detail(run), "run_id": run.id, "status": run.status, "status_url": status_url}
            return Response(
                RunFailedSerializer(failed).data, status=status.HTTP_500_INTERNAL_SERVER_ERROR, headers={"Location": status_url}
            )
        answer = run_response(
            run,
            inputs={"input_value": params["input_value"]},
            output_type=params["output_type"],
            output_component=params["output_component"],
            session_id=session_id,
        )
        return Response(RunResponseSerializer(answer).data)

    @staticmethod
    def _create(request, flow, params) -> FlowRun:
        try:
            return flow_run_create(
                flow=flow,
                user=request.user,
                trigger=FlowRun.Trigger.API,
                payload=flow_run_input_payload(input_value=params["input_value"]),
                body=params["input_value"] or "",
                content_type="text/plain",
                tweaks=params["tweaks"],
                request_variables=variables_from_headers(meta=request.META),
            )
        except GraphValidationError as exc:
            raise _tweak_errors(exc, flow.data) from exc
