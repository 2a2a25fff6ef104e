from django.conf import settings
from rest_framework import serializers

from flows.models import Flow, FlowRun, FlowVersion, NodeResult, Variable


class FlowSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    webhook = serializers.BooleanField(source="has_webhook", read_only=True, help_text="True when the flow has a Webhook node.")
    webhook_url = serializers.SerializerMethodField()
    data = serializers.JSONField(help_text="The graph in langrun's native format: {'nodes': [...], 'edges': [...]}.")
    timeout = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=settings.LANGRUN_RUN_TIMEOUT,
        help_text="Seconds a run may take (default LANGRUN_FLOW_TIMEOUT).",
    )

    max_attempts = serializers.IntegerField(
        required=False, min_value=1, max_value=20, help_text="Attempts a run may take when it fails with a retryable error (default 1)."
    )
    max_concurrent_runs = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="Runs of this flow executing at once; more wait in the queue (null: no limit).",
    )
    signed = serializers.SerializerMethodField(help_text="True when webhook requests must be signed (the flow has a signing secret).")

    class Meta:
        model = Flow
        fields = [
            "id",
            "name",
            "description",
            "data",
            "endpoint_name",
            "timeout",
            "user_id",
            "created_at",
            "updated_at",
            "webhook",
            "webhook_url",
            "max_attempts",
            "max_concurrent_runs",
            "signed",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness per owner is checked by the service, which knows the owner.
        validators = []

    def get_signed(self, flow: Flow) -> bool:
        return bool(flow.signing_secret)

    def get_webhook_url(self, flow: Flow) -> str:
        path = f"/api/v1/webhook/{flow.endpoint_name or flow.id}"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class NodeResultSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="node_id")
    type = serializers.CharField(source="component_type")

    class Meta:
        model = NodeResult
        fields = ["id", "type", "status", "output", "error", "duration_ms", "traceback"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if not (request is not None and getattr(request.user, "is_staff", False)):
            data.pop("traceback", None)  # where the code failed is for staff only
        return data


class FlowRunSerializer(serializers.ModelSerializer):
    flow_id = serializers.UUIDField(read_only=True)
    nodes = NodeResultSerializer(source="node_results", many=True, read_only=True)
    version = serializers.IntegerField(
        source="version.number",
        read_only=True,
        allow_null=True,
        help_text="The flow version this run executes (see /flows/{id}/versions/).",
    )

    class Meta:
        model = FlowRun
        fields = [
            "id",
            "flow_id",
            "version",
            "status",
            "trigger",
            "attempts",
            "outputs",
            "error",
            "received_at",
            "started_at",
            "finished_at",
            "nodes",
        ]
        read_only_fields = fields


class TaskStatusSerializer(serializers.Serializer):
    """Langflow's Get Task Status shape."""

    status = serializers.CharField()
    result = serializers.JSONField(allow_null=True)


CREDENTIAL_MASK = "********"


class VariableSerializer(serializers.ModelSerializer):
    """A variable; a credential's value is write-only (always shown masked)."""

    value = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=65536)

    class Meta:
        model = Variable
        fields = ["id", "name", "kind", "value", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators = []  # uniqueness per owner is checked by the service

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.kind == Variable.Kind.CREDENTIAL:
            data["value"] = CREDENTIAL_MASK
        return data


class FlowExportSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    endpoint_name = serializers.CharField(allow_null=True)
    timeout = serializers.IntegerField(allow_null=True)
    data = serializers.JSONField()


class ComponentSerializer(serializers.Serializer):
    """A component type: its name, what it does, and its declared inputs and outputs."""

    name = serializers.CharField()
    description = serializers.CharField()
    inputs = serializers.ListField(child=serializers.DictField())
    outputs = serializers.ListField(child=serializers.DictField())
    extra_inputs = serializers.DictField(allow_null=True)


class FlowVersionSerializer(serializers.ModelSerializer):
    """One version of a flow's graph; the list leaves `data` out."""

    flow_id = serializers.UUIDField(read_only=True)
    author = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = FlowVersion
        fields = ["number", "flow_id", "author", "message", "created_at", "data"]
        read_only_fields = fields


class FlowVersionListSerializer(FlowVersionSerializer):
    class Meta(FlowVersionSerializer.Meta):
        fields = ["number", "flow_id", "author", "message", "created_at"]
        read_only_fields = fields
