import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

ENDPOINT_NAME_RE = r"^[a-zA-Z0-9_-]+$"


class Flow(models.Model):
    """A graph of components that runs when its webhook URL is called.

    `data` holds the graph in langrun's native format (nodes with an id, a
    component type and params; edges from an output to an input). A flow is
    reached by its id or by its `endpoint_name`, which is unique per owner.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flows")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    endpoint_name = models.CharField(  # noqa: DJ001 - NULL means "no endpoint name"; unique only when set
        max_length=100,
        null=True,
        blank=True,
        validators=[RegexValidator(ENDPOINT_NAME_RE, "Use only letters, digits, '-' and '_'.")],
    )
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "endpoint_name"],
                condition=models.Q(endpoint_name__isnull=False),
                name="flow_endpoint_name_unique_per_user",
            )
        ]
        indexes = [models.Index(fields=["endpoint_name"])]

    def __str__(self) -> str:
        return self.name

    @property
    def has_webhook(self) -> bool:
        return any(isinstance(n, dict) and n.get("type") == "Webhook" for n in (self.data or {}).get("nodes", []))


class FlowRun(models.Model):
    """One accepted request to run a flow: the durable ledger entry.

    Written in the same transaction that accepts the request, before the
    `202` is sent, so the payload is never lost; the task queue only rings
    the doorbell. Status moves `queued → running → succeeded | failed` (or
    `queued → cancelled`), and terminal states never change; a replay is a
    new run pointing at the old one.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Trigger(models.TextChoices):
        WEBHOOK = "webhook"
        API = "api"
        ADMIN = "admin"
        REPLAY = "replay"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.WEBHOOK)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    body = models.TextField(blank=True, help_text="The request body as received.")
    content_type = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(null=True, blank=True, help_text="The body as parsed for the Webhook node.")
    tweaks = models.JSONField(null=True, blank=True, help_text="Per-node parameter overrides for this run only.")
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=100, blank=True, help_text="The worker process (host:pid) that last claimed the run.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays", help_text="The run this one replays."
    )

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["status", "enqueued_at"]),
            models.Index(fields=["flow", "-received_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.flow_id} run {self.id} ({self.status})"

    @property
    def duration_ms(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds() * 1000
        return None


class NodeResult(models.Model):
    """What one node of a run did: status, output or error, and how long it took.

    Rows are written together when a run ends, in execution `order`; nodes
    that never ran (after a failure, or on an unchosen branch) are `skipped`.
    """

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="node_results")
    node_id = models.CharField(max_length=200)
    component_type = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)
    order = models.PositiveIntegerField()

    class Meta:
        ordering = ["run", "order"]
        constraints = [models.UniqueConstraint(fields=["run", "node_id"], name="node_result_unique_per_run")]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.status})"
