import functools
import uuid
from contextlib import contextmanager

from django.conf import settings
from django.db.models import BooleanField, ExpressionWrapper, OuterRef, Prefetch, Q, Subquery
from django.urls import get_script_prefix, get_urlconf, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from flows.engine import GraphValidationError
from flows.filters import FlowFilter, FlowRunFilter
from flows.langflow_serializers import MonitorBuildsQuerySerializer, VertexBuildsSerializer
from flows.models import Flow, FlowRun, NodeResult, Variable
from flows.serializers import (
    ComponentSerializer,
    FlowExportSerializer,
    FlowResumedSerializer,
    FlowRunListSerializer,
    FlowRunSerializer,
    FlowSerializer,
    TaskStatusSerializer,
    VariableSerializer,
)
from flows.services.flows import flow_create, flow_delete, flow_update
from flows.services.imports import flow_export, flow_import
from flows.services.monitor import flow_vertex_builds
from flows.services.pause import flow_pause, flow_resume
from flows.services.runs import flow_run_cancel, flow_run_replay
from flows.services.variables import variable_create, variable_update
from langrun.exceptions import PayloadTooLarge, RequestValidationError
from langrun.filters import FilterBackend, OrderingFilter
from langrun.pagination import SizeBoundedPagination
from langrun.parsers import MULTIPART_OVERHEAD, JSONParser, MultiPartParser, json_document_loads
from langrun.schema import error, validation_error


@contextmanager
def flow_errors_as_422():
    """A flow's graph errors become located 422 errors (the services' domain errors are rendered by the API's handler)."""
    try:
        yield
    except GraphValidationError as exc:
        raise RequestValidationError(
            [{"loc": ["body", "data", *issue.loc], "msg": issue.msg, "type": issue.type} for issue in exc.issues]
        ) from exc


def _latest_runs(field: str):
    return Subquery(FlowRun.objects.filter(flow=OuterRef("pk")).order_by("-received_at").values(field)[:1])


class RunPagination(SizeBoundedPagination):
    """A page of runs holds at most as much output as one run may have (LANGRUN_MAX_RUN_OUTPUT_BYTES)."""

    sized_field = "outputs"


class FlowPagination(SizeBoundedPagination):
    """A page of flows holds at most that much of their graphs."""

    sized_field = "data"


