from datetime import datetime

from django.conf import settings
from django.db import models
from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from flows.examples import GREETING_GRAPH
from flows.models import WEBHOOK_HANDSHAKES, WEBHOOK_METHODS, Flow, FlowRun, FlowVersion, NodeResult, Variable
from flows.services.concurrency import MAX_SETTING
from flows.services.pause import WAITING_REASONS, flow_run_waiting, flow_runs_waiting
from flows.setting_fields import (
    ConcurrencyField,
    DedupeKeyField,
    GraphField,
    HandshakesField,
    MethodsField,
    ResponseExportField,
    ResponseField,
    ThrottleField,
    VerificationField,
)
from langrun.routers import route_url
from langrun.serializers import StrictCharField

FLOW_EXAMPLE = {
    "id": "6f1c1c55-3f4e-4c09-9a51-0f8c3b1e2d10",
    "name": "Greeting",
    "description": "Says hello",
    "data": GREETING_GRAPH,
    "endpoint_name": "greet",
    "user_id": "0b7e7f7c-1d2e-4f5a-9b8c-7d6e5f4a3b2c",
    "created_at": "2026-11-28T12:00:00Z",
    "updated_at": "2026-11-28T12:00:00Z",
    "webhook": True,
    "webhook_url": "http://127.0.0.1:8000/api/v1/webhook/greet",
    "latest_run_status": "succeeded",
    "latest_run_at": "2026-11-28T12:05:00Z",
}

RUN_EXAMPLE = {
    "id": "3f0c9d2e-8a7b-4c6d-9e5f-1a2b3c4d5e6f",
    "flow_id": "6f1c1c55-3f4e-4c09-9a51-0f8c3b1e2d10",
    "status": "succeeded",
    "trigger": "webhook",
    "attempts": 1,
    "outputs": {"greeting": "Hello Ada!"},
    "error": "",
    "received_at": "2026-11-28T12:05:00Z",
    "started_at": "2026-11-28T12:05:00.100000Z",
    "finished_at": "2026-11-28T12:05:00.104000Z",
    "replay_of": None,
    "nodes": [
        {"id": "hook", "type": "Webhook", "status": "succeeded", "output": {"data": {"name": "Ada"}}, "error": "", "duration_ms": 0.04},
        {"id": "greet", "type": "Template", "status": "succeeded", "output": {"text": "Hello Ada!"}, "error": "", "duration_ms": 0.05},
        {"id": "out", "type": "Output", "status": "succeeded", "output": {"value": "Hello Ada!"}, "error": "", "duration_ms": 0.01},
    ],
}


