"""Serializers of Langflow's run API (`/api/v1/run`, its answers) and of the vertex-builds monitor."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from flows.models import FlowRun, NodeResult
from flows.serializers import RUN_EXAMPLE
from langrun.serializers import StrictCharField


class SimplifiedRunRequestSerializer(serializers.Serializer):
    input_value = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Becomes the Webhook node's payload: its JSON value when it parses as JSON, else {'payload': text}; "
        "absent or null gives {}.",
    )
    input_type = serializers.ChoiceField(choices=["chat", "text", "any"], default="chat")
    output_type = serializers.ChoiceField(
        choices=["chat", "text", "any", "debug"],
        default="chat",
        help_text="chat, text and any report the flow's Output nodes; debug reports every node.",
    )
    output_component = StrictCharField(
        required=False, allow_blank=True, default="", help_text="Report only this node (by id); overrides output_type."
    )
    tweaks = serializers.DictField(
        child=serializers.DictField(),
        required=False,
        allow_null=True,
        default=None,
        help_text="Per-node parameter overrides for this run only: {node_id: {param: value}}.",
    )
    session_id = StrictCharField(required=False, allow_null=True, allow_blank=True, default=None, max_length=200)


class OutputValueSerializer(serializers.Serializer):
    message = serializers.JSONField(allow_null=True)
    type = serializers.CharField()


class ResultDataSerializer(serializers.Serializer):
    results = serializers.JSONField(
        allow_null=True,
        help_text="The node's outputs by name; for an Output node whose value is text, also Langflow's chat `message` "
        "(text, sender, sender_name, session_id, timestamp, …), which Langflow clients read as results.message.text.",
    )
    outputs = serializers.DictField(
        child=OutputValueSerializer(),
        help_text="Each output as {message, type}: type `text` for a string, `object` otherwise; plus `message` for a text Output.",
    )
    artifacts = serializers.DictField()
    logs = serializers.DictField()
    messages = serializers.ListField(child=serializers.DictField())
    timedelta = serializers.FloatField(allow_null=True, help_text="The node's duration in seconds.")
    duration = serializers.CharField(allow_null=True)
    component_id = serializers.CharField()
    component_display_name = serializers.CharField()
    used_frozen_result = serializers.BooleanField()
    status = serializers.ChoiceField(choices=NodeResult.Status.choices)
    error = serializers.CharField(allow_blank=True)


class RunOutputsSerializer(serializers.Serializer):
    inputs = serializers.DictField()
    outputs = ResultDataSerializer(many=True)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A finished synchronous run",
            response_only=True,
            value={
                "session_id": "my-session",
                "outputs": [
                    {
                        "inputs": {"input_value": '{"name": "Ada"}'},
                        "outputs": [
                            {
                                "results": {
                                    "value": "Hello Ada!",
                                    "message": {
                                        "text": "Hello Ada!",
                                        "sender": "Machine",
                                        "sender_name": "AI",
                                        "session_id": "my-session",
                                        "timestamp": "2026-11-28 12:05:00.104000 UTC",
                                        "component_id": "out",
                                    },
                                },
                                "outputs": {
                                    "value": {"message": "Hello Ada!", "type": "text"},
                                    "message": {"message": "Hello Ada!", "type": "text"},
                                },
                                "component_id": "out",
                                "component_display_name": "Output",
                                "status": "succeeded",
                                "error": "",
                            }
                        ],
                    }
                ],
                "run_id": RUN_EXAMPLE["id"],
                "status": "succeeded",
                "error": "",
            },
        )
    ]
)
class RunResponseSerializer(serializers.Serializer):
    """Langflow's RunResponse, plus the run's id, status and error."""

    session_id = StrictCharField()
    outputs = RunOutputsSerializer(many=True)
    run_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=FlowRun.Status.choices)
    error = serializers.CharField(allow_blank=True)


class RunFailedSerializer(serializers.Serializer):
    """A failed `/run`: Langflow's 500 body (its error body as JSON text in `detail`), plus the recorded run."""

    detail = serializers.CharField(help_text='JSON text: {"message", "traceback", "description", "code", "suggestion", "source"}.')
    run_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=FlowRun.Status.choices)
    status_url = serializers.URLField()


class RunAcceptedSerializer(serializers.Serializer):
    message = serializers.CharField()
    status = serializers.CharField()
    run_id = serializers.UUIDField()
    status_url = serializers.URLField()


# --- Monitor (Langflow's vertex builds) -------------------------------------------------------------------


class VertexBuildSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The node id.")
    valid = serializers.BooleanField(help_text="True when the node succeeded.")
    timestamp = serializers.DateTimeField()
    flow_id = serializers.UUIDField()
    params = serializers.CharField(allow_null=True, help_text="The node's parameters for that run, as JSON text.")
    data = serializers.DictField(help_text="results, outputs, status, message (the error) and duration_ms.")
    artifacts = serializers.DictField()
    build_id = serializers.UUIDField(help_text="The run's id.")


class VertexBuildsSerializer(serializers.Serializer):
    vertex_builds = serializers.DictField(child=VertexBuildSerializer(many=True))


class MonitorBuildsQuerySerializer(serializers.Serializer):
    flow_id = serializers.UUIDField()


# --- Bulk replay and its jobs ----------------------------------------------------------------------
