import json
import uuid
from contextlib import contextmanager

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response

from flows import services
from flows.engine import GraphValidationError
from flows.models import Flow, FlowRun, NodeResult, Variable
from flows.serializers import (
    ComponentSerializer,
    FlowExportSerializer,
    FlowRunSerializer,
    FlowSerializer,
    TaskStatusSerializer,
    VariableSerializer,
)
from langrun.exceptions import RequestValidationError


@contextmanager
def flow_errors_as_422():
    """Service errors about a flow's content become located 422 errors."""
    try:
        yield
    except GraphValidationError as exc:
        raise RequestValidationError(
            [{"loc": ["body", "data", *issue.loc], "msg": issue.msg, "type": issue.type} for issue in exc.issues]
        ) from exc
    except services.EndpointNameTaken as exc:
        raise RequestValidationError.single(
            ["body", "endpoint_name"], f"You already have a flow with endpoint name {exc}.", "unique"
        ) from exc


class FlowViewSet(viewsets.ModelViewSet):
    """Your flows. Another user's flow is a 404."""

    serializer_class = FlowSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return Flow.objects.filter(user=self.request.user)

    def perform_create(self, serializer):
        with flow_errors_as_422():
            serializer.instance = services.flow_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        with flow_errors_as_422():
            serializer.instance = services.flow_update(flow=serializer.instance, author=self.request.user, **serializer.validated_data)


def _runs_of(user):
    results = Prefetch("node_results", queryset=NodeResult.objects.order_by("order"))
    return FlowRun.objects.filter(flow__user=user).select_related("version").prefetch_related(results)


class FlowRunDetailView(generics.RetrieveAPIView):
    """A run's status, outputs, error and per-node results. Another user's run is a 404."""

    serializer_class = FlowRunSerializer

    def get_queryset(self):
        return _runs_of(self.request.user)


class TaskStatusView(generics.GenericAPIView):
    """Langflow's Get Task Status for a run: `{"status", "result"}`; the task id is the run id."""

    serializer_class = TaskStatusSerializer

    def get(self, request, task_id: str):
        try:
            run = FlowRun.objects.filter(flow__user=request.user, pk=uuid.UUID(task_id)).first()
        except ValueError:
            run = None
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

    @extend_schema(responses=ComponentSerializer(many=True))
    def get(self, request):
        from flows.engine import registry

        return Response(ComponentSerializer(registry.catalogue(), many=True).data)


class VariableViewSet(viewsets.ModelViewSet):
    """Your variables. Credential values are never returned (masked); another user's variable is a 404."""

    serializer_class = VariableSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return Variable.objects.filter(user=self.request.user)

    @contextmanager
    def _name_errors(self):
        try:
            yield
        except services.VariableNameTaken as exc:
            raise RequestValidationError.single(["body", "name"], f"You already have a variable named {exc}.", "unique") from exc
        except services.VariableUndecryptable as exc:
            raise RequestValidationError.single(["body", "value"], str(exc), "variable_key") from exc

    def perform_create(self, serializer):
        with self._name_errors():
            serializer.instance = services.variable_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        with self._name_errors():
            serializer.instance = services.variable_update(variable=serializer.instance, **serializer.validated_data)


class FlowUploadView(generics.GenericAPIView):
    """Import flows from a Langflow export (or a langrun export): a multipart `file`, or the JSON as the body.

    Answers 201 with the created flows; a component without an equivalent is a 422 listing every such node.
    """

    serializer_class = FlowSerializer
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        request={
            "application/json": OpenApiTypes.OBJECT,
            "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
        },
        responses={201: FlowSerializer(many=True)},
    )
    def post(self, request):
        upload = request.FILES.get("file") if hasattr(request, "FILES") else None
        if upload is not None:
            try:
                document = json.loads(upload.read().decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise RequestValidationError.single(["body", "file"], f"The file is not JSON: {exc}", "json_invalid") from exc
        else:
            document = request.data
        if not isinstance(document, dict) or not document:
            raise RequestValidationError.single(["body"], "Send a flow export: a JSON object, or a multipart 'file'.", "missing")
        try:
            flows = services.flow_import(user=request.user, document=document)
        except GraphValidationError as exc:
            raise RequestValidationError([{"loc": ["body", *i.loc], "msg": i.msg, "type": i.type} for i in exc.issues]) from exc
        return Response(FlowSerializer(flows, many=True, context={"request": request}).data, status=201)


class FlowExportView(generics.GenericAPIView):
    """The flow in langrun's native JSON (what the upload endpoint takes back)."""

    serializer_class = FlowExportSerializer

    def get(self, request, pk: str):
        try:
            flow = Flow.objects.filter(user=request.user, pk=uuid.UUID(pk)).first()
        except ValueError:
            flow = None
        if flow is None:
            raise NotFound("Flow not found")
        return Response(FlowExportSerializer(services.flow_export(flow=flow)).data)
