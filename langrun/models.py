import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person or integration owning flows and API keys.

    Django's standard user with a UUID primary key, as Langflow's user ids are
    UUIDs (the webhook's `?user_id=` takes one).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)


class ApiKey(models.Model):
    """A secret that lets a script or integration act as its owner.

    Only a SHA-256 hash of the key is stored; the full key (`sk-...`) is shown
    once, when it is created. `prefix` (the first characters of the key) finds
    the row; the hash is then compared in constant time. Revoking a key clears
    `is_active`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    use_count = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name or 'API key'} ({self.prefix}…)"

    @property
    def masked(self) -> str:
        return f"{self.prefix}{'*' * 8}"
