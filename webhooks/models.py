import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from flows.models import Flow

# The outgoing webhooks' models (alerts and callbacks) live in their own module; importing them here registers them.
from webhooks.alerts.models import CallbackSecret, Delivery, RunCallback, Subscription

__all__ = ["CallbackSecret", "Delivery", "IngestToken", "RunCallback", "Subscription", "expires_in_the_future"]


def expires_in_the_future(value) -> None:
    if value is not None and value <= timezone.now():
        raise ValidationError("The expiry must be in the future.", code="expired")


class IngestToken(models.Model):
    """A secret that lets a sender call one flow's webhook, and nothing else.

    For senders that can set neither headers nor query strings: the token goes in a URL of its own
    (`/api/v1/webhook/t/<token>`), or in `x-api-key` for its flow's webhook. It never authenticates the
    REST API or the admin. Like an API key, only a SHA-256 hash is stored; the full token (`it-...`) is
    shown once, when it is created, and `prefix` (its first characters) finds the row and names it in lists.
    A revoked or expired token is refused as an invalid key is; runs it starts run as the flow's owner.
    """

    class State(models.TextChoices):
        ACTIVE = "active"
        REVOKED = "revoked"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="ingest_tokens")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_token = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, validators=[expires_in_the_future], help_text="Refused from then on; empty: never expires."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    use_count = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name or 'ingest token'} ({self.prefix}…)"

    @property
    def masked(self) -> str:
        return f"{self.prefix}{'*' * 8}"

    @property
    def state(self) -> State:
        """Only an active token is accepted."""
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return self.State.EXPIRED
        return self.State.ACTIVE
