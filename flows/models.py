import functools
import json
import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

ENDPOINT_NAME_RE = r"^[a-zA-Z0-9_-]+$"
# The HTTP methods a flow's webhook may accept, in the order they are listed (and stored).
WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# The senders' URL checks a flow may answer (webhooks/handshakes.py), in the order they are listed.
WEBHOOK_HANDSHAKES = ("slack", "meta", "graph")


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
    timeout = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds a run may take; empty for the LANGRUN_FLOW_TIMEOUT default."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The version equal to `data` (kept by the services), so accepting a run needs no version query.
    current_version = models.ForeignKey("FlowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False)

    # Reliability: how often a run may be attempted, and how many may run at once.
    max_attempts = models.PositiveSmallIntegerField(
        default=1, help_text="Attempts a run may take; failures marked retryable are tried again with backoff."
    )
    max_concurrent_runs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Runs of this flow executing at once (per key, with a key); more wait in the queue. Empty: no limit.",
    )
    # Run control by key (flows/services/concurrency.py): JMESPath over {"headers", "query", "payload"}, evaluated
    # once when a run is recorded; its value is stored on the run (FlowRun.concurrency_key / throttle_key).
    concurrency_key = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text='A JMESPath over {"headers", "query", "payload"}: max_concurrent_runs applies per value of it. Empty: per flow.',
    )
    throttle_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs (per throttle key) that may start per throttle period; more wait. Empty: no throttle."
    )
    throttle_period = models.PositiveIntegerField(null=True, blank=True, help_text="The throttle's period, in seconds.")
    throttle_key = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text='A JMESPath over {"headers", "query", "payload"}: the throttle applies per value of it. Empty: per flow.',
    )
    # Run control: while set, the flow's runs are still recorded but no worker claims them (flows/services/pause.py).
    paused_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="Paused since then: its runs are held.")
    # Webhook signing: when `signing_secret` is set, webhook requests must be signed with it
    # (or, until `signing_secret_previous_expires_at`, with the previous secret).
    signing_secret = models.CharField(max_length=100, blank=True, editable=False)
    signing_secret_previous = models.CharField(max_length=100, blank=True, editable=False)
    signing_secret_previous_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Integrations: what the webhook accepts. Stored as canonical text ("GET,POST") so that the webhook's
    # remembered target can check it in SQL alike on every database (webhooks/targets.py).
    methods = models.CharField(
        max_length=64, default="POST", help_text="HTTP methods the webhook accepts, comma-separated (GET, POST, PUT, PATCH, DELETE)."
    )
    handshakes = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="The senders' URL checks the webhook answers, comma-separated: slack, meta, graph.",
    )
    accept_if = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text='A JMESPath over {"headers", "query", "payload"}: when falsy the request is recorded as filtered, never run.',
    )
    dedupe_key = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text='A JMESPath over {"headers", "query", "payload"} whose value deduplicates deliveries (e.g. payload.id).',
    )
    verification = models.CharField(
        max_length=300,
        blank=True,
        default="",
        help_text='The signature scheme the webhook checks, as JSON ({"provider": "stripe"}); empty: Standard Webhooks or GitHub.',
    )
    # Canonical JSON (flows/services/webhook_settings.py), compared as text by the remembered target like the others.
    response = models.TextField(
        blank=True,
        default="",
        help_text='What the webhook answers, as JSON: {"mode": "static", …} or {"mode": "flow", "timeout": 10}; empty: the 202.',
    )

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
    def allowed_methods(self) -> tuple[str, ...]:
        return tuple(self.methods.split(",")) if self.methods else ("POST",)

    @property
    def verification_settings(self) -> dict | None:
        """The verification preset (`{"provider": …}`), or None for today's rule (Standard Webhooks or GitHub)."""
        return _json_setting_parsed(self.verification) if self.verification else None

    @property
    def response_settings(self) -> dict:
        """What the webhook answers: `{"mode": "accepted"}` (the 202), a static answer, or the run's (`flow`)."""
        return _json_setting_parsed(self.response) if self.response else {"mode": "accepted"}

    @property
    def concurrency(self) -> dict | None:
        """`{"limit", "key"}`: at most `limit` runs per value of `key` (per flow without one) execute at once; None: no limit."""
        if not self.max_concurrent_runs:
            return None
        return {"limit": self.max_concurrent_runs, "key": self.concurrency_key or None}

    @property
    def throttle(self) -> dict | None:
        """`{"limit", "period", "key"}`: at most `limit` runs per value of `key` start per `period` seconds; None: no throttle."""
        if not self.throttle_limit:
            return None
        return {"limit": self.throttle_limit, "period": self.throttle_period, "key": self.throttle_key or None}

    @property
    def has_webhook(self) -> bool:
        return any(isinstance(n, dict) and n.get("type") == "Webhook" for n in (self.data or {}).get("nodes", []))


