"""Webhook signatures: a flow's signing secrets, and checking a request signed with one.

Without a preset: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) or GitHub's
`X-Hub-Signature-256`. A flow's `verification` preset picks one scheme: standard, github, stripe, slack, shopify
or token (flows/services/webhook_settings.py). Every comparison is constant-time, on the raw body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from datetime import timedelta
from urllib.parse import parse_qs

import standardwebhooks
from django.conf import settings
from django.db import transaction
from django.http import Http404
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


# The headers each scheme signs with (CGI names), and the timestamp tolerance of those that have one (seconds).
SIGNATURE_HEADERS = {
    "standard": ("HTTP_WEBHOOK_SIGNATURE",),
    "github": ("HTTP_X_HUB_SIGNATURE_256",),
    "stripe": ("HTTP_STRIPE_SIGNATURE",),
    "slack": ("HTTP_X_SLACK_SIGNATURE",),
    "shopify": ("HTTP_X_SHOPIFY_HMAC_SHA256",),
}
STRIPE_TOLERANCE = 300  # Stripe's SDKs' default
SLACK_TOLERANCE = 300  # Slack: "more than five minutes" is a replay
_ANY_SIGNATURE = tuple(h for names in SIGNATURE_HEADERS.values() for h in names)


def webhook_is_signed(*, headers) -> bool:
    return any(headers.get(h) for h in _ANY_SIGNATURE)


def webhook_signature_header_names(*, flow: Flow) -> tuple[str, ...]:
    """The lower-case names of the headers that carry the flow's signature (or token): masked in its record."""
    preset = flow.verification_settings
    if preset is None:
        names = (*SIGNATURE_HEADERS["standard"], *SIGNATURE_HEADERS["github"]) if flow.signing_secret else ()
    elif preset["provider"] == "token":
        return (preset["header"].lower(),) if "header" in preset else ()
    else:
        names = SIGNATURE_HEADERS[preset["provider"]]
    return tuple(n[5:].replace("_", "-").lower() for n in names)


def webhook_signature_holds(flow: Flow, *, body: bytes, headers) -> bool:
    """Whether the request is signed with one of the flow's secrets (webhook_signature_verify, as a yes or no)."""
    try:
        webhook_signature_verify(flow=flow, body=body, headers=headers)
    except InvalidSignature:
        return False
    return True


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
    preset = flow.verification_settings
    if preset is not None:
        provider = preset["provider"]
        if provider != "token" and not any(headers.get(h) for h in SIGNATURE_HEADERS[provider]):
            raise InvalidSignature(SIGNATURE_REQUIRED)
        if not _VERIFIERS[provider](secrets=secrets_, body=body, headers=headers, preset=preset):
            raise InvalidSignature()
        return
    if not (headers.get("HTTP_WEBHOOK_SIGNATURE") or headers.get("HTTP_X_HUB_SIGNATURE_256")):
        raise InvalidSignature(SIGNATURE_REQUIRED)
    if headers.get("HTTP_WEBHOOK_SIGNATURE"):
        verified = standard_verify(secrets=secrets_, body=body, headers=headers)
    else:
        verified = github_verify(secrets=secrets_, body=body, headers=headers)
    if not verified:
        raise InvalidSignature()


def standard_verify(*, secrets: list[str], body: bytes, headers, **_) -> bool:
    """Standard Webhooks, by the `standardwebhooks` library (5 minutes of tolerance; several signatures)."""
    entries = [e for e in headers.get("HTTP_WEBHOOK_SIGNATURE", "").split(" ") if _SIGNATURE_ENTRY.match(e)]
    swh_headers = {
        "webhook-id": headers.get("HTTP_WEBHOOK_ID", ""),
        "webhook-timestamp": headers.get("HTTP_WEBHOOK_TIMESTAMP", ""),
        "webhook-signature": " ".join(entries),
    }
    for secret in secrets:
        try:
            standardwebhooks.Webhook(secret).verify(body, swh_headers, json_parse=False)
        except Exception:  # noqa: S112 - every failure (bad header, encoding, timestamp, mismatch) is "not this secret"
            continue
        return True
    return False


def github_verify(*, secrets: list[str], body: bytes, headers, **_) -> bool:
    """GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, keyed with the secret as written."""
    github = headers.get("HTTP_X_HUB_SIGNATURE_256", "")
    given = github[len("sha256=") :].strip().lower() if github.startswith("sha256=") else ""
    return any(_equal(hmac.new(s.encode(), body, hashlib.sha256).hexdigest(), given) for s in secrets)