@extend_schema_serializer(examples=[OpenApiExample("A greeting flow", value=FLOW_EXAMPLE, response_only=True)])
class FlowSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
    }
    user_id = serializers.UUIDField(read_only=True)
    webhook = serializers.BooleanField(source="has_webhook", read_only=True, help_text="True when the flow has a Webhook node.")
    webhook_url = serializers.SerializerMethodField()
    data = GraphField(help_text="The graph in langrun's native format: {'nodes': [...], 'edges': [...]}.")
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
        max_value=MAX_SETTING,
        help_text="Runs of this flow executing at once (per key, with concurrency.key); more wait in the queue (null: no limit).",
    )
    concurrency = ConcurrencyField(
        required=False,
        allow_null=True,
        help_text=(
            "At most `limit` runs per value of `key` (a JMESPath over headers, query and payload, evaluated when the "
            "request is recorded) execute at once; the others wait queued and start in received order per key. "
            "Without a key it is max_concurrent_runs. Null: no limit."
        ),
    )
    throttle = ThrottleField(
        required=False,
        allow_null=True,
        help_text=(
            "At most `limit` runs per value of `key` start in any `period` seconds (a sliding window); the others wait "
            "queued, never refused. Null: no throttle."
        ),
    )
    methods = MethodsField(
        required=False,
        help_text="HTTP methods the webhook accepts (default POST). A GET's payload is its query; another method is a 405 with Allow.",
    )
    accept_if = DedupeKeyField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text=(
            'A JMESPath expression over {"headers", "query", "payload"}; when it is falsy the request is answered '
            '200 {"status": "filtered"} and recorded as a run with status filtered, never executed. Null: every request runs.'
        ),
    )
    handshakes = HandshakesField(
        required=False,
        help_text=(
            "The senders' URL checks the webhook answers before storing anything: slack (url_verification, after its "
            "signature), meta (GET hub.challenge, hub.verify_token = the flow's secret), graph (?validationToken=, "
            "after authentication). Default none."
        ),
    )
    dedupe_key = DedupeKeyField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text=(
            'A JMESPath expression over {"headers", "query", "payload"} (e.g. payload.id, headers."x-github-delivery") '
            "whose value, when present, deduplicates deliveries like an Idempotency-Key. Null: the verification "
            "preset's delivery id, else the Idempotency-Key / webhook-id headers."
        ),
    )
    verification = VerificationField(
        required=False,
        allow_null=True,
        help_text=(
            "The signature scheme the webhook checks with the flow's secret: standard, github, stripe, slack, shopify, or "
            'token (with "header" or "query" naming where it is). Null: Standard Webhooks or GitHub, once a secret is set.'
        ),
    )
    response = ResponseField(required=False, allow_null=True)
    signed = serializers.SerializerMethodField(help_text="True when webhook requests must be signed (the flow has a signing secret).")
    paused = serializers.SerializerMethodField(help_text="True while the flow is paused: its runs are recorded but held.")
    paused_at = serializers.DateTimeField(read_only=True, allow_null=True, help_text="When the flow was paused; null when it is not.")

    latest_run_status = serializers.SerializerMethodField(help_text="Status of the flow's most recent run; null when it never ran.")
    latest_run_at = serializers.SerializerMethodField(help_text="When the most recent run was received; null when it never ran.")

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
            "concurrency",
            "throttle",
            "methods",
            "verification",
            "dedupe_key",
            "accept_if",
            "handshakes",
            "response",
            "signed",
            "paused",
            "paused_at",
            "latest_run_status",
            "latest_run_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness per owner is checked by the service, which knows the owner.
        validators = []

    def get_signed(self, flow: Flow) -> bool:
        return bool(flow.signing_secret)

    def get_paused(self, flow: Flow) -> bool:
        return flow.paused_at is not None

    def get_webhook_url(self, flow: Flow) -> str:
        return route_url(self.context.get("request"), "webhook", flow_id_or_name=flow.endpoint_name or str(flow.id))

    def _latest(self, flow: Flow) -> tuple:
        # Lists annotate these (one query for the page); a single flow just asks.
        if hasattr(flow, "latest_run_status"):
            return flow.latest_run_status, flow.latest_run_at
        latest = flow.runs.order_by("-received_at").values_list("status", "received_at").first()
        return latest or (None, None)

    @extend_schema_field(serializers.ChoiceField(choices=FlowRun.Status.choices, allow_null=True))
    def get_latest_run_status(self, flow: Flow) -> str | None:
        return self._latest(flow)[0]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_latest_run_at(self, flow: Flow):
        value = self._latest(flow)[1]
        return serializers.DateTimeField().to_representation(value) if value else None


class FlowResumedSerializer(FlowSerializer):
    released = serializers.IntegerField(read_only=True, help_text="Held runs rung for in this request (a background task rings the rest).")

    class Meta(FlowSerializer.Meta):
        fields = [*FlowSerializer.Meta.fields, "released"]


class FlowImportSettingsSerializer(FlowSerializer):
    """The settings of one flow in a native export that the upload takes as the flow create API does, by the same fields."""

    class Meta(FlowSerializer.Meta):
        fields = ["endpoint_name", "timeout", "max_attempts", "methods"]


class NodeResultSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="node_id")
    type = serializers.CharField(source="component_type")

    class Meta:
        model = NodeResult
        fields = ["id", "type", "status", "output", "error", "duration_ms", "traceback"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self._tracebacks_shown():
            data.pop("traceback", None)  # where the code failed is for staff only
        return data

    def _tracebacks_shown(self) -> bool:
        """For a staff caller: the request's user, or the context's `tracebacks` where the caller is not the request's
        user (a webhook's API key)."""
        if "tracebacks" in self.context:
            return self.context["tracebacks"]
        request = self.context.get("request")
        return request is not None and getattr(request.user, "is_staff", False)


class _RunsSerializer(serializers.ListSerializer):
    """Many runs at once: what the queued ones wait for is read for all of them together (flow_runs_waiting)."""

    def to_representation(self, data):
        runs = list(data.all() if isinstance(data, models.manager.BaseManager) else data)
        waiting = flow_runs_waiting(runs=runs)
        for run in runs:
            run._waiting_detail = waiting[run.pk]
        return super().to_representation(runs)


class FlowRunListSerializer(serializers.ModelSerializer):
    """A run without its per-node results (lists stay one query)."""

    flow_id = serializers.UUIDField(read_only=True)
    version = serializers.IntegerField(
        source="version.number",
        read_only=True,
        allow_null=True,
        help_text="The flow version this run executes (see /flows/{id}/versions/).",
    )
    replay_of = serializers.UUIDField(source="replay_of_id", read_only=True, allow_null=True, help_text="The run this one replays.")
    waiting_for = serializers.SerializerMethodField(
        help_text=(
            "What a queued run waits for: `flow_paused` (its flow is paused), `retry_backoff`, `concurrency` (its key's "
            "runs are at the limit, or an older run of its key starts first), `throttle` (its key's starts in the period "
            "are at the limit) or `worker`; null once it started. `waiting` has the details."
        )
    )
    waiting = serializers.SerializerMethodField(
        help_text=(
            'What a queued run waits for, in detail: {"reason", …}; a concurrency\'s `key`, `limit` and `running`, a '
            "throttle's `key`, `limit`, `period` and `next_start_at`, a retry's `next_attempt_at`; `behind_older_run` when an "
            "older run of the same key starts first. Null once it started."
        )
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
            "replay_of",
            "waiting_for",
            "waiting",
        ]
        read_only_fields = fields
        list_serializer_class = _RunsSerializer

    def _waiting(self, run: FlowRun) -> dict | None:
        if run.status != FlowRun.Status.QUEUED:
            return None
        if not hasattr(run, "_waiting_detail"):
            # A list has read every run's answer at once (_RunsSerializer); a single run asks, with the annotations of
            # whether its flow is paused or limited where its queryset has them.
            paused = run.flow_paused if hasattr(run, "flow_paused") else run.flow.paused_at is not None
            limited = run.flow_limited if hasattr(run, "flow_limited") else True
            run._waiting_detail = flow_run_waiting(run=run, flow_paused=paused, flow=run.flow if limited else None)
        return run._waiting_detail

    @extend_schema_field(serializers.ChoiceField(choices=list(WAITING_REASONS), allow_null=True))
    def get_waiting_for(self, run: FlowRun) -> str | None:
        detail = self._waiting(run)
        return detail["reason"] if detail is not None else None

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "reason": {"type": "string", "enum": list(WAITING_REASONS)},
                "key": {"type": "string", "nullable": True},
                "limit": {"type": "integer"},
                "running": {"type": "integer"},
                "period": {"type": "integer"},
                "next_start_at": {"type": "string", "format": "date-time", "nullable": True},
                "next_attempt_at": {"type": "string", "format": "date-time"},
                "behind_older_run": {"type": "boolean"},
            },
            "required": ["reason"],
            "example": {"reason": "concurrency", "key": "cus_42", "limit": 1, "running": 1, "behind_older_run": False},
        }
    )
    def get_waiting(self, run: FlowRun) -> dict | None:
        detail = self._waiting(run)
        if detail is None:
            return None
        as_time = serializers.DateTimeField().to_representation
        return {name: as_time(value) if isinstance(value, datetime) else value for name, value in detail.items()}


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "description": (
            "The webhook request that started the run, as its Webhook node saw it: method, headers (names lower-cased) "
            "and query (a repeated key gives a list). x-api-key, authorization, cookie and the signature headers of the "
            "flow's verification read `***`; x-api-key is left out of the query. Null for a run no request started."
        ),
        "properties": {
            "method": {"type": "string", "enum": list(WEBHOOK_METHODS)},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {"type": "object", "additionalProperties": True},
        },
        "example": {"method": "POST", "headers": {"content-type": "application/json", "x-api-key": "***"}, "query": {}},
    }
)
class RunRequestField(serializers.JSONField):
    pass


@extend_schema_serializer(examples=[OpenApiExample("A finished run", value=RUN_EXAMPLE, response_only=True)])
class FlowRunSerializer(FlowRunListSerializer):
    nodes = NodeResultSerializer(source="node_results", many=True, read_only=True)
    request = RunRequestField(read_only=True)

    class Meta(FlowRunListSerializer.Meta):
        fields = [*FlowRunListSerializer.Meta.fields, "request", "nodes"]
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
    max_attempts = serializers.IntegerField()
    concurrency = ConcurrencyField(allow_null=True)
    throttle = ThrottleField(allow_null=True)
    methods = serializers.ListField(child=serializers.ChoiceField(choices=WEBHOOK_METHODS))
    verification = serializers.JSONField(allow_null=True, help_text="The verification preset, without its secret.")
    dedupe_key = serializers.CharField(allow_null=True)
    accept_if = serializers.CharField(allow_null=True)
    handshakes = serializers.ListField(child=serializers.ChoiceField(choices=WEBHOOK_HANDSHAKES))
    response = ResponseExportField()
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


# --- Simplified Run Flow (Langflow's POST /api/v1/run/{flow}) -------------------------------------------
