"""Sending a delivery: claim it, POST it signed (or mail it), record the attempt, and retry later with backoff.

A claim is a conditional update that moves `next_attempt_at` past the attempt's timeout: only one sender holds
a delivery at a time, and one whose sender died is due again once that lease has passed (the sweep sends it).

In a cluster's worker process a delivery is sent on a thread of the process's own (delivery_send_aside), and its
task returns at once: a receiver that answers slowly, or not at all, holds one of those threads, not the worker,
whose next task may be any account's run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from multiprocessing.util import Finalize

import standardwebhooks
from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.http import Http404
from django.utils import timezone

from flows.engine.components.http import guarded_session
from flows.services.inflight import in_worker
from flows.services.queue import call_later
from webhooks.alerts.exceptions import DeliveryBeingSent
from webhooks.alerts.models import CallbackSecret, Delivery
from webhooks.alerts.services.outbox import deliveries_enqueue

logger = logging.getLogger(__name__)

# A claimed attempt holds its delivery for its timeout plus this, before the sweep may send it again.
LEASE_MARGIN = 30
USER_AGENT = "langrun-alerts"
# A worker process's threads sending deliveries, and how many more may wait for one; past them a delivery is left
# pending and due, for the alerts' sweep (every minute), so that receivers that do not answer never hold the worker.
SENDERS = 8
WAITING_SENDS = 4 * SENDERS


def delivery_backoff(*, attempt: int) -> timedelta:
    """Wait after failed attempt `attempt`: LANGRUN_ALERTS_BACKOFF doubled each time, at most an hour."""
    return timedelta(seconds=min(3600, settings.LANGRUN_ALERTS_BACKOFF * 2 ** max(attempt - 1, 0)))


def delivery_claim(*, delivery_id) -> Delivery | None:
    """Take a due pending delivery for one attempt; None when it is not due or someone else took it."""
    now = timezone.now()
    delivery = Delivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Delivery.Status.PENDING or (delivery.next_attempt_at and delivery.next_attempt_at > now):
        return None
    lease = now + timedelta(seconds=settings.LANGRUN_ALERTS_TIMEOUT + LEASE_MARGIN)
    taken = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING, attempt_count=delivery.attempt_count).update(
        next_attempt_at=lease, attempt_count=delivery.attempt_count + 1
    )
    if taken != 1:
        return None
    delivery.attempt_count += 1
    return delivery


_senders: ThreadPoolExecutor | None = None
_sends = 0  # handed to the senders, not yet done
_sends_lock = threading.Lock()


def delivery_send_aside(*, delivery_id) -> bool:
    """In a cluster's worker process: hand the delivery to the process's sender threads and return at once (True).
    Elsewhere (django-q2's sync mode, an operator's call) False: the caller sends it itself."""
    global _sends
    if not in_worker():
        return False
    with _sends_lock:
        if _sends >= SENDERS + WAITING_SENDS:
            logger.warning("Every alert sender is busy; delivery %s is sent by the sweep once due", delivery_id)
            return True
        _sends += 1
    try:
        _senders_of_this_process().submit(_send_aside, delivery_id)
    except RuntimeError:  # no thread to be had, or the process is stopping: the sweep sends it
        with _sends_lock:
            _sends -= 1
        logger.warning("Could not hand delivery %s to a sender; the sweep sends it once due", delivery_id)
    return True


def _senders_of_this_process() -> ThreadPoolExecutor:
    global _senders
    if _senders is None:
        _senders = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="langrun-alerts")
        # When the worker process ends, the sends under way get their timeout to finish; those waiting are dropped
        # (still pending and due: the sweep sends them). multiprocessing runs its finalizers there, not atexit's.
        Finalize(_senders, _senders.shutdown, kwargs={"wait": True, "cancel_futures": True}, exitpriority=90)
    return _senders


def _send_aside(delivery_id: str) -> None:
    global _sends
    try:
        delivery_send(delivery_id=delivery_id)
    except Exception:
        logger.exception("Delivery %s failed to send; it is due again once its lease has passed", delivery_id)
    finally:
        connection.close()  # the sender thread's own connection, not kept between deliveries
        with _sends_lock:
            _sends -= 1


def delivery_send(*, delivery_id) -> Delivery | None:
    """One attempt at a delivery, recorded; the delivery as it now stands, or None when it was not ours to send."""
    delivery = delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return None
    started = time.monotonic()
    code, error = None, ""
    if delivery.kind == Delivery.Kind.SUBSCRIPTION and delivery.subscription_id is None:
        # Its subscription was deleted: nobody is to be told any more, and no retry will change that.
        attempt = {"number": delivery.attempt_count, "at": timezone.now().isoformat(), "status_code": None, "duration_ms": 0.0}
        return _delivery_record(delivery, {**attempt, "error": "Its subscription was deleted."}, last=True)
    try:
        if delivery.email:
            _mail(delivery)
        else:
            code = _post(delivery)
            if not 200 <= code < 300:
                error = f"HTTP {code}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000] or type(exc).__name__
    attempt = {
        "number": delivery.attempt_count,
        "at": timezone.now().isoformat(),
        "status_code": code,
        "error": error,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return _delivery_record(delivery, attempt)


def _delivery_record(delivery: Delivery, attempt: dict, *, last: bool = False) -> Delivery:
    """Record the attempt under the delivery's claim; a failed one is retried later unless it is the `last`."""
    now = timezone.now()
    fields = {"attempts": [*delivery.attempts, attempt]}
    if not attempt["error"]:
        fields.update(status=Delivery.Status.DELIVERED, finished_at=now, next_attempt_at=None)
    elif last or delivery.attempt_count - delivery.round_start >= settings.LANGRUN_ALERTS_MAX_ATTEMPTS:
        fields.update(status=Delivery.Status.FAILED, finished_at=now, next_attempt_at=None)
        logger.warning(
            "Delivery %s of %s failed after %d attempts: %s", delivery.pk, delivery.event, delivery.attempt_count, attempt["error"]
        )
    else:
        fields.update(next_attempt_at=now + delivery_backoff(attempt=delivery.attempt_count - delivery.round_start))
    # Under the same claim only: a sender whose lease ran out (and whose delivery was taken again) writes nothing.
    Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING, attempt_count=delivery.attempt_count).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)
    if delivery.status == Delivery.Status.PENDING:
        _ring_later(str(delivery.pk), (delivery.next_attempt_at - now).total_seconds())
    return delivery


