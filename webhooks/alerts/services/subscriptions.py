"""Subscriptions and callbacks: who is told about runs, where, and with which secret; the outbound address guard."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import DatabaseError, transaction
from django.http import Http404
from django.utils import timezone

from flows.engine.components.http import BlockedAddressError, vet_host
from flows.models import Flow, FlowRun
from flows.services.flows import flow_kept
from langrun.exceptions import RequestValidationError
from webhooks.alerts.models import CallbackSecret, RunCallback, Subscription

SECRET_PREFIX = "whsec_"


def alert_secret_new() -> str:
    """A Standard Webhooks secret: whsec_ and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def alert_url_check(*, url: str, loc: list) -> None:
    """422 at `loc` for a URL deliveries may not go to: not http(s), or a host that resolves to a private,
    loopback or link-local address not in LANGRUN_HTTP_ALLOWED_HOSTS (the HTTPRequest component's guard;
    the send checks the address again, on the connection itself)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RequestValidationError.single(loc, "Input should be a valid URL.", "url_parsing") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestValidationError.single(loc, "Input should be an http or https URL with a host.", "url_scheme")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise RequestValidationError.single(loc, "Input should be a valid URL.", "url_parsing") from None
    try:
        vet_host(parts.hostname, port, settings.LANGRUN_HTTP_ALLOWED_HOSTS)
    except BlockedAddressError as exc:
        raise RequestValidationError.single(loc, str(exc), "url_blocked") from None
    except (OSError, ValueError) as exc:  # no address, or a name no resolver takes
        raise RequestValidationError.single(loc, f"Cannot resolve the URL's host: {exc}", "url_unresolvable") from None


def subscription_create(
    *,
    user,
    events: list[str],
    url: str = "",
    email: str = "",
    flow: Flow | None = None,
    backlog_threshold: int | None = None,
    backlog_age_seconds: int | None = None,
    is_active: bool = True,
) -> Subscription:
    """A subscription with a new signing secret (the caller shows `subscription.secret` once); `is_active=False`
    records it paused. A flow deleted since it was looked up raises Http404."""
    if url:
        alert_url_check(url=url, loc=["body", "url"])
    with transaction.atomic():
        if flow is not None:
            flow_kept(flow=flow)
        return Subscription.objects.create(
            user=user,
            flow=flow,
            url=url,
            email=email,
            events=list(dict.fromkeys(events)),
            secret=alert_secret_new(),
            backlog_threshold=backlog_threshold,
            backlog_age_seconds=backlog_age_seconds,
            is_active=is_active,
        )


def subscription_update(*, subscription: Subscription, **fields) -> Subscription:
    """Change the given fields. A subscription deleted since it was looked up raises Http404 and is not written again,
    as does a new flow deleted since."""
    if fields.get("url"):
        alert_url_check(url=fields["url"], loc=["body", "url"])
    if "events" in fields:
        fields["events"] = list(dict.fromkeys(fields["events"]))
    for name, value in fields.items():
        setattr(subscription, name, value)
    try:
        with transaction.atomic():  # a savepoint: a caller's transaction stays usable when there is no row
            if fields.get("flow") is not None:  # a subscription naming a flow deleted meanwhile breaks its key at the commit
                flow_kept(flow=fields["flow"])
            subscription.save(update_fields=[*fields, "updated_at"])
    except DatabaseError:  # no row to update: deleted meanwhile
        if Subscription.objects.filter(pk=subscription.pk).exists():
            raise
        raise Http404(f"No {Subscription._meta.object_name} matches the given query.") from None
    return subscription


def subscription_secret_rotate(*, subscription: Subscription) -> str:
    """A new signing secret, effective at once (deliveries not yet sent are signed with it).

    A subscription deleted since it was looked up raises Http404, as its lookup would now."""
    secret, now = alert_secret_new(), timezone.now()
    if not Subscription.objects.filter(pk=subscription.pk).update(secret=secret, updated_at=now):
        raise Http404(f"No {Subscription._meta.object_name} matches the given query.")
    subscription.secret, subscription.updated_at = secret, now
    return secret


def callback_secret_rotate(*, user) -> str:
    """A new callback secret for the user (made on first use otherwise); the old one stops signing at once."""
    secret = alert_secret_new()
    CallbackSecret.objects.update_or_create(user=user, defaults={"secret": secret})
    return secret


def run_callback_set(*, run: FlowRun, url: str) -> None:
    """Record a run's callback URL (checked at intake with `alert_url_check`); the caller's callback secret is
    made on first use."""
    with transaction.atomic():
        RunCallback.objects.create(run=run, url=url)
        CallbackSecret.objects.get_or_create(user_id=run.user_id, defaults={"secret": alert_secret_new()})
