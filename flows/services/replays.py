"""Bulk replay: a background job replaying the runs that match a filter, in batches, at a bounded rate.

A request only counts the matching runs and records a ReplayJob; a django-q2 task (`flows.tasks.replay_job_step`)
replays one batch and rings for the next step, which takes its turn in the queue behind the batch: no request and no
task runs long, other accounts' runs wait behind a batch of the job rather than all of it, and LANGRUN_REPLAY_RATE
bounds how fast replays reach the queue. Each batch's replays are committed with the job's counters and position;
`step` fences a doorbell rung twice (the sweep rings again for a job whose step is late, or whose worker died).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from flows.exceptions import FlowsError
from flows.models import FlowRun, ReplayJob
from flows.services import queue
from flows.services.flows import flows_kept
from flows.services.runs import flow_run_replay

logger = logging.getLogger(__name__)

STEP_TASK = "flows.tasks.replay_job_step"
FILTERS = ("flow", "status", "trigger", "received_after", "received_before", "ids")
MAX_ERRORS = 50  # kept on the job; the count of failures goes on
# A job whose step has not started for this long is rung for again by the sweep.
STALLED_AFTER = timedelta(minutes=2, seconds=30)


def _stored(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters as JSON can hold them (UUIDs and datetimes as text), without the empty ones."""
    stored = {}
    for name in FILTERS:
        value = filters.get(name)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif name == "ids":
            value = [str(v) for v in value]
        stored[name] = value
    return stored


def replay_runs_matching(*, user, filters: dict[str, Any], before: datetime | None = None) -> QuerySet:
    """The user's flows' runs matching `filters` (the run list's, plus `ids`), received before `before` when given."""
    filters = _stored(filters)
    runs = FlowRun.objects.filter(flow__user=user)
    if "flow" in filters:
        runs = runs.filter(flow_id=filters["flow"])
    if "status" in filters:
        runs = runs.filter(status=filters["status"])
    if "trigger" in filters:
        runs = runs.filter(trigger=filters["trigger"])
    if "received_after" in filters:
        runs = runs.filter(received_at__gte=parse_datetime(filters["received_after"]))
    if "received_before" in filters:
        runs = runs.filter(received_at__lt=parse_datetime(filters["received_before"]))
    if "ids" in filters:
        runs = runs.filter(pk__in=filters["ids"])
    if before is not None:
        runs = runs.filter(received_at__lt=before)
    return runs


def replay_runs_count(*, user, filters: dict[str, Any]) -> int:
    """How many runs a bulk replay with these filters would replay (a dry run)."""
    return replay_runs_matching(user=user, filters=filters).count()


def replay_job_create(*, user, filters: dict[str, Any], current_version: bool = False) -> ReplayJob:
    """Record a bulk replay of the runs matching `filters` now, and ring for its first step once committed."""
    now = timezone.now()
    job = ReplayJob(user=user, filters=_stored(filters), current_version=current_version)
    job.matched = replay_runs_matching(user=user, filters=filters, before=now).count()
    job.save()
    # The job matches what was received before it was recorded: created_at is the cut-off.
    ReplayJob.objects.filter(pk=job.pk).update(created_at=now)
    job.created_at = now
    transaction.on_commit(lambda: _step_later(job_id=job.pk))
    logger.info("Replay job %s: %d runs match", job.pk, job.matched)
    return job