def _ring_later(delivery_id: str, seconds: float) -> None:
    """Ring again when the backoff ends, from the process's timer thread; should the process end first, the sweep
    (every minute) sends the delivery once due."""
    call_later(delay=seconds, func=lambda: deliveries_enqueue(delivery_ids=[delivery_id]))


def delivery_signing_secret(delivery: Delivery) -> str:
    """A subscription's own secret; for a run's callback, its caller's callback secret."""
    if delivery.kind == Delivery.Kind.CALLBACK:
        return CallbackSecret.objects.get(user_id=delivery.user_id).secret
    return delivery.subscription.secret


def delivery_body(delivery: Delivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()


def delivery_headers(delivery: Delivery, body: bytes) -> dict[str, str]:
    """Standard Webhooks' headers: the delivery's id (the same on every attempt), the time, the signature."""
    now = timezone.now()
    signature = standardwebhooks.Webhook(delivery_signing_secret(delivery)).sign(delivery.webhook_id, now, body.decode())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def _post(delivery: Delivery) -> int:
    body = delivery_body(delivery)
    headers = delivery_headers(delivery, body)
    timeout = settings.LANGRUN_ALERTS_TIMEOUT

    async def post() -> int:
        # The HTTPRequest component's client: the same refusal of private and loopback addresses.
        async with guarded_session(allowed_hosts=settings.LANGRUN_HTTP_ALLOWED_HOSTS) as session:
            async with asyncio.timeout(timeout):
                async with session.post(delivery.url, data=body, headers=headers, allow_redirects=False) as response:
                    return response.status

    return asyncio.run(post())


def _mail(delivery: Delivery) -> None:
    data = delivery.payload.get("data", {})
    subject = f"[langrun] {delivery.event}: {data.get('flow_name') or data.get('flow_id', '')}"
    subject = " ".join(subject.split())  # a flow's name may hold line breaks, which no mail header may
    send_mail(subject, json.dumps(delivery.payload, indent=2), None, [delivery.email], fail_silently=False)


def delivery_retry_now(*, delivery: Delivery) -> Delivery:
    """Send a pending or failed delivery again now (the admin's and the API's "retry now"); a failed one gets
    a fresh round of attempts, under the same webhook-id. A delivered one is returned as it is.

    DeliveryBeingSent when its send is already due or under way (a retry just asked for, an attempt claimed): it is
    sent once, not once per click.
    """
    with transaction.atomic():
        # Locked: a second retry waits for this one, then finds the delivery due and is refused.
        current = Delivery.objects.select_for_update().filter(pk=delivery.pk).first()
        now = timezone.now()
        if current is None:  # deleted since it was looked up (retention, its run deleted): as its lookup would now
            raise Http404(f"No {Delivery._meta.object_name} matches the given query.")
        if current.status == Delivery.Status.DELIVERED:
            return current
        if current.status == Delivery.Status.PENDING and delivery_being_sent(current, now=now):
            raise DeliveryBeingSent(f"Delivery {current.pk} is already being sent; it is not sent again until this attempt ends.")
        fields = {"status": Delivery.Status.PENDING, "next_attempt_at": now, "finished_at": None}
        if current.status == Delivery.Status.FAILED:
            fields["round_start"] = current.attempt_count
        elif _claim_unrecorded(current):  # its sender stopped past its lease: the attempt is recorded as lost
            lost = {"number": current.attempt_count, "at": now.isoformat(), "status_code": None, "duration_ms": 0.0}
            fields["attempts"] = [*current.attempts, {**lost, "error": "Its sender stopped before the attempt ended."}]
        Delivery.objects.filter(pk=current.pk).update(**fields)
        transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=[str(current.pk)]))
    for name, value in fields.items():
        setattr(current, name, value)
    return current


def delivery_being_sent(delivery: Delivery, *, now) -> bool:
    """Whether a pending delivery's send is due (rung, or left to the sweep) or claimed and not yet recorded.

    Each claim adds one to `attempt_count`, which never goes back, and its record adds the attempt numbered so: a
    last attempt numbered otherwise is one claimed and still under way, within its lease (a sender may take that long);
    past its lease, its sender died.
    """
    if delivery.next_attempt_at is None or delivery.next_attempt_at <= now:
        # Due; but a claim still unrecorded once its lease has passed lost its sender: nobody sends it until the sweep
        # comes, and a retry may send it now (the claim still lets one sender through).
        return not _claim_unrecorded(delivery)
    return not _last_claim_recorded(delivery)


def _claim_unrecorded(delivery: Delivery) -> bool:
    """Whether this round's last claim has no recorded attempt (a retry of a failed delivery starts a round unclaimed)."""
    return delivery.attempt_count > delivery.round_start and not _last_claim_recorded(delivery)


def _last_claim_recorded(delivery: Delivery) -> bool:
    last = delivery.attempts[-1].get("number") if delivery.attempts else 0
    return last == delivery.attempt_count
