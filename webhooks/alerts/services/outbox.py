"""The outbox: the deliveries a run's end makes, written in the transaction of its finish.

A run's finish asks `runs_wanting_events` first, which costs no query: the owners with subscriptions are
remembered per process (for INTEREST_SECONDS; a change in this process forgets them at once), and a run
with a callback URL says so in its recorded request. Only for those runs does the finish take a transaction
and call `run_events_record`, whose failure is logged and never fails the finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.urls import reverse
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services.queue import task_enqueue
from webhooks.alerts.models import Delivery, RunCallback, Subscription

logger = logging.getLogger(__name__)

DELIVER_TASK = "webhooks.alerts.tasks.deliver"
# The query parameter of a webhook request that names its callback; the recorded request keeps it masked.
CALLBACK_PARAM = "callback_url"
# How long a process trusts its list of the owners with subscriptions (another process's change shows up within it).
INTEREST_SECONDS = 5.0

_interest: dict[str, Any] = {"owners": frozenset(), "at": None}
_interest_lock = threading.Lock()


def _subscribed_owners() -> frozenset:
    now = time.monotonic()
    at = _interest["at"]
    if at is None or now - at > INTEREST_SECONDS:
        with _interest_lock:
            if _interest["at"] is None or now - _interest["at"] > INTEREST_SECONDS:
                owners = Subscription.objects.filter(is_active=True).order_by().values_list("user_id", flat=True).distinct()
                _interest["owners"] = frozenset(owners)
                _interest["at"] = now
    return _interest["owners"]


def interest_forget(**_) -> None:
    """Forget the remembered owners (a subscription of this process changed)."""
    _interest["at"] = None


def interest_signals_connect() -> None:
    post_save.connect(interest_forget, sender=Subscription, dispatch_uid="alerts_interest_saved")
    post_delete.connect(interest_forget, sender=Subscription, dispatch_uid="alerts_interest_deleted")


def run_has_callback(run: FlowRun) -> bool:
    """Whether the run's request named a callback URL (its masked record keeps the parameter's name)."""
    request = run.request
    return isinstance(request, dict) and CALLBACK_PARAM in (request.get("query") or {})


def runs_wanting_events(runs: Iterable[FlowRun]) -> set[str]:
    """The ids (text) of the runs whose end someone wants to hear of: no query, except once per INTEREST_SECONDS."""
    runs = list(runs)
    if not runs:
        return set()
    owners = _subscribed_owners()
    return {str(run.pk) for run in runs if (owners and _owner_id(run) in owners) or run_has_callback(run)}


def _owner_id(run: FlowRun):
    flow = run._state.fields_cache.get("flow")
    return flow.user_id if flow is not None else Flow.objects.filter(pk=run.flow_id).values_list("user_id", flat=True).first()


def run_status_path(run_id) -> str:
    return reverse("flowrun-detail", kwargs={"pk": run_id})


def run_status_url(run_id) -> str:
    """The run's status URL as a receiver reaches it: LANGRUN_PUBLIC_URL and the run's path."""
    return settings.LANGRUN_PUBLIC_URL.rstrip("/") + run_status_path(run_id)


def run_events(*, run: FlowRun, status: str) -> list[str]:
    """The events a run's end makes: `run.succeeded`, or `run.failed` (and `run.retries_exhausted` when the flow
    allows retries and this was its last attempt)."""
    if status == FlowRun.Status.SUCCEEDED:
        return [Subscription.Event.RUN_SUCCEEDED]
    if status != FlowRun.Status.FAILED:
        return []
    events = [Subscription.Event.RUN_FAILED]
    max_attempts = run.flow.max_attempts
    if max_attempts > 1 and run.attempts >= max_attempts:
        events.append(Subscription.Event.RUN_RETRIES_EXHAUSTED)
    return events


def event_payload(*, event: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": event, "timestamp": timezone.now().isoformat(), "data": data}


def run_events_record(*, ends: list[tuple[FlowRun, str, str]]) -> list[Delivery]:
    """Write the deliveries of runs that just ended, given as (run, status, error), in the caller's transaction.

    Called by the finish, within its transaction, for the runs `runs_wanting_events` named. A failure here
    is logged and swallowed (in a savepoint): an alert never changes a run's outcome.
    """
    try:
        with transaction.atomic():
            deliveries = _deliveries_for(ends)
            if deliveries:
                Delivery.objects.bulk_create(deliveries, ignore_conflicts=True)
                _references_checked_now()
    except Exception:
        logger.exception("The alerts of %d ended runs could not be recorded", len(ends))
        return []
    if deliveries:
        ids = [str(d.pk) for d in deliveries]
        transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=ids))
    return deliveries


def _references_checked_now() -> None:
    """Check the deliveries' references here, in their savepoint, rather than when the finish commits (PostgreSQL
    defers foreign key checks to the commit): a subscription deleted meanwhile then costs the run its alert only, not
    its outcome. The check holds the subscription's row until the commit, and its delete waits (Subscription.delete)."""
    if connection.vendor == "postgresql":
        connection.check_constraints()


