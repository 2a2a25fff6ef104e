import uuid
from contextlib import contextmanager

from django.db.models import Prefetch
from rest_framework import generics, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from flows import services
from flows.engine import GraphValidationError
from flows.models import Flow, FlowRun, NodeResult
from flows.serializers import FlowRunSerializer, FlowSerializer, TaskStatusSerializer
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
