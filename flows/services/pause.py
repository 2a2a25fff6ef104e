"""Pausing a flow: its runs are still recorded (the webhook answers 202), but no worker claims them until it resumes.

The hold is one condition of the claim (flows/services/execution*.py: a run of a flow whose `paused_at` is set
is not claimable), so a run queued before the pause, a retry and a scheduled run all wait alike, and a run
already executing finishes. Resume rings the doorbell for the held runs, oldest first.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services import queue
from flows.services.concurrency import flow_run_waiting_by_key, run_control_waits

logger = logging.getLogger(__name__)

RELEASE_TASK = "flows.tasks.release_held_runs"
# What a queued run may wait for (flow_run_waiting).
WAITING_REASONS = ("flow_paused", "retry_backoff", "concurrency", "throttle", "worker")


def flow_pause(*, flow: Flow) -> Flow:
    """Hold the flow's runs from now on; pausing a paused flow keeps the time it was first paused."""
    now = timezone.now()
    Flow.objects.filter(pk=flow.pk, paused_at__isnull=True).update(paused_at=now)
    paused = Flow.objects.filter(pk=flow.pk).values_list("paused_at", flat=True)
    if not paused:  # deleted since it was looked up: as its lookup would now
        raise Http404(f"Flow {flow.pk} not found.")
    flow.paused_at = paused[0]
    logger.info("Flow paused", extra={"flow_id": flow.pk})
    return flow


def flow_resume(*, flow: Flow) -> int:
    """Let workers claim the flow's runs again, and ring for the held ones in the order they were received.

    Returns how many were rung here: the first page of them (flow_runs_release_page), so the request stays short.
    """
    resumed_at = timezone.now()
    if not Flow.objects.filter(pk=flow.pk, paused_at__isnull=False).update(paused_at=None, released_at=resumed_at):
        if not Flow.objects.filter(pk=flow.pk).exists():
            raise Http404(f"Flow {flow.pk} not found.")
        flow.paused_at = None
        return 0
    flow.paused_at = None
    released = flow_runs_release_page(flow_id=flow.pk, resumed_at=resumed_at)
    logger.info("Flow resumed; %d held runs released", released, extra={"flow_id": flow.pk})
    return released


def flow_runs_release_page(*, flow_id, resumed_at) -> int:
    """Ring for a page (LANGRUN_RELEASE_BATCH) of a resumed flow's held runs, oldest first; returns how many.

    When more may remain, the task that rings the next page is rung too, behind this page in the queue: the next
    page goes in once workers have taken this one, so runs that other accounts' webhooks ring meanwhile wait
    behind a page of this flow's backlog, not behind all of it.
    """
    released = flow_runs_release(flow_id=flow_id, resumed_at=resumed_at, limit=settings.LANGRUN_RELEASE_BATCH)
    more = released >= settings.LANGRUN_RELEASE_BATCH
    # While pages go on the sweep leaves the rest to them (FlowRun.objects.outside_releases); it takes over once they stop.
    Flow.objects.filter(pk=flow_id).update(released_at=timezone.now() if more else None)
    if more:
        _release_rest_later(flow_id=flow_id, resumed_at=resumed_at)
    return released


def flow_runs_release(*, flow_id, resumed_at, limit: int) -> int:
    """Ring for up to `limit` of the flow's queued runs not rung since it resumed (at `resumed_at`), oldest first;
    returns how many.

    A page of them is marked rung (`enqueued_at`) in one statement, its rows locked (a page another releaser or the
    sweep holds is skipped), before their doorbells: a run is never rung twice, whether by this task, a second one,
    or the sweep. Each gets the task its version needs, in its account's lane, as on intake. Runs waiting for a
    retry's backoff are left to the sweep, which rings them when their time comes.
    """
    released = 0
    page = settings.LANGRUN_RELEASE_BATCH
    while released < limit:
        if Flow.objects.filter(pk=flow_id, paused_at__isnull=False).exists():
            break  # paused again meanwhile: the rest stay held
        now = timezone.now()
        with transaction.atomic():
            held = list(
                FlowRun.objects.unfinished()
                .select_for_update(skip_locked=True)
                .filter(flow_id=flow_id, status=FlowRun.Status.QUEUED, enqueued_at__lt=resumed_at)
                .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
                .order_by("received_at", "id")
                .values_list(*queue.RING_FIELDS)[: min(page, limit - released)]
            )
            FlowRun.objects.filter(pk__in=[row[0] for row in held]).update(enqueued_at=now)
        if not held:
            break
        for row in held:
            queue.flow_run_ring(*row)
        released += len(held)
    return released