def stripe_verify(*, secrets: list[str], body: bytes, headers, now: float | None = None, **_) -> bool:
    """Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 of `<t>.<body>` keyed with the whole
    `whsec_…` secret; any v1 may match; `t` within STRIPE_TOLERANCE of now."""
    timestamp, given = None, []
    for item in headers.get("HTTP_STRIPE_SIGNATURE", "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            given.append(value.lower())
    if not _fresh(timestamp, STRIPE_TOLERANCE, now) or not given:
        return False
    signed = timestamp.encode() + b"." + body
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return any(_equal(e, g) for e in expected for g in given)


def slack_verify(*, secrets: list[str], body: bytes, headers, now: float | None = None, **_) -> bool:
    """Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">` with `X-Slack-Request-Timestamp`
    within SLACK_TOLERANCE of now."""
    timestamp = headers.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
    given = headers.get("HTTP_X_SLACK_SIGNATURE", "")
    if not _fresh(timestamp, SLACK_TOLERANCE, now) or not given.startswith("v0="):
        return False
    signed = b"v0:" + timestamp.encode() + b":" + body
    return any(_equal("v0=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest(), given.lower()) for s in secrets)


def shopify_verify(*, secrets: list[str], body: bytes, headers, **_) -> bool:
    """Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>` keyed with the app's secret (no timestamp)."""
    given = headers.get("HTTP_X_SHOPIFY_HMAC_SHA256", "").strip()
    return any(_equal(base64.b64encode(hmac.new(s.encode(), body, hashlib.sha256).digest()).decode(), given) for s in secrets)


def token_verify(*, secrets: list[str], headers, preset: dict, **_) -> bool:
    """A shared token, as sent, in the header or query parameter the preset names."""
    if "header" in preset:
        given = headers.get("HTTP_" + preset["header"].upper().replace("-", "_"), "")
    else:
        values = parse_qs(headers.get("QUERY_STRING", ""), keep_blank_values=True).get(preset["query"]) or [""]
        given = values[0]
    return bool(given) and any(_equal(s, given) for s in secrets)


def _equal(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def _fresh(timestamp: str | None, tolerance: int, now: float | None) -> bool:
    try:
        seconds = int(timestamp or "")
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - seconds) <= tolerance


_VERIFIERS = {
    "standard": standard_verify,
    "github": github_verify,
    "stripe": stripe_verify,
    "slack": slack_verify,
    "shopify": shopify_verify,
    "token": token_verify,
}


def webhook_signing_secrets(*, flow: Flow) -> list[str]:
    secrets_ = [flow.signing_secret] if flow.signing_secret else []
    if flow.signing_secret_previous:  # its expiry is read only then (the webhook's lookup defers it)
        try:
            expires = flow.signing_secret_previous_expires_at
        except Flow.DoesNotExist:  # a remembered flow deleted since: its run's INSERT finds out, and the lookup answers
            expires = None
        if expires and expires > timezone.now():
            secrets_.append(flow.signing_secret_previous)
    return secrets_


def webhook_signing_secret_rotate(*, flow: Flow, grace_seconds: int | None = None) -> str:
    """Give the flow a new signing secret and return it (the only time it is shown).

    The previous secret, if any, is still accepted for `grace_seconds`
    (LANGRUN_SIGNING_SECRET_GRACE by default; 0 revokes it at once).
    """
    secret = SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    webhook_signing_secret_set(flow=flow, secret=secret, grace_seconds=grace_seconds)
    return secret


def webhook_signing_secret_set(*, flow: Flow, secret: str, grace_seconds: int | None = None) -> None:
    """Make `secret` the flow's signing secret: one its provider issued (Stripe, Slack, Shopify), or a token.

    Rotates as webhook_signing_secret_rotate does: the previous secret stays valid for the grace period.
    """
    if grace_seconds is None:
        grace_seconds = settings.LANGRUN_SIGNING_SECRET_GRACE
    with transaction.atomic():
        # The secret it replaces is the one stored now (a rotation meanwhile is not undone), of a flow that still is.
        current = Flow.objects.select_for_update().filter(pk=flow.pk).values_list("signing_secret", flat=True)
        if not current:
            raise Http404(f"Flow {flow.pk} not found.")
        flow.signing_secret = current[0]
        now = timezone.now()
        if flow.signing_secret and grace_seconds > 0:
            flow.signing_secret_previous = flow.signing_secret
            flow.signing_secret_previous_expires_at = now + timedelta(seconds=grace_seconds)
        else:
            flow.signing_secret_previous, flow.signing_secret_previous_expires_at = "", None
        flow.signing_secret = secret
        flow.save(update_fields=["signing_secret", "signing_secret_previous", "signing_secret_previous_expires_at", "updated_at"])


def webhook_signing_secret_remove(*, flow: Flow) -> None:
    """Stop requiring signatures for the flow (forget both secrets, the preset and Meta's handshake that need them)."""
    with transaction.atomic():
        # The handshakes are those stored now, under the lock a flow's update takes: none it saved meanwhile is lost,
        # and no Meta handshake outlives the secret it checks against.
        handshakes = Flow.objects.select_for_update().filter(pk=flow.pk).values_list("handshakes", flat=True)
        if not handshakes:
            raise Http404(f"Flow {flow.pk} not found.")
        flow.signing_secret, flow.signing_secret_previous, flow.signing_secret_previous_expires_at = "", "", None
        flow.verification = ""
        flow.handshakes = ",".join(h for h in handshakes[0].split(",") if h and h != "meta")
        fields = ["signing_secret", "signing_secret_previous", "signing_secret_previous_expires_at", "verification", "handshakes"]
        flow.save(update_fields=[*fields, "updated_at"])
