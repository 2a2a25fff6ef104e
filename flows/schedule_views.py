"""Schedules of your flows (`/api/v1/schedules/`): a flow running on a clock."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.exceptions import NotFound

from flows.control_serializers import FlowScheduleSerializer
from flows.filters import FlowScheduleFilter
from flows.models import Flow, FlowSchedule
from flows.services.schedules import flow_schedule_create, flow_schedule_delete, flow_schedule_update
from langrun.schema import error, validation_error
from langrun.views import UuidLookupMixin

_BAD_INPUT = validation_error("Neither or both of cron and interval_minutes, a malformed cron expression, or a bad field.")


@extend_schema_view(
    list=extend_schema(summary="List your schedules"),
    create=extend_schema(
        summary="Run a flow on a schedule",
        responses={201: FlowScheduleSerializer, 404: error("No flow of yours with this id."), 422: _BAD_INPUT},
    ),
    partial_update=extend_schema(summary="Change a schedule", responses={200: FlowScheduleSerializer, 422: _BAD_INPUT}),
)
class FlowScheduleViewSet(UuidLookupMixin, viewsets.ModelViewSet):
    """Your flows' schedules; each firing records a run with trigger `schedule`. Another user's schedule is a 404."""

    serializer_class = FlowScheduleSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    queryset = FlowSchedule.objects.none()  # for the schema; get_queryset scopes to the owner
    not_found = "Schedule not found"

    filterset_class = FlowScheduleFilter

    def get_queryset(self):
        return FlowSchedule.objects.filter(flow__user=self.request.user).select_related("q_schedule")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        flow = Flow.objects.filter(pk=data.pop("flow_id"), user=self.request.user).first()
        if flow is None:
            raise NotFound("Flow not found")
        serializer.instance = flow_schedule_create(flow=flow, **data)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        data.pop("flow_id", None)  # a schedule stays with its flow
        serializer.instance = flow_schedule_update(schedule=serializer.instance, **data)

    def perform_destroy(self, instance):
        flow_schedule_delete(schedule=instance)