class FlowViewSet(viewsets.ModelViewSet):
    """Your flows. Another user's flow is a 404."""

    serializer_class = FlowSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filter_backends = [FilterBackend, OrderingFilter]
    filterset_class = FlowFilter
    ordering_fields = ["name", "updated_at", "created_at"]
    pagination_class = FlowPagination

    def get_queryset(self):
        return Flow.objects.filter(user=self.request.user).annotate(
            latest_run_status=_latest_runs("status"), latest_run_at=_latest_runs("received_at")
        )

    def perform_create(self, serializer):
        with flow_errors_as_422():
            serializer.instance = flow_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        with flow_errors_as_422():
            serializer.instance = flow_update(flow=serializer.instance, author=self.request.user, **serializer.validated_data)

    def perform_destroy(self, instance):
        flow_delete(flow=instance)

    @extend_schema(
        summary="Pause a flow",
        description="Its webhooks are still accepted (`202`) and recorded, but its runs wait (`waiting_for: flow_paused`) "
        "until it resumes; runs already executing finish. Pausing a paused flow changes nothing.",
        request=None,
        responses={200: FlowSerializer, 404: error("No flow of yours with this id.")},
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        flow = flow_pause(flow=self.get_object())
        return Response(self.get_serializer(flow).data)

    @extend_schema(
        summary="Resume a paused flow",
        description="Its held runs are released in the order they were received (`released`: how many in this request; "
        "a background task releases the rest of a long backlog).",
        request=None,
        responses={200: FlowResumedSerializer, 404: error("No flow of yours with this id.")},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        flow = self.get_object()
        flow.released = flow_resume(flow=flow)
        return Response(FlowResumedSerializer(flow, context=self.get_serializer_context()).data)


def _runs_of(user):
    paused = ExpressionWrapper(Q(flow__paused_at__isnull=False), output_field=BooleanField())
    limited = ExpressionWrapper(
        Q(flow__max_concurrent_runs__isnull=False) | Q(flow__throttle_limit__isnull=False), output_field=BooleanField()
    )
    return FlowRun.objects.filter(flow__user=user).select_related("version").annotate(flow_paused=paused, flow_limited=limited)


def _with_nodes(queryset):
    return queryset.prefetch_related(Prefetch("node_results", queryset=NodeResult.objects.order_by("order")))


_RUN_ID_SLOT = "00000000-0000-0000-0000-000000000000"


@functools.lru_cache(maxsize=16)
def _run_path_around_id(script_prefix: str, urlconf: str) -> tuple[str, str]:
    """The run detail path before and after the run id, reversed once per URL prefix and URL conf."""
    head, _, tail = reverse("flowrun-detail", kwargs={"pk": _RUN_ID_SLOT}, urlconf=urlconf).partition(_RUN_ID_SLOT)
    return head, tail


def run_status_url(request, run_id) -> str:
    """The absolute URL of a run (`status_url`, `Location`); every webhook answers with one, so the path
    is reversed once, not per request."""
    head, tail = _run_path_around_id(get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
    return request.build_absolute_uri(f"{head}{run_id}{tail}")


@extend_schema_view(
    list=extend_schema(summary="List runs", description="Your flows' runs, newest first."),
    retrieve=extend_schema(summary="A run with its node results"),
)
class FlowRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs of your flows: status, outputs, error and per-node results. Another user's run is a 404."""

    filterset_class = FlowRunFilter
    queryset = FlowRun.objects.none()  # for the schema; get_queryset scopes to the owner
    pagination_class = RunPagination

    def get_queryset(self):
        runs = _runs_of(self.request.user).order_by("-received_at")
        return runs if self.action == "list" else _with_nodes(runs)

    def get_serializer_class(self):
        return FlowRunListSerializer if self.action == "list" else FlowRunSerializer

    @extend_schema(
        summary="Replay a run",
        description="A new run of the same flow with the same payload and tweaks (trigger `replay`), linked to this one.",
        request=None,
        responses={
            201: FlowRunSerializer,
            409: error("Retention deleted the run's payload: it cannot be replayed."),
            422: validation_error("The run's tweaks no longer fit its graph, e.g. they name a variable deleted since."),
        },
    )
    @action(detail=True, methods=["post"])
    def replay(self, request, pk=None):
        original = self.get_object()
        run = flow_run_replay(run=original, user=request.user)
        run = _with_nodes(FlowRun.objects.filter(pk=run.pk)).get()
        return Response(FlowRunSerializer(run).data, status=status.HTTP_201_CREATED, headers={"Location": run_status_url(request, run.id)})

    @extend_schema(
        summary="Cancel a queued or running run",
        request=None,
        responses={200: FlowRunSerializer, 409: error("The run has finished already.")},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = flow_run_cancel(run=self.get_object())
        return Response(FlowRunSerializer(_with_nodes(FlowRun.objects.filter(pk=run.pk)).get()).data)


def _by_id(queryset, raw_id: str):
    """The object of `queryset` (already scoped to its owner) whose UUID is `raw_id`; None when none is, or it is no UUID."""
    try:
        return queryset.filter(pk=uuid.UUID(raw_id)).first()
    except ValueError:
        return None


class TaskStatusView(generics.GenericAPIView):
    """Langflow's Get Task Status for a run: `{"status", "result"}`; the task id is the run id."""

    serializer_class = TaskStatusSerializer

    def get(self, request, task_id: str):
        run = _by_id(FlowRun.objects.filter(flow__user=request.user), task_id)
        if run is None:
            raise NotFound("Task not found")
        if run.status == FlowRun.Status.SUCCEEDED:
            result = run.outputs
        elif run.status == FlowRun.Status.FAILED:
            result = {"error": run.error}
        else:
            result = None
        return Response(TaskStatusSerializer({"status": run.status, "result": result}).data)


# --- Components, variables, import and export ---------------------------------------------


class ComponentListView(generics.GenericAPIView):
    """The component catalogue: every type a flow may use, with its inputs and outputs."""

    serializer_class = ComponentSerializer
    pagination_class = None
    filter_backends = []

    @extend_schema(summary="The component catalogue", responses=ComponentSerializer(many=True))
    def get(self, request):
        from flows.engine import registry

        return Response(ComponentSerializer(registry.catalogue(), many=True).data)


class VariableViewSet(viewsets.ModelViewSet):
    """Your variables. Credential values are never returned (masked); another user's variable is a 404."""

    serializer_class = VariableSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return Variable.objects.filter(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = variable_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = variable_update(variable=serializer.instance, **serializer.validated_data)


class FlowUploadView(generics.GenericAPIView):
    """Import flows from a Langflow export (or a langrun export): a multipart `file`, or the JSON as the body.

    Answers 201 with the created flows; a component without an equivalent is a 422 listing every such node.
    """

    serializer_class = FlowSerializer
    parser_classes = [JSONParser, MultiPartParser]
    pagination_class = None
    filter_backends = []

    def max_body_bytes(self) -> int:  # the multipart parser refuses a longer body before reading it
        return settings.LANGRUN_MAX_IMPORT_BYTES + MULTIPART_OVERHEAD

    @extend_schema(
        summary="Import flows from an export",
        request={
            "application/json": OpenApiTypes.OBJECT,
            "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
        },
        responses={
            201: OpenApiResponse(FlowSerializer(many=True), description="The flows created, in the export's order."),
            422: validation_error("Not a flow export, a file that is not JSON, or nodes without a native equivalent (each listed)."),
        },
    )
    def post(self, request):
        upload = request.FILES.get("file") if hasattr(request, "FILES") else None
        if upload is not None:
            if upload.size > settings.LANGRUN_MAX_IMPORT_BYTES:  # read whole below, so refused before reading
                raise PayloadTooLarge(f"The file is larger than {settings.LANGRUN_MAX_IMPORT_BYTES} bytes (LANGRUN_MAX_IMPORT_BYTES).")
            try:
                document = json_document_loads(upload.read().decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise RequestValidationError.single(["body", "file"], f"The file is not JSON: {exc}", "json_invalid") from exc
        else:
            document = request.data
        if not isinstance(document, dict) or not document:
            raise RequestValidationError.single(["body"], "Send a flow export: a JSON object, or a multipart 'file'.", "missing")
        try:
            flows = flow_import(user=request.user, document=document)
        except GraphValidationError as exc:
            raise RequestValidationError([{"loc": ["body", *i.loc], "msg": i.msg, "type": i.type} for i in exc.issues]) from exc
        return Response(FlowSerializer(flows, many=True, context={"request": request}).data, status=201)


class FlowExportView(generics.GenericAPIView):
    """The flow in langrun's native JSON (what the upload endpoint takes back)."""

    serializer_class = FlowExportSerializer
    filter_backends = []

    @extend_schema(
        summary="Export a flow",
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="The flow's id.")],
        responses={200: FlowExportSerializer, 404: error("No flow of yours with this id.")},
    )
    def get(self, request, pk: str):
        flow = _by_id(Flow.objects.filter(user=request.user), pk)
        if flow is None:
            raise NotFound("Flow not found")
        return Response(FlowExportSerializer(flow_export(flow=flow)).data)


def flow_of(user, identifier: str) -> Flow:
    """The caller's flow by id, or else by endpoint name."""
    flow = _by_id(Flow.objects.filter(user=user), identifier)
    if flow is None:
        flow = Flow.objects.filter(user=user, endpoint_name=identifier).first()
    if flow is None:
        raise NotFound(f"Flow identifier {identifier} not found")
    return flow


class MonitorBuildsView(APIView):
    """Langflow's vertex builds for one of your flows, from the node results of its latest 100 finished runs."""

    @extend_schema(
        summary="Vertex builds of a flow",
        parameters=[MonitorBuildsQuerySerializer],
        responses={
            200: VertexBuildsSerializer,
            404: error("The flow is not one of yours."),
            422: validation_error("flow_id is missing or not a UUID."),
        },
    )
    def get(self, request):
        query = MonitorBuildsQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise RequestValidationError(
                [
                    {"loc": ["query", name], "msg": str(message), "type": "missing" if message.code == "required" else "uuid_parsing"}
                    for name, messages in query.errors.items()
                    for message in messages
                ]
            )
        flow = Flow.objects.filter(user=request.user, pk=query.validated_data["flow_id"]).first()
        if flow is None:
            raise NotFound("Flow not found")
        return Response(VertexBuildsSerializer({"vertex_builds": flow_vertex_builds(flow=flow)}).data)