def _step_later(*, job_id, step: int | None = None) -> None:
    # In the lane of the job's account, behind the batch just rung there.
    account = ReplayJob.objects.filter(pk=job_id).values_list("user_id", flat=True).first()
    queue.task_enqueue(func=STEP_TASK, args=(str(job_id), step), task_name=f"replay-{job_id}", account=account)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def replay_job_step(*, job_id, step: int | None = None) -> ReplayJob | None:
    """Replay the job's next batch of runs in received order, then ring for the next step, behind the batch.

    `step` is the job's step when the doorbell was rung (None: the job's step now); a doorbell whose step another has
    taken does nothing, as does one for a finished job or one deleted meanwhile (None).
    """
    job = ReplayJob.objects.filter(pk=job_id).first()
    if job is None:
        return None
    if job.status in (ReplayJob.Status.SUCCEEDED, ReplayJob.Status.FAILED):
        return job
    now = timezone.now()
    rung = job.step if step is None else step
    step = rung + 1
    if not ReplayJob.objects.filter(pk=job.pk, step=rung).update(
        step=step, status=ReplayJob.Status.RUNNING, heartbeat_at=now, started_at=job.started_at or now
    ):
        return ReplayJob.objects.filter(pk=job.pk).first()  # another step took it
    job = ReplayJob.objects.filter(pk=job.pk).first()
    if job is None:
        return None
    batch = max(settings.LANGRUN_REPLAY_BATCH, 1)
    rate = settings.LANGRUN_REPLAY_RATE
    try:
        runs = list(_remaining(job).select_related("flow", "version")[:batch])
        started = time.monotonic()
        if runs and not _replay_batch(job, runs, step):
            logger.info("Replay job %s was taken over by a newer step; this one stops", job.pk)
        elif len(runs) < batch:  # that was the last of them
            ReplayJob.objects.filter(pk=job.pk, step=step).update(status=ReplayJob.Status.SUCCEEDED, finished_at=timezone.now())
        else:
            if rate > 0:  # the bounded rate: this batch takes at least len(runs) / rate seconds
                _sleep(max(len(runs) / rate - (time.monotonic() - started), 0))
            _step_later(job_id=job.pk, step=step)
    except Exception as exc:
        logger.exception("Replay job %s failed", job.pk)
        ReplayJob.objects.filter(pk=job.pk, step=step).update(
            status=ReplayJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
    return ReplayJob.objects.filter(pk=job.pk).first()


def _remaining(job: ReplayJob) -> QuerySet:
    """The job's runs after its position, in received order (ties broken by id: the position is exact)."""
    runs = replay_runs_matching(user=job.user, filters=job.filters, before=job.created_at)
    if job.cursor_received_at is not None:
        runs = runs.filter(Q(received_at__gt=job.cursor_received_at) | Q(received_at=job.cursor_received_at, id__gt=job.cursor_run))
    return runs.order_by("received_at", "id")


class _StepLost(Exception):
    """The job's step moved on while this batch ran: roll the batch back."""


def _replay_batch(job: ReplayJob, runs: list[FlowRun], step: int) -> bool:
    """Replay `runs` and move the job's position past them, all in one transaction; False if the job was taken over."""
    created, failed, errors = 0, 0, []
    try:
        with transaction.atomic():
            # Locked as a flow's delete locks them (its flow, then its runs): a run deleted since the batch was listed,
            # or with its flow, is not replayed; one deleted now waits for this commit. A replay of a run gone broke
            # its foreign keys at the commit, and the whole job failed.
            flow_ids = flows_kept(flow_ids=[run.flow_id for run in runs])
            present = set(
                FlowRun.objects.select_for_update(no_key=True)
                .filter(pk__in=[run.pk for run in runs], flow_id__in=flow_ids)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            for run in runs:
                if run.pk not in present:
                    failed += 1
                    errors.append({"run_id": str(run.pk), "msg": f"Run {run.pk} was deleted before it was replayed."})
                    continue
                try:
                    with transaction.atomic():
                        flow_run_replay(run=run, user=job.user, current_version=job.current_version)
                    created += 1
                except FlowsError as exc:
                    failed += 1
                    errors.append({"run_id": str(run.pk), "msg": str(exc)})
            last = runs[-1]
            kept = ReplayJob.objects.filter(pk=job.pk).values_list("errors", flat=True).first() or []  # none: deleted
            moved = ReplayJob.objects.filter(pk=job.pk, step=step).update(
                created=job.created + created,
                failed=job.failed + failed,
                errors=(kept + errors)[:MAX_ERRORS],
                cursor_received_at=last.received_at,
                cursor_run=last.pk,
                heartbeat_at=timezone.now(),
            )
            if not moved:
                raise _StepLost
    except _StepLost:
        return False
    job.created += created
    job.failed += failed
    job.cursor_received_at, job.cursor_run = last.received_at, last.pk
    return True


def replay_jobs_resume_stalled() -> int:
    """Ring again for jobs whose step stopped without finishing (a worker died, or a doorbell was lost); for the sweep."""
    stale = timezone.now() - STALLED_AFTER
    stalled = ReplayJob.objects.filter(
        Q(status=ReplayJob.Status.RUNNING, heartbeat_at__lt=stale) | Q(status=ReplayJob.Status.PENDING, created_at__lt=stale)
    ).values_list("pk", "step")
    count = 0
    for job_id, step in stalled:
        _step_later(job_id=job_id, step=step)  # if the late doorbell comes after all, the second of the two does nothing
        count += 1
    return count
