"""Webhook signatures: a flow's signing secrets, and checking a request signed with one.

Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and GitHub's `X-Hub-Signature-256`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import timedelta

import standardwebhooks
from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions, status

from flows.models import Flow

SIGNING_SECRET_PREFIX = "whsec_"
SIGNATURE_REQUIRED = "This flow requires signed webhook requests (webhook-signature or X-Hub-Signature-256)."
SIGNATURE_INVALID = "Invalid webhook signature."
_SIGNATURE_ENTRY = re.compile(r"^v1,[A-Za-z0-9+/=]{1,200}$")


class InvalidSignature(exceptions.APIException):
    """401: the flow has a signing secret and the request is not signed with it."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = SIGNATURE_INVALID
    default_code = "invalid_signature"


def webhook_is_signed(*, headers) -> bool:
    return bool(headers.get("HTTP_WEBHOOK_SIGNATURE") or headers.get("HTTP_X_HUB_SIGNATURE_256"))


def webhook_signature_verify(*, flow: Flow, body: bytes, headers) -> None:
    """Check a signed request against the flow's signing secrets (current, and previous during its grace period).

    Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`; 5 minutes of tolerance; several
    space-separated signatures) is checked by the `standardwebhooks` library; GitHub's `X-Hub-Signature-256:
    sha256=<hex>` is an HMAC-SHA256 of the body keyed with the secret as written. Comparisons are constant-time.
    Raises InvalidSignature (401); does nothing for a flow without a secret.
    """
    secrets_ = webhook_signing_secrets(flow=flow)
    if not secrets_:
        return
    if not webhook_is_signed(headers=headers):
        raise InvalidSignature(SIGNATURE_REQUIRED)
    standard = headers.get("HTTP_WEBHOOK_SIGNATURE")
    if standard:
        entries = [e for e in standard.split(" ") if _SIGNATURE_ENTRY.match(e)]
        swh_headers = {
            "webhook-id": headers.get("HTTP_WEBHOOK_ID", ""),
            "webhook-timestamp": headers.get("HTTP_WEBHOOK_TIMESTAMP", ""),
            "webhook-signature": " ".join(entries),
        }
        for secret in secrets_:
            try:
                standardwebhooks.Webhook(secret).verify(body, swh_headers, json_parse=False)
            except Exception:  # noqa: S112 - every failure (bad header, encoding, timestamp, mismatch) is "not this secret"
                continue
            return
        raise InvalidSignature()
    github = headers.get("HTTP_X_HUB_SIGNATURE_256", "")
    given = github[len("sha256=") :].strip().lower() if github.startswith("sha256=") else ""
    for secret in secrets_:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), given.encode("ascii", "replace")):
            return
    raise InvalidSignature()


def webhook_signing_secrets(*, flow: Flow) -> list[str]:
    secrets_ = [flow.signing_secret] if flow.signing_secret else []
    if flow.signing_secret_previous:  # its expiry is read only then (the webhook's lookup defers it)
        expires = flow.signing_secret_previous_expires_at
        if expires and expires > timezone.now():
            secrets_.append(flow.signing_secret_previous)
    return secrets_


def webhook_signing_secret_rotate(*, flow: Flow, grace_seconds: int | None = None) -> str:
    """Give the flow a new signing secret and return it (the only time it is shown).

    The previous secret, if any, is still accepted for `grace_seconds`
    (LANGRUN_SIGNING_SECRET_GRACE by default; 0 revokes it at once).
    """
    if grace_seconds is None:
        grace_seconds = settings.LANGRUN_SIGNING_SECRET_GRACE
    secret = SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    now = timezone.now()
    if flow.signing_secret and grace_seconds > 0:
        flow.signing_secret_previous = flow.signing_secret
        flow.signing_secret_previous_expires_at = now + timedelta(seconds=grace_seconds)
    else:
        flow.signing_secret_previous, flow.signing_secret_previous_expires_at = "", None
    flow.signing_secret = secret
    flow.save(update_fields=["signing_secret", "signing_secret_previous", "signing_secret_previous_expires_at", "updated_at"])
    return secret


def webhook_signing_secret_remove(*, flow: Flow) -> None:
    """Stop requiring signatures for the flow (and forget both secrets)."""
    flow.signing_secret, flow.signing_secret_previous, flow.signing_secret_previous_expires_at = "", "", None
    flow.save(update_fields=["signing_secret", "signing_secret_previous", "signing_secret_previous_expires_at", "updated_at"])
