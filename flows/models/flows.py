"""Flows, their versions and their schedules."""

import functools
import json
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

ENDPOINT_NAME_RE = r"^[a-zA-Z0-9_-]+$"
ENDPOINT_NAME_UNIQUE = "flow_endpoint_name_unique_per_user"


def endpoint_name_reads_as_id(name: str) -> bool:
    """Whether the webhook would read `name` as a flow id: a UUID, with or without hyphens (webhooks.targets' rule)."""
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def validate_endpoint_name_not_id(name: str) -> None:
    if endpoint_name_reads_as_id(name):
        raise ValidationError("An endpoint name cannot be a UUID: the webhook URL would read it as a flow id.")


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
        validators=[RegexValidator(ENDPOINT_NAME_RE, "Use only letters, digits, '-' and '_'."), validate_endpoint_name_not_id],
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
    # A resume's release of the held runs goes on a page at a time: when it last rang one (null: none goes on).
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
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
                name=ENDPOINT_NAME_UNIQUE,
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
