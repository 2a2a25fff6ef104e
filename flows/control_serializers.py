"""Serializers of run control: bulk replay and its jobs, schedules."""

from rest_framework import serializers

from flows.models import FlowRun, FlowSchedule, ReplayJob
from langrun.routers import route_url
from langrun.serializers import StrictCharField


class BulkReplaySerializer(serializers.Serializer):
    """Which runs to replay (the run list's filters; at least one), how, and whether only to count them."""

    flow = serializers.UUIDField(required=False, help_text="Only runs of this flow.")
    status = serializers.ChoiceField(choices=FlowRun.Status.choices, required=False)
    trigger = serializers.ChoiceField(choices=FlowRun.Trigger.choices, required=False)
    received_after = serializers.DateTimeField(required=False, help_text="ISO 8601, inclusive.")
    received_before = serializers.DateTimeField(required=False, help_text="ISO 8601, exclusive.")
    current_version = serializers.BooleanField(default=False, help_text="Run the flow's current graph, not each run's own version.")
    dry_run = serializers.BooleanField(default=False, help_text="Only count the runs that match.")

    FILTERS = ("flow", "status", "trigger", "received_after", "received_before")

    def validate(self, attrs):
        if not any(name in attrs for name in self.FILTERS):
            raise serializers.ValidationError(f"Give at least one filter: {', '.join(self.FILTERS)}.", code="missing")
        return attrs


class BulkReplayCountSerializer(serializers.Serializer):
    matched = serializers.IntegerField(help_text="Runs a bulk replay with these filters would replay now.")
    dry_run = serializers.BooleanField()


class ReplayJobSerializer(serializers.ModelSerializer):
    """A background job's progress: matched runs, replays created, runs that could not be replayed (and why)."""

    kind = serializers.SerializerMethodField()
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = ReplayJob
        fields = [
            "id",
            "kind",
            "status",
            "filters",
            "current_version",
            "matched",
            "created",
            "failed",
            "errors",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "status_url",
        ]
        read_only_fields = fields

    def get_kind(self, job) -> str:
        return "replay"

    def get_status_url(self, job) -> str:
        return route_url(self.context.get("request"), "job-detail", pk=job.pk)


# --- Schedules ----------------------------------------------------------------------------------------


class FlowScheduleSerializer(serializers.ModelSerializer):
    """A flow on a clock: exactly one of `cron` (UTC) and `interval_minutes`, and the payload each run gets."""

    flow = serializers.UUIDField(source="flow_id", help_text="The flow to run (yours); cannot change afterwards.")
    name = StrictCharField(required=False, allow_blank=True, max_length=200)
    cron = StrictCharField(
        required=False, allow_blank=True, max_length=100, help_text="A cron expression in UTC, e.g. `0 9 * * 1-5`; or use interval_minutes."
    )
    interval_minutes = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=527040)
    payload = serializers.DictField(required=False, help_text="The JSON object the Webhook node receives on each run.")
    next_run_at = serializers.DateTimeField(source="q_schedule.next_run", read_only=True, allow_null=True)

    class Meta:
        model = FlowSchedule
        fields = ["id", "flow", "name", "cron", "interval_minutes", "payload", "next_run_at", "created_at", "updated_at"]
        read_only_fields = ["id", "next_run_at", "created_at", "updated_at"]
