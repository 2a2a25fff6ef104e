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
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from flows.metrics import metric_counters_add_many, runs_metric_samples
from flows.models import FlowRun
from flows.services.flows import deleted_despite_writers

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


# A run finishes after it is received, by the clocks of two machines that may differ a little.
_CLOCK_MARGIN = timedelta(hours=1)


def _ledger_batches(matching: Q, *, cutoff, batch: int):
    """The ids of the runs `matching` received before `cutoff`, oldest first, from `batch` runs at a time.

    The walk goes on from where the last batch stopped, in the order of the `received_at` index,
    with nothing but that range in its WHERE clause (the database tells which runs match, as a
    column), so a pass reads the ledger up to the cutoff once. Asking again for the first `batch`
    matching runs read, for every batch, each run that earlier batches left (a failure kept longer
    than successes, a payload cleared last week); a filter beside the range made PostgreSQL read
    all that was left up to the cutoff for every batch. A run finishes after it is received; the
    margin covers a worker's clock that runs behind the web's (a run further off waits for the next pass).
    """
    walk = (
        FlowRun.objects.filter(received_at__lt=cutoff + _CLOCK_MARGIN)
        .annotate(matches=ExpressionWrapper(matching, output_field=BooleanField()))
        .order_by("received_at")
    )
    last_at, seen_at_last = None, []
    while True:
        page = walk if last_at is None else walk.filter(received_at__gte=last_at).exclude(pk__in=seen_at_last)
        rows = list(page.values_list("received_at", "pk", "matches")[:batch])
        if not rows:
            return
        ids = [pk for _, pk, matches in rows if matches]
        if ids:
            yield ids
        if rows[-1][0] != last_at:
            last_at, seen_at_last = rows[-1][0], []
        seen_at_last += [pk for received_at, pk, _ in rows if received_at == last_at]  # runs received at the same instant


def _delete_in_batches(expired: Q, *, cutoff, batch: int, dry_run: bool) -> int:
    if dry_run:
        return FlowRun.objects.filter(expired).count()

    def delete(ids: list) -> int:
        # Locked by id before anything is collected, as a flow's delete and a replay batch lock runs: in the plan's
        # order (a large batch's is the table's) the delete and a replay batch of the same runs deadlocked, and
        # PostgreSQL aborted one of them. A replay committed meanwhile is then collected (its link cleared) too.
        locked = FlowRun.objects.select_for_update().filter(expired, pk__in=ids).order_by("pk").values_list("pk", flat=True)
        batch_qs = FlowRun.objects.filter(pk__in=list(locked))
        metric_counters_add_many(runs_metric_samples(batch_qs))
        # only("pk"): the deletion collector need not load bodies and payloads to cascade.
        return batch_qs.only("pk").delete()[1].get(FlowRun._meta.label, 0)

    deleted = 0
    for ids in _ledger_batches(expired, cutoff=cutoff, batch=batch):
        deleted += deleted_despite_writers(lambda ids=ids: delete(ids))
    return deleted


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

    Succeeded and filtered runs go after `succeeded_days`, failed and cancelled runs after
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
        # A filtered run is kept as long as a succeeded one: both were answered as the sender wished.
        expired = Q(status__in=[FlowRun.Status.SUCCEEDED, FlowRun.Status.FILTERED], finished_at__lt=cutoff)
        result.succeeded_runs = _delete_in_batches(expired, cutoff=cutoff, batch=batch, dry_run=dry_run)
        doomed |= expired
    if cutoff := _cutoff(failed_days):
        expired = Q(status__in=[FlowRun.Status.FAILED, FlowRun.Status.CANCELLED], finished_at__lt=cutoff)
        result.failed_runs = _delete_in_batches(expired, cutoff=cutoff, batch=batch, dry_run=dry_run)
        doomed |= expired
    if cutoff := _cutoff(payload_days):
        kept = Q(status__in=FlowRun.TERMINAL, finished_at__lt=cutoff, payload_pruned_at__isnull=True)
        if dry_run:
            result.payloads_cleared = FlowRun.objects.filter(kept).exclude(doomed).count()
        else:
            now = timezone.now()
            for ids in _ledger_batches(kept, cutoff=cutoff, batch=batch):
                result.payloads_cleared += FlowRun.objects.filter(kept, pk__in=ids).update(
                    body="", payload=None, request=None, request_variables="", payload_pruned_at=now
                )
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
