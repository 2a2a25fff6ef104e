"""Runs: the ledger of what each webhook, schedule or replay asked for, with each attempt and node."""

import uuid

from django.conf import settings
from django.db import models

from flows.models.flows import Flow


class FlowRunQuerySet(models.QuerySet):
    def unfinished(self) -> "FlowRunQuerySet":
        """Runs not yet terminal (queued or running: no `finished_at` yet), through the index that holds only them."""
        return self.filter(finished_at__isnull=True)

    def outside_releases(self, *, since) -> "FlowRunQuerySet":
        """Runs but those of flows whose resume has rung a page of held runs since `since` (flows/services/pause.py):
        while pages go on, they ring the rest; the sweep takes over once they stop."""
        return self.exclude(flow__released_at__gte=since)


class FlowRun(models.Model):
    """One accepted request to run a flow: the durable ledger entry.

    Written in the same transaction that accepts the request, before the
    `202` is sent, so the payload is never lost; the task queue only rings
    the doorbell. Status moves `queued → running → succeeded | failed` (or
    `queued → cancelled`; or recorded `filtered`, never executed), and terminal states never change; a replay is a
    new run pointing at the old one.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        # The flow's `accept_if` was falsy: recorded and answered 200, never executed.
        FILTERED = "filtered"

    class Trigger(models.TextChoices):
        WEBHOOK = "webhook"
        API = "api"
        ADMIN = "admin"
        REPLAY = "replay"
        SCHEDULE = "schedule"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the (flow, -received_at) index below leads with it. Every claim and finish
    # changes `status`, an indexed column, so each of them writes an entry into every index of the table.
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.WEBHOOK)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    body = models.TextField(blank=True, help_text="The request body as received.")
    content_type = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(null=True, blank=True, help_text="The body as parsed for the Webhook node.")
    tweaks = models.JSONField(null=True, blank=True, help_text="Per-node parameter overrides for this run only.")
    # Langflow's X-LANGFLOW-GLOBAL-VAR-* headers: variables for this run only, a Fernet token of their JSON ("" for none).
    # Kept for the run's retries and replays; retention clears them with the payload.
    request_variables = models.TextField(blank=True, default="", editable=False)
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(  # noqa: DJ001 - NULL means "no key"; unique per flow only when set
        max_length=255, null=True, blank=True, help_text="The sender's Idempotency-Key or webhook-id, while it is retained."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="A retried run waits until then.")
    worker = models.CharField(max_length=100, blank=True, help_text="The worker process (host:pid) that last claimed the run.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays", help_text="The run this one replays."
    )
    version = models.ForeignKey(
        "FlowVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The version of the flow's graph this run was accepted against, and executes.",
    )
    request = models.JSONField(
        null=True,
        blank=True,
        help_text="The webhook request's method, headers and query (secrets masked); empty for runs not started by one.",
    )
    payload_pruned_at = models.DateTimeField(
        null=True, blank=True, help_text="When retention cleared the raw body and payload of this run."
    )
    # The values of the flow's concurrency and throttle keys for this run, evaluated once when it was recorded
    # (flows/services/concurrency.py); NULL when the flow had none (a throttle without a key stores "").
    concurrency_key = models.CharField(  # noqa: DJ001 - NULL means "not limited by key"
        max_length=255, null=True, blank=True, editable=False, help_text="The run's value of its flow's concurrency key."
    )
    throttle_key = models.CharField(  # noqa: DJ001 - NULL means "not throttled"
        max_length=255, null=True, blank=True, editable=False, help_text="The run's value of its flow's throttle key."
    )

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.FILTERED)

    objects = FlowRunQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            # Only the runs not yet finished (queued or running, a handful against a ledger of millions), for
            # the sweep and the queue-depth metric. A full index on `status` was a trap: PostgreSQL estimates
            # one row for `status = 'queued'` on a fresh table, or when few runs are queued, as it does for the
            # primary key, and then found a claim's `id = %s AND status = 'queued'` by walking every queued run.
            # A query can only use this index by saying `finished_at IS NULL` (FlowRun.objects.unfinished()).
            models.Index(fields=["status", "enqueued_at"], condition=models.Q(finished_at__isnull=True), name="flow_run_unfinished"),
            models.Index(fields=["flow", "-received_at"]),
            # Run control by key: a key's runs not yet finished (running ones counted, queued ones in received order),
            # and when a throttled key's runs started. Partial: runs without a key are in neither.
            models.Index(
                fields=["flow", "concurrency_key", "received_at"],
                condition=models.Q(finished_at__isnull=True, concurrency_key__isnull=False),
                name="flow_run_concurrency_key",
            ),
            models.Index(
                fields=["flow", "throttle_key", "received_at"],
                condition=models.Q(finished_at__isnull=True, throttle_key__isnull=False),
                name="flow_run_throttle_key_waiting",
            ),
            models.Index(
                fields=["flow", "throttle_key", "started_at"],
                condition=models.Q(throttle_key__isnull=False),
                name="flow_run_throttle_key_started",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["flow", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="flow_run_idempotency_key_unique_per_flow",
            )
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

    A run executed by a worker's event loop writes its nodes' rows as they start (`running`) and
    end, a fraction of a second late; the run's finish writes them all, in execution `order`. Nodes
    that never ran (after a failure, or on an unchosen branch) are `skipped`.
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    # No index of its own: the unique (run, node_id) index leads with it.
    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="node_results", db_index=False)
    node_id = models.CharField(max_length=200)
    component_type = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True, help_text="Where the error came from; shown to staff only.")
    duration_ms = models.FloatField(default=0)
    order = models.PositiveIntegerField()

    class Meta:
        ordering = ["run", "order"]
        constraints = [models.UniqueConstraint(fields=["run", "node_id"], name="node_result_unique_per_run")]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.status})"


class RunAttempt(models.Model):
    """One attempt at executing a run: when it started and ended, and how.

    A run is attempted again when an attempt fails with a retryable error or is
    interrupted (its worker died), up to its flow's `max_attempts`. The run's
    node results describe its last attempt; this table keeps every attempt.
    """

    class Outcome(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        RETRY = "retry"
        INTERRUPTED = "interrupted"
        CANCELLED = "cancelled"

    # No index of its own: the unique (run, number) index leads with it.
    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="attempt_log", db_index=False)
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="run_attempt_unique_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} ({self.outcome})"


class ReplayJob(models.Model):
    """A bulk replay running in the background: which runs it replays, and how far it got.

    Created by `POST /api/v1/runs/replay` or the admin's replay action; a django-q2 task replays the
    matching runs in batches at a bounded rate (flows/services/replays.py), each batch committed together
    with the job's counters and its position (`cursor_*`), so a job resumed after its worker died never
    replays a run twice. Only runs received before the job was created match, so its own replays never do.
    `step` is the fencing token of the task currently working on the job.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="replay_jobs")
    filters = models.JSONField(default=dict, help_text="The run filters it matched (flow, status, trigger, received_*, ids).")
    current_version = models.BooleanField(default=False, help_text="Replays run the flow's current graph, not the original's version.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    matched = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0, help_text="Replays created so far.")
    failed = models.PositiveIntegerField(default=0, help_text="Matched runs that could not be replayed (see errors).")
    errors = models.JSONField(default=list, blank=True, help_text="The first errors: [{run_id, msg}].")
    error = models.TextField(blank=True, help_text="Why the job itself failed.")
    cursor_received_at = models.DateTimeField(null=True, blank=True, editable=False)
    cursor_run = models.UUIDField(null=True, blank=True, editable=False)
    step = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"replay job {self.id} ({self.status}, {self.created}/{self.matched})"
