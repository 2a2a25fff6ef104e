"""Bulk replay (`POST /api/v1/runs/replay`) and the background jobs it starts (`/api/v1/jobs/`)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from flows.control_serializers import BulkReplayCountSerializer, BulkReplaySerializer, ReplayJobSerializer
from flows.models import Flow, ReplayJob
from flows.services.replays import replay_job_create, replay_runs_count
from langrun.parsers import JSONParser
from langrun.schema import error, validation_error
from langrun.views import UuidLookupMixin


class BulkReplayView(generics.GenericAPIView):
    """Replay every run of yours that matches the filters, in the background."""

    serializer_class = BulkReplaySerializer
    parser_classes = [JSONParser]
    pagination_class = None
    filter_backends = []

    @extend_schema(
        summary="Replay many runs",
        operation_id="v1_runs_bulk_replay",
        description="The run list's filters pick the runs (at least one filter). `dry_run` answers how many match; "
        "otherwise a background job creates the replays in batches at a bounded rate (LANGRUN_REPLAY_RATE), "
        "and the answer is `202` with the job, whose progress `GET /api/v1/jobs/{id}` shows.",
        responses={
            200: OpenApiResponse(BulkReplayCountSerializer, description="A dry run: how many runs match."),
            202: OpenApiResponse(ReplayJobSerializer, description="The job started."),
            404: error("No flow of yours with the id in `flow`."),
            422: validation_error("No filter, or a filter that is not valid (named in `loc`)."),
        },
    )
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        options = dict(serializer.validated_data)
        dry_run, current_version = options.pop("dry_run"), options.pop("current_version")
        if "flow" in options and not Flow.objects.filter(pk=options["flow"], user=request.user).exists():
            raise NotFound("Flow not found")
        if dry_run:
            matched = replay_runs_count(user=request.user, filters=options)
            return Response(BulkReplayCountSerializer({"matched": matched, "dry_run": True}).data)
        job = replay_job_create(user=request.user, filters=options, current_version=current_version)
        data = ReplayJobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["status_url"]})


@extend_schema_view(
    list=extend_schema(summary="List your background jobs", description="Newest first."),
    retrieve=extend_schema(summary="A background job's progress"),
)
class JobViewSet(UuidLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Background jobs (bulk replays) and their progress. Another user's job is a 404."""

    serializer_class = ReplayJobSerializer
    queryset = ReplayJob.objects.none()  # for the schema; get_queryset scopes to the owner
    not_found = "Job not found"

    def get_queryset(self):
        return ReplayJob.objects.filter(user=self.request.user).order_by("-created_at")