def flow_runs_held(*, run_ids) -> set[str]:
    """Of these runs, the queued ones whose flow is paused, as text ids: one query for a worker's whole batch.

    The worker leaves them as they are, as their claim would (resume rings for them), without a claim each: a paused
    flow that keeps receiving webhooks must not keep busy the workers that other flows' runs need.
    """
    if not run_ids:
        return set()
    held = FlowRun.objects.filter(pk__in=run_ids, status=FlowRun.Status.QUEUED, flow__paused_at__isnull=False)
    held = {str(pk) for pk in held.values_list("pk", flat=True)}
    if held:
        logger.info("Runs left queued, their flow paused: %d", len(held))
    return held


def _release_rest_later(*, flow_id, resumed_at) -> None:
    # In the lane of the flow's account, behind the page just rung there.
    account = Flow.objects.filter(pk=flow_id).values_list("user_id", flat=True).first()
    queue.task_enqueue(func=RELEASE_TASK, args=(str(flow_id), resumed_at.isoformat()), task_name=f"release-{flow_id}", account=account)


def flow_run_waiting(*, run: FlowRun, flow_paused: bool, flow: Flow | None = None) -> dict | None:
    """What a queued run waits for, `reason` (`flow_paused`, `retry_backoff`, `concurrency`, `throttle` or `worker`)
    and its details: a concurrency's key, limit and runs running, a throttle's key, limit, period and next possible
    start (flows/services/concurrency.py), a retry's time. None for a run that is not queued. The run's key is looked
    at only with its `flow`."""
    if run.status != FlowRun.Status.QUEUED:
        return None
    held = _held(run, flow_paused=flow_paused)
    if held is not None:
        return held
    wait = flow_run_waiting_by_key(run=run, flow=flow) if flow is not None else None
    return wait.as_dict() if wait is not None else {"reason": "worker"}


def flow_runs_waiting(*, runs: list[FlowRun]) -> dict:
    """flow_run_waiting for many runs (a page of the runs list), by run id, in a few queries whatever their number."""
    answers = {run.pk: None for run in runs}
    queued = [run for run in runs if run.status == FlowRun.Status.QUEUED]
    if not queued:
        return answers
    # The runs list annotates whether each run's flow is paused or limited (the runs API's queryset): the flows are
    # then read only for runs whose flow has a limit.
    read = {run.flow_id for run in queued if getattr(run, "flow_limited", True) or not hasattr(run, "flow_paused")}
    fields = ("paused_at", "max_concurrent_runs", "throttle_limit", "throttle_period")
    flows = Flow.objects.only(*fields).in_bulk(read) if read else {}
    keyed = []
    for run in queued:
        flow = flows.get(run.flow_id)  # none for a flow deleted since its runs were read: its runs wait for nothing more
        paused = run.flow_paused if hasattr(run, "flow_paused") else flow is not None and flow.paused_at is not None
        answers[run.pk] = _held(run, flow_paused=paused)
        if answers[run.pk] is None:
            keyed.append(run)
    waits = run_control_waits(runs=keyed, flows=flows)
    for run in keyed:
        wait = waits.get(run.pk)
        answers[run.pk] = wait.as_dict() if wait is not None else {"reason": "worker"}
    return answers


def _held(run: FlowRun, *, flow_paused: bool) -> dict | None:
    """What holds a queued run before any key is looked at: its flow's pause, then a retry's backoff."""
    if flow_paused:
        return {"reason": "flow_paused"}
    if run.next_attempt_at is not None and run.next_attempt_at > timezone.now():
        return {"reason": "retry_backoff", "next_attempt_at": run.next_attempt_at}
    return None
