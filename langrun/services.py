"""Identity services: creating and checking API keys; recording the uses of a key (or of any credential row) in batches."""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from langrun.models import ApiKey, User

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-"
# Characters of a secret after its kind that its row stores in clear, to find it.
_PREFIX_CHARS = 8


@dataclass(frozen=True)
class NewApiKey:
    api_key: ApiKey
    key: str  # the full secret, available only here, once


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def secret_mint(*, kind: str, model) -> tuple[str, str]:
    """A new secret starting with `kind` (`sk-`, `it-`) and the stored prefix that finds its row, which no row of
    `model` has yet. The secret exists in clear only in the caller's hands; rows keep `secret_digest` of it."""
    while True:
        secret = kind + secrets.token_urlsafe(32)
        prefix = secret[: len(kind) + _PREFIX_CHARS]
        if not model.objects.filter(prefix=prefix).exists():
            return secret, prefix


def secret_prefix(secret: str, *, kind: str) -> str | None:
    """The stored prefix that finds `secret`'s row, or None when `secret` cannot be one of `kind` at all."""
    length = len(kind) + _PREFIX_CHARS
    if not secret.startswith(kind) or len(secret) <= length or len(secret) > 200 or not (secret.isascii() and secret.isprintable()):
        return None
    return secret[:length]


def secret_matches(*, digest: str, secret: str) -> bool:
    return hmac.compare_digest(digest, _hash(secret))


def secret_digest(secret: str) -> str:
    """What a row stores of a secret: a name for it that is not the secret."""
    return _hash(secret)


def api_key_create(*, user: User, name: str = "") -> NewApiKey:
    """Create a key for `user`; the returned `key` is the only time the secret exists in clear."""
    key, prefix = secret_mint(kind=KEY_PREFIX, model=ApiKey)
    api_key = ApiKey.objects.create(user=user, name=name, prefix=prefix, hashed_key=_hash(key))
    return NewApiKey(api_key=api_key, key=key)


def api_key_prefix(key: str) -> str | None:
    """The stored prefix that finds `key`'s row, or None when `key` cannot be a key at all."""
    return secret_prefix(key, kind=KEY_PREFIX)


def api_key_matches(*, hashed_key: str, key: str) -> bool:
    return secret_matches(digest=hashed_key, secret=key)


def api_key_digest(key: str) -> str:
    """What a key's row stores of it (`hashed_key`): a name for the key that is not the secret."""
    return _hash(key)


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The active key matching `key` (with its user), or None; records its use."""
    prefix = api_key_prefix(key)
    if prefix is None:
        return None
    # order_by(): the prefix is unique, so the model's default ordering would only cost compile time.
    found = ApiKey.objects.select_related("user").filter(prefix=prefix, is_active=True).order_by()[:1]
    api_key = found[0] if found else None
    if api_key is None or not api_key.user.is_active or not api_key_matches(hashed_key=api_key.hashed_key, key=key):
        return None
    api_key_record_use(api_key_id=api_key.pk)
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Deactivate a key for good; it stops authenticating at once."""
    ApiKey.objects.filter(pk=api_key.pk).update(is_active=False)
    api_key.is_active = False
    return api_key


def api_key_delete(*, api_key: ApiKey) -> None:
    """Delete a key: requests carrying it are refused from now on."""
    api_key.delete()


# A key's use is written at most once per LANGRUN_API_KEY_USAGE_INTERVAL seconds per
# process: every webhook call writing the same row made concurrent requests queue for
# its row lock (and cost a commit each). Uses in between are counted in memory and
# added with the next write, or when the process exits.
class UsageRecorder:
    """Counts uses of a model's rows (`last_used_at`, `use_count`), writing each row at most once per interval."""

    def __init__(self, model):
        self.model = model
        self._lock = threading.Lock()
        self._pending: dict = {}
        self._last_written: dict = {}

    def record(self, pk) -> None:
        """Count one use of a row (written at once, or with the next write; see above)."""
        now = time.monotonic()
        interval = settings.LANGRUN_API_KEY_USAGE_INTERVAL
        with self._lock:
            uses = self._pending.pop(pk, 0) + 1
            last = self._last_written.get(pk)
            if interval > 0 and last is not None and now - last < interval:
                self._pending[pk] = uses
                return
            self._last_written[pk] = now
        self._write(pk, uses)

    def flush(self) -> int:
        """Write the uses counted in memory but not yet stored; returns how many rows were written."""
        with self._lock:
            pending = dict(self._pending)
            self._pending.clear()
            now = time.monotonic()
            for pk in pending:
                self._last_written[pk] = now
        for pk, uses in pending.items():
            self._write(pk, uses)
        return len(pending)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def _write(self, pk, uses: int) -> None:
        self.model.objects.filter(pk=pk).update(last_used_at=timezone.now(), use_count=F("use_count") + uses)


_recorders: list[UsageRecorder] = []


def usage_recorder(model) -> UsageRecorder:
    """The recorder of `model`'s uses; its pending uses are written when the process exits."""
    recorder = UsageRecorder(model)
    _recorders.append(recorder)
    return recorder


_api_key_uses = usage_recorder(ApiKey)


def api_key_record_use(*, api_key_id) -> None:
    """Count one use of a key (written at once, or with the next write; see above)."""
    _api_key_uses.record(api_key_id)


def api_key_usage_flush() -> int:
    """Write the uses counted in memory but not yet stored; returns how many keys were written."""
    return _api_key_uses.flush()


@atexit.register
def _flush_at_exit() -> None:
    for recorder in _recorders:
        if not recorder.has_pending():
            continue
        try:
            recorder.flush()
        except Exception:  # the database may be gone already; a few uses go uncounted
            logger.warning("Could not record the last uses of %s at exit", recorder.model._meta.verbose_name_plural, exc_info=True)