@functools.lru_cache(maxsize=256)
def _json_setting_parsed(text: str) -> dict:
    # Parsed once per distinct text: the webhook reads it (a preset, a response) on every request to its flow.
    return json.loads(text)


class FlowRunQuerySet(models.QuerySet):
    def unfinished(self) -> "FlowRunQuerySet":
        """Runs not yet terminal (queued or running: no `finished_at` yet), through the index that holds only them."""
        return self.filter(finished_at__isnull=True)


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


VARIABLE_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Variable(models.Model):
    """A named value of one user that flow params refer to as `{"variable": "NAME"}`.

    A `generic` variable is stored as it is; a `credential` is encrypted with
    Fernet (the first key of LANGRUN_VARIABLES_KEY, or one derived from SECRET_KEY) and is never
    shown again after saving: the API and the admin mask it, and run records
    mask its value wherever it would appear. Names are unique per owner.
    """

    class Kind(models.TextChoices):
        GENERIC = "generic"
        CREDENTIAL = "credential"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="variables")
    name = models.CharField(
        max_length=100,
        validators=[RegexValidator(VARIABLE_NAME_RE, "Use letters, digits and '_', not starting with a digit.")],
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CREDENTIAL)
    value = models.TextField(blank=True, help_text="The value; for a credential, its Fernet token.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="variable_name_unique_per_user")]

    def __str__(self) -> str:
        return self.name


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


class FlowVersion(models.Model):
    """One immutable snapshot of a flow's graph, numbered 1, 2, 3 … per flow.

    A version is written whenever a save changes the graph (an unchanged save
    writes none), by the services only. Runs point at the version they were
    accepted against and execute its `data`, so an edit made while a run waits
    in the queue does not change what it runs, and a replay can run it again.
    """

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    data = models.JSONField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["flow", "-number"]
        constraints = [models.UniqueConstraint(fields=["flow", "number"], name="flow_version_number_unique")]

    def __str__(self) -> str:
        return f"{self.flow} v{self.number}"


class MetricCounter(models.Model):
    """A named, labelled number kept in the database so every process adds to the same one.

    Holds what the run ledger cannot tell at scrape time: rejected webhook
    calls by status code, runs the sweep re-enqueued, the last sweep's time,
    and the contributions of runs that retention deleted (so the counters
    derived from the ledger never go down).
    """

    name = models.CharField(max_length=100)
    labels = models.CharField(max_length=300, blank=True, help_text='The labels as JSON with sorted keys, e.g. {"code": "403"}.')
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="metric_counter_unique")]

    def __str__(self) -> str:
        return f"{self.name}{{{self.labels}}} {self.value}"


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


class FlowSchedule(models.Model):
    """A flow running on a clock: a cron expression or an interval in minutes, with the payload each run gets.

    Executed by django-q2's scheduler through the `django_q.Schedule` row it owns (kept in step by
    flows/services/schedules.py); each firing records a run with trigger `schedule`, whose idempotency
    key is the schedule and the time it was due, so a firing seen by two clusters records one run.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200, blank=True)
    cron = models.CharField(max_length=100, blank=True, help_text="A cron expression (minute hour day month weekday), in UTC.")
    interval_minutes = models.PositiveIntegerField(null=True, blank=True, help_text="Or: run every this many minutes.")
    payload = models.JSONField(default=dict, blank=True, help_text="What the Webhook node receives on each run.")
    q_schedule = models.OneToOneField(
        "django_q.Schedule", null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or (f"cron {self.cron}" if self.cron else f"every {self.interval_minutes} min")
