"""The versions of a flow: list, one version, and restore (`/api/v1/flows/{id}/versions/...`)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.response import Response

from flows.models import Flow, FlowVersion
from flows.serializers import FlowVersionListSerializer, FlowVersionSerializer
from flows.services.flows import flow_version_restore
from flows.views import flow_errors_as_422
from langrun.schema import error, validation_error


class _FlowVersionsMixin:
    def get_flow(self) -> Flow:
        return get_object_or_404(Flow, pk=self.kwargs["flow_id"], user=self.request.user)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no flow_id
            return FlowVersion.objects.none()
        return FlowVersion.objects.filter(flow=self.get_flow()).select_related("author").order_by("-number")


class FlowVersionListView(_FlowVersionsMixin, generics.ListAPIView):
    """Your flow's versions, newest first. Another user's flow is a 404."""

    serializer_class = FlowVersionListSerializer


class FlowVersionDetailView(_FlowVersionsMixin, generics.RetrieveAPIView):
    """One version of your flow, with its graph."""

    serializer_class = FlowVersionSerializer
    lookup_field = "number"


class FlowVersionRestoreView(_FlowVersionsMixin, generics.GenericAPIView):
    """Make this version's graph the flow's graph again; answers the flow's new current version.

    Restoring the graph the flow already has records no new version.
    """

    serializer_class = FlowVersionSerializer

    @extend_schema(
        summary="Restore a version",
        request=None,
        responses={
            200: FlowVersionSerializer,
            404: error("No flow of yours with this id, or it has no such version."),
            422: validation_error("The version's graph is no longer valid here (e.g. a component it uses is gone)."),
        },
    )
    def post(self, request, flow_id, number: int):
        flow = self.get_flow()
        get_object_or_404(FlowVersion, flow=flow, number=number)
        with flow_errors_as_422():
            version = flow_version_restore(flow=flow, number=number, author=request.user)
        return Response(FlowVersionSerializer(version).data)
