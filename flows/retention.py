"""Retention: delete old runs, clear old raw payloads, and keep django-q2's own tables bounded.

Deletes run in small batches, each its own short transaction, so the ledger
is never locked for long while webhooks keep writing to it. What the deleted
runs added to the Prometheus counters is folded into `MetricCounter` first,
so the counters never go down.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from flows.metrics import metric_counters_add_many, runs_metric_samples
from flows.models import FlowRun

logger = logging.getLogger(__name__)

PRUNE_TASK = "flows.tasks.prune"
PRUNE_SCHEDULE_NAME = "langrun-prune"


@dataclass
class PruneResult:
    succeeded_runs: int = 0
    failed_runs: int = 0
    payloads_cleared: int = 0
    queue_tasks: int = 0
    queue_leftovers: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cutoff(days: int):
    return timezone.now() - timedelta(days=days) if days > 0 else None


def _delete_in_batches(qs, *, batch: int, dry_run: bool) -> int:
    if dry_run:
        return qs.count()
    deleted = 0
    while True:
        ids = list(qs.order_by("received_at").values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        with transaction.atomic():
            batch_qs = FlowRun.objects.filter(pk__in=ids)
            metric_counters_add_many(runs_metric_samples(batch_qs))
            # only("pk"): the deletion collector need not load bodies and payloads to cascade.
            batch_qs.only("pk").delete()
        deleted += len(ids)


def runs_prune(
    *,
    succeeded_days: int | None = None,
    failed_days: int | None = None,
    payload_days: int | None = None,
    tasks_days: int | None = None,
    batch: int | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Apply the retention settings (or these overrides); `dry_run` only counts. 0 days keeps forever.

    Succeeded runs go after `succeeded_days`, failed and cancelled runs after
    `failed_days` (both by when they finished); the raw body and parsed payload of
    any finished run still kept is cleared after `payload_days`.
    """
    s = settings
    succeeded_days = s.LANGRUN_KEEP_SUCCEEDED_DAYS if succeeded_days is None else succeeded_days
    failed_days = s.LANGRUN_KEEP_FAILED_DAYS if failed_days is None else failed_days
    payload_days = s.LANGRUN_KEEP_PAYLOAD_DAYS if payload_days is None else payload_days
    tasks_days = s.LANGRUN_KEEP_TASKS_DAYS if tasks_days is None else tasks_days
    batch = batch or s.LANGRUN_PRUNE_BATCH
    result = PruneResult(dry_run=dry_run)

    doomed = Q(pk__in=[])
    if cutoff := _cutoff(succeeded_days):
        expired = Q(status=FlowRun.Status.SUCCEEDED, finished_at__lt=cutoff)
        result.succeeded_runs = _delete_in_batches(FlowRun.objects.filter(expired), batch=batch, dry_run=dry_run)
        doomed |= expired
    if cutoff := _cutoff(failed_days):
        expired = Q(status__in=[FlowRun.Status.FAILED, FlowRun.Status.CANCELLED], finished_at__lt=cutoff)
        result.failed_runs = _delete_in_batches(FlowRun.objects.filter(expired), batch=batch, dry_run=dry_run)
        doomed |= expired
    if cutoff := _cutoff(payload_days):
        qs = FlowRun.objects.filter(status__in=FlowRun.TERMINAL, finished_at__lt=cutoff, payload_pruned_at__isnull=True)
        if dry_run:
            result.payloads_cleared = qs.exclude(doomed).count()
        else:
            now = timezone.now()
            while ids := list(qs.values_list("pk", flat=True)[:batch]):
                result.payloads_cleared += FlowRun.objects.filter(pk__in=ids).update(body="", payload=None, payload_pruned_at=now)
    if cutoff := _cutoff(tasks_days):
        result.queue_tasks, result.queue_leftovers = _queue_tables_prune(cutoff=cutoff, dry_run=dry_run)
    logger.info(
        "Retention%s: %d succeeded and %d failed runs deleted, %d payloads cleared, %d queue tasks and %d broker leftovers removed",
        " (dry run)" if dry_run else "",
        result.succeeded_runs,
        result.failed_runs,
        result.payloads_cleared,
        result.queue_tasks,
        result.queue_leftovers,
    )
    return result


def _queue_tables_prune(*, cutoff, dry_run: bool) -> tuple[int, int]:
    """django-q2's task results (failures are always saved) and, with the database broker, deliveries never acknowledged.

    A run whose task row is removed here is not lost: the ledger still says `queued` and the sweep enqueues it again.
    """
    from django_q.models import OrmQ, Task

    tasks = Task.objects.filter(stopped__lt=cutoff)
    leftovers = OrmQ.objects.filter(lock__lt=cutoff)
    if dry_run:
        return tasks.count(), leftovers.count()
    return tasks.delete()[0], leftovers.delete()[0]


def prune_schedule_ensure(sender=None, using: str = "default", **kwargs: Any) -> None:
    """Install the daily retention run as a django-q2 schedule (runs after every `migrate`)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=PRUNE_SCHEDULE_NAME, defaults={"func": PRUNE_TASK, "schedule_type": Schedule.DAILY, "repeats": -1}
    )
