from rest_framework import serializers

from flows.models import Flow, FlowRun, FlowVersion, NodeResult


class FlowSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    webhook = serializers.BooleanField(source="has_webhook", read_only=True, help_text="True when the flow has a Webhook node.")
    webhook_url = serializers.SerializerMethodField()
    data = serializers.JSONField(help_text="The graph in langrun's native format: {'nodes': [...], 'edges': [...]}.")

    class Meta:
        model = Flow
        fields = ["id", "name", "description", "data", "endpoint_name", "user_id", "created_at", "updated_at", "webhook", "webhook_url"]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness per owner is checked by the service, which knows the owner.
        validators = []

    def get_webhook_url(self, flow: Flow) -> str:
        path = f"/api/v1/webhook/{flow.endpoint_name or flow.id}"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class NodeResultSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="node_id")
    type = serializers.CharField(source="component_type")

    class Meta:
        model = NodeResult
        fields = ["id", "type", "status", "output", "error", "duration_ms"]


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
