"""Alerts: who wants to hear about runs (subscriptions, a run's callback URL) and the outbox of what is sent to them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction


class Subscription(models.Model):
    """A user's standing request to be told about runs: of one flow, or of all their flows.

    Events go to `url` as Standard Webhooks-signed POSTs (signed with `secret`, shown once) or to `email`.
    `flow.backlog` fires when the flow's queued runs exceed `backlog_threshold` or the oldest has waited
    longer than `backlog_age_seconds`; `backlog_alerting` remembers a crossing until the backlog clears.
    """

    class Event(models.TextChoices):
        RUN_SUCCEEDED = "run.succeeded"
        RUN_FAILED = "run.failed"
        RUN_RETRIES_EXHAUSTED = "run.retries_exhausted"
        FLOW_BACKLOG = "flow.backlog"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    flow = models.ForeignKey(
        "flows.Flow", null=True, blank=True, on_delete=models.CASCADE, related_name="subscriptions", help_text="Empty: all your flows."
    )
    url = models.URLField(max_length=2000, blank=True, help_text="Where events are POSTed (signed with Standard Webhooks).")
    email = models.EmailField(blank=True, help_text="Or an address events are mailed to.")
    events = models.JSONField(default=list, help_text="Event names: run.succeeded, run.failed, run.retries_exhausted, flow.backlog.")
    secret = models.CharField(max_length=100, editable=False, help_text="The Standard Webhooks signing secret (whsec_...).")
    backlog_threshold = models.PositiveIntegerField(null=True, blank=True, help_text="flow.backlog: more queued runs than this.")
    backlog_age_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="flow.backlog: the oldest queued run has waited longer than this."
    )
    backlog_alerting = models.JSONField(
        default=list, blank=True, editable=False, help_text="Flows whose backlog alert fired and is not yet over."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.url or self.email} ({', '.join(self.events)})"

    def delete(self, *args, **kwargs):
        # A run finishing meanwhile may hold this row while it writes an alert for it (outbox.run_events_record): the
        # delete waits for that finish, then lets its delivery go with the others, rather than failing at its commit.
        with transaction.atomic():
            Subscription.objects.select_for_update().filter(pk=self.pk).exists()
            return super().delete(*args, **kwargs)

    def clean(self):
        # The admin lets a superuser choose both; the API offers only the caller's own flows.
        if self.flow_id is not None and self.user_id is not None and self.flow.user_id != self.user_id:
            raise ValidationError({"flow": "A subscription's flow must be one of its user's flows."})


class CallbackSecret(models.Model):
    """A user's signing secret for the deliveries to a webhook's `?callback_url=`: made on first use, shown once
    (POST /api/v1/subscriptions/callback-secret makes a new one)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="callback_secret")
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"callback secret of {self.user_id}"


class RunCallback(models.Model):
    """The `?callback_url=` a webhook request gave its run: the run's end is sent there, for that run only."""

    run = models.OneToOneField("flows.FlowRun", primary_key=True, on_delete=models.CASCADE, related_name="callback")
    url = models.URLField(max_length=2000)

    def __str__(self) -> str:
        return f"callback of {self.run_id}"


class DeliveryQuerySet(models.QuerySet):
    def due(self, *, now) -> DeliveryQuerySet:
        """Pending deliveries whose next attempt is due (a claimed one is not due before its lease ends)."""
        return self.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)


class Delivery(models.Model):
    """One event for one receiver: a row of the outbox, written with the run's finish, sent by a task.

    Its id is the Standard Webhooks `webhook-id`: every attempt of the same event carries it, so a receiver
    can drop a repeat. `pending → delivered | failed`; each attempt (status code, error, duration) is kept in
    `attempts`. A claimed attempt moves `next_attempt_at` past its timeout, so only one sender holds it;
    `attempt_count` only grows (it is the claim's fencing token): a retry of a failed delivery starts a new round
    of LANGRUN_ALERTS_MAX_ATTEMPTS attempts at `round_start`.
    """

    class Kind(models.TextChoices):
        SUBSCRIPTION = "subscription"
        CALLBACK = "callback"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SUBSCRIPTION)
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    run = models.ForeignKey("flows.FlowRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    flow = models.ForeignKey("flows.Flow", null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=2000, blank=True)
    email = models.EmailField(blank=True)
    payload = models.JSONField(help_text="The event as sent (the signed body).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.JSONField(default=list, blank=True, help_text="[{number, at, status_code, error, duration_ms}]")
    attempt_count = models.PositiveIntegerField(default=0, help_text="Attempts claimed so far, in all rounds: each one's number.")
    round_start = models.PositiveIntegerField(
        default=0, editable=False, help_text="attempt_count when its current round of attempts began (a retry of a failed one)."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"), name="delivery_pending"),
            models.Index(fields=["user", "-created_at"]),
        ]
        constraints = [
            # One delivery per event and subscription: a finish recorded twice cannot send twice.
            models.UniqueConstraint(fields=["run", "subscription", "event"], name="delivery_once_per_run_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.url or self.email} ({self.status})"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id.hex}"
