"""The alerts' sweep (every minute): send the deliveries that are due, watch flows' backlogs, forget old deliveries."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services.flows import flows_kept
from webhooks.alerts.models import Delivery, Subscription
from webhooks.alerts.services.outbox import _delivery, deliveries_enqueue

logger = logging.getLogger(__name__)

SWEEP_TASK = "webhooks.alerts.tasks.sweep"
SWEEP_SCHEDULE_NAME = "langrun-alerts-sweep"


def deliveries_send_due(*, limit: int = 1000) -> int:
    """Ring for every pending delivery whose time has come: a retry after its backoff, one whose task the broker
    lost, or one whose sender died (its lease passed). The claim lets only one sender through."""
    due = list(Delivery.objects.due(now=timezone.now()).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    return deliveries_enqueue(delivery_ids=[str(pk) for pk in due]) if due else 0


def flow_backlogs_check() -> int:
    """Fire `flow.backlog` for each subscription whose flow's queue crossed its thresholds, once per crossing:
    the alert re-arms when the backlog goes back under. Returns how many alerts were written."""
    subscriptions = [  # a small table, read whole: JSON containment is not portable across the databases
        sub
        for sub in Subscription.objects.filter(is_active=True)
        if Subscription.Event.FLOW_BACKLOG in sub.events and (sub.backlog_threshold is not None or sub.backlog_age_seconds is not None)
    ]
    if not subscriptions:
        return 0
    now = timezone.now()
    queued = {
        row["flow_id"]: row
        for row in FlowRun.objects.unfinished()
        .filter(status=FlowRun.Status.QUEUED, flow__user_id__in={sub.user_id for sub in subscriptions})
        .values("flow_id")
        .annotate(count=Count("pk"), oldest=Min("received_at"))
    }
    flows = dict(Flow.objects.filter(pk__in=queued).values_list("pk", "user_id"))
    names = dict(Flow.objects.filter(pk__in=queued).values_list("pk", "name"))
    fired = 0
    for sub in subscriptions:
        watched = [sub.flow_id] if sub.flow_id else [flow_id for flow_id, owner in flows.items() if owner == sub.user_id]
        alerting = set(sub.backlog_alerting)
        before = set(alerting)
        new = []
        for flow_id in watched:
            row = queued.get(flow_id)
            crossed = row is not None and _crossed(sub, row, now)
            if crossed and str(flow_id) not in alerting:
                alerting.add(str(flow_id))
                data = {
                    "flow_id": str(flow_id),
                    "flow_name": names.get(flow_id, ""),
                    "queued": row["count"],
                    "oldest_queued_at": row["oldest"].isoformat(),
                    "oldest_wait_seconds": round((now - row["oldest"]).total_seconds(), 1),
                    "backlog_threshold": sub.backlog_threshold,
                    "backlog_age_seconds": sub.backlog_age_seconds,
                }
                new.append(_delivery(sub=sub, run=None, event=Subscription.Event.FLOW_BACKLOG, data=data, now=now, flow_id=flow_id))
            elif not crossed:
                alerting.discard(str(flow_id))
        if sub.flow_id is None:  # flows of the owner with no queued run at all are under their thresholds
            alerting &= {str(flow_id) for flow_id in watched if flow_id in queued and _crossed(sub, queued[flow_id], now)}
        if alerting != before or new:
            fired += _backlog_alerts_record(sub=sub, alerting=alerting, new=new)
    return fired


def _backlog_alerts_record(*, sub: Subscription, alerting: set[str], new: list[Delivery]) -> int:
    """Store the subscription's crossings and write its alerts; how many were written."""
    with transaction.atomic():
        # Locked as a flow's delete locks them (the flow, then its subscriptions): a flow or subscription deleted since
        # they were read gets no alert, and one deleted now waits for this commit. An alert about either broke its
        # foreign keys at the commit, and the sweep failed for the subscriptions after it too.
        left = flows_kept(flow_ids=[d.flow_id for d in new])
        if not Subscription.objects.select_for_update().filter(pk=sub.pk).exists():
            return 0
        alerting = alerting - {str(d.flow_id) for d in new if d.flow_id not in left}
        new = [d for d in new if d.flow_id in left]
        Subscription.objects.filter(pk=sub.pk).update(backlog_alerting=sorted(alerting))
        Delivery.objects.bulk_create(new)
        ids = [str(d.pk) for d in new]
        transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=ids))
    return len(new)


def _crossed(sub: Subscription, row: dict[str, Any], now) -> bool:
    if sub.backlog_threshold is not None and row["count"] > sub.backlog_threshold:
        return True
    return sub.backlog_age_seconds is not None and (now - row["oldest"]).total_seconds() > sub.backlog_age_seconds


def deliveries_prune() -> int:
    """Delete finished deliveries kept longer than the runs they are about: delivered ones after
    LANGRUN_KEEP_SUCCEEDED_DAYS, failed ones after LANGRUN_KEEP_FAILED_DAYS (0: forever); one batch per sweep."""
    now, deleted = timezone.now(), 0
    for status, days in (
        (Delivery.Status.DELIVERED, settings.LANGRUN_KEEP_SUCCEEDED_DAYS),
        (Delivery.Status.FAILED, settings.LANGRUN_KEEP_FAILED_DAYS),
    ):
        if days <= 0:
            continue
        old = Delivery.objects.filter(status=status, finished_at__lt=now - timedelta(days=days)).values_list("pk", flat=True)
        ids = list(old[: settings.LANGRUN_PRUNE_BATCH])
        if ids:
            deleted += Delivery.objects.filter(pk__in=ids).delete()[0]
    return deleted


def alerts_sweep() -> dict[str, int]:
    return {"deliveries_rung": deliveries_send_due(), "backlog_alerts": flow_backlogs_check(), "deliveries_pruned": deliveries_prune()}


def alerts_sweep_schedule_ensure(sender=None, using: str = "default", **kwargs: Any) -> None:
    """Install the alerts' sweep as a django-q2 schedule (runs after every `migrate`)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={"func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
