"""Identity services: creating and checking API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.db.models import F
from django.utils import timezone

from langrun.models import ApiKey, User

KEY_PREFIX = "sk-"
_PREFIX_LENGTH = len(KEY_PREFIX) + 8


@dataclass(frozen=True)
class NewApiKey:
    api_key: ApiKey
    key: str  # the full secret, available only here, once


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_create(*, user: User, name: str = "") -> NewApiKey:
    """Create a key for `user`; the returned `key` is the only time the secret exists in clear."""
    while True:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = key[:_PREFIX_LENGTH]
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    api_key = ApiKey.objects.create(user=user, name=name, prefix=prefix, hashed_key=_hash(key))
    return NewApiKey(api_key=api_key, key=key)


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The active key matching `key` (with its user), or None; records its use."""
    if not key.startswith(KEY_PREFIX) or len(key) <= _PREFIX_LENGTH or len(key) > 200 or not (key.isascii() and key.isprintable()):
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=key[:_PREFIX_LENGTH], is_active=True).first()
    if api_key is None or not api_key.user.is_active or not hmac.compare_digest(api_key.hashed_key, _hash(key)):
        return None
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now(), use_count=F("use_count") + 1)
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Deactivate a key for good; it stops authenticating at once."""
    ApiKey.objects.filter(pk=api_key.pk).update(is_active=False)
    api_key.is_active = False
    return api_key


def api_key_delete(*, api_key: ApiKey) -> None:
    """Delete a key: requests carrying it are refused from now on."""
    api_key.delete()
