"""Ingest tokens: per-flow secrets that authorise only that flow's webhook (create, revoke, authenticate).

The webhook's rules for them (which flow a token may call, its refusals) are in webhooks/targets.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.shortcuts import get_object_or_404
from django.utils import timezone

from flows.models import Flow
from langrun.models import User
from langrun.services import secret_digest, secret_matches, secret_mint, secret_prefix, usage_recorder
from webhooks.models import IngestToken

TOKEN_PREFIX = "it-"

_uses = usage_recorder(IngestToken)


@dataclass(frozen=True)
class NewIngestToken:
    ingest_token: IngestToken
    token: str  # the full secret, available only here, once


def ingest_token_create(
    *, flow: Flow, name: str = "", expires_at: datetime | None = None, created_by: User | None = None
) -> NewIngestToken:
    """Create a token for `flow`'s webhook; the returned `token` is the only time the secret exists in clear."""
    token, prefix = secret_mint(kind=TOKEN_PREFIX, model=IngestToken)
    ingest_token = IngestToken.objects.create(
        flow=flow, name=name, expires_at=expires_at, created_by=created_by, prefix=prefix, hashed_token=secret_digest(token)
    )
    return NewIngestToken(ingest_token=ingest_token, token=token)


def ingest_token_revoke(*, ingest_token: IngestToken) -> IngestToken:
    """Revoke a token for good; it is refused at once. Revoking a revoked token keeps its first revocation time.

    A token deleted since it was looked up raises Http404, as its lookup would now."""
    now = timezone.now()
    if IngestToken.objects.filter(pk=ingest_token.pk, revoked_at__isnull=True).update(revoked_at=now):
        ingest_token.revoked_at = now
    else:
        ingest_token.revoked_at = get_object_or_404(IngestToken.objects.values_list("revoked_at", flat=True), pk=ingest_token.pk)
    return ingest_token


def ingest_token_delete(*, ingest_token: IngestToken) -> None:
    """Delete a token: requests carrying it are refused from now on."""
    ingest_token.delete()


def ingest_token_prefix(token: str) -> str | None:
    """The stored prefix that finds `token`'s row, or None when `token` cannot be an ingest token at all."""
    return secret_prefix(token, kind=TOKEN_PREFIX)


def ingest_token_authenticate(*, token: str) -> IngestToken | None:
    """The valid token matching `token` (not revoked, not expired, its flow's owner active) with its flow, the flow's
    owner and current version; None for anything else. Records its use."""
    prefix = ingest_token_prefix(token)
    if prefix is None:
        return None
    found = (
        IngestToken.objects.select_related("flow__user", "flow__current_version")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .order_by()[:1]
    )
    ingest_token = found[0] if found else None
    if ingest_token is None or not secret_matches(digest=ingest_token.hashed_token, secret=token):
        return None
    if ingest_token.state != IngestToken.State.ACTIVE or not ingest_token.flow.user.is_active:
        return None
    _uses.record(ingest_token.pk)
    return ingest_token


def ingest_token_usage_flush() -> int:
    """Write the uses counted in memory but not yet stored; returns how many tokens were written."""
    return _uses.flush()