def run_ended(*, run_id) -> list[Delivery]:
    """run_events_record for one run read from the ledger (the sweep failing an interrupted run)."""
    run = FlowRun.objects.select_related("flow").filter(pk=run_id).first()
    if run is None or not runs_wanting_events([run]):
        return []
    return run_events_record(ends=[(run, run.status, run.error)])


def _deliveries_for(ends: list[tuple[FlowRun, str, str]]) -> list[Delivery]:
    owners = {_owner_id(run) for run, _, _ in ends}
    flow_ids = {run.flow_id for run, _, _ in ends}
    subscriptions = list(
        Subscription.objects.filter(user_id__in=owners, is_active=True).filter(Q(flow__isnull=True) | Q(flow_id__in=flow_ids))
    )
    callbacks = dict(
        RunCallback.objects.filter(run_id__in=[run.pk for run, _, _ in ends if run_has_callback(run)]).values_list("run_id", "url")
    )
    if not subscriptions and not callbacks:
        return []
    names = dict(Flow.objects.filter(pk__in=flow_ids).values_list("pk", "name"))
    deliveries = []
    now = timezone.now()
    for run, status, error in ends:
        events = run_events(run=run, status=status)
        data = {
            "run_id": str(run.pk),
            "flow_id": str(run.flow_id),
            "flow_name": names.get(run.flow_id, ""),
            "status": status,
            "error": error or "",
            "attempts": run.attempts,
            "status_url": run_status_url(run.pk),
        }
        owner = _owner_id(run)
        for sub in subscriptions:
            if sub.user_id != owner or (sub.flow_id is not None and sub.flow_id != run.flow_id):
                continue
            for event in events:
                if event in sub.events:
                    deliveries.append(_delivery(sub=sub, run=run, event=event, data=data, now=now))
        if run.pk in callbacks and events:
            deliveries.append(
                Delivery(
                    user_id=run.user_id, kind=Delivery.Kind.CALLBACK, run=run, flow_id=run.flow_id, event=events[0], url=callbacks[run.pk],
                    payload=event_payload(event=events[0], data=data), next_attempt_at=now,
                )
            )  # fmt: skip
    return deliveries


def _delivery(*, sub: Subscription, run: FlowRun | None, event: str, data: dict, now, flow_id=None) -> Delivery:
    return Delivery(
        user_id=sub.user_id,
        subscription=sub,
        run=run,
        flow_id=run.flow_id if run is not None else flow_id,
        event=event,
        url=sub.url,
        email=sub.email,
        payload=event_payload(event=event, data=data),
        next_attempt_at=now,
    )


def deliveries_enqueue(*, delivery_ids: list[str]) -> int:
    """Ring for each delivery's send; one the broker refuses is sent by the sweep once due."""
    return sum(task_enqueue(func=DELIVER_TASK, args=(delivery_id,), task_name=f"delivery-{delivery_id}") for delivery_id in delivery_ids)
