"""The periodic sweep and the operator's requeue: recover interrupted runs, ring for retries and lost doorbells, expire keys."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.http import Http404
from django.utils import timezone

from flows.exceptions import FlowsError
from flows.models import Flow, FlowRun, RunAttempt
from flows.services import queue
from flows.services.concurrency import run_control_release_keys, run_controlled
from flows.services.replays import replay_jobs_resume_stalled
from flows.services.runs import flow_run_replay
from webhooks.alerts.services import outbox

logger = logging.getLogger(__name__)


SWEEP_TASK = "flows.tasks.sweep"


SWEEP_SCHEDULE_NAME = "langrun-sweep"


def flow_runs_requeue_stale(*, older_than: timedelta | None = None, limit: int = 1000) -> int:
    """Enqueue again the queued runs whose last enqueue is older than `older_than`.

    The broker may have lost them (Redis keeps no delivery receipts, and an
    enqueue can fail outright). A duplicate doorbell is harmless: the claim
    lets only one worker run it.
    """
    if older_than is None:
        older_than = timedelta(seconds=settings.LANGRUN_REQUEUE_AFTER)
    now = timezone.now()
    # Read and marked under their row locks, as a resume's release marks its page (flows/services/pause.py): a run
    # that one rings meanwhile is skipped, or read as rung once it committed, instead of rung a second time.
    with transaction.atomic():
        stale = list(
            FlowRun.objects.unfinished()
            .outside_releases(since=now - older_than)  # a resumed flow's, a page at a time, while pages go on
            .select_for_update(skip_locked=True, of=("self",))
            .filter(status=FlowRun.Status.QUEUED, enqueued_at__lt=now - older_than)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))  # a retry waiting for its time is not lost
            .filter(flow__paused_at__isnull=True)  # a paused flow's runs are held, not lost; its resume rings them
            .exclude(run_controlled())  # those a concurrency or throttle holds are rung per key, when they may start
            .order_by("enqueued_at")
            .values_list(*queue.RING_FIELDS)[:limit]
        )
        FlowRun.objects.filter(pk__in=[row[0] for row in stale], status=FlowRun.Status.QUEUED).update(enqueued_at=now)
    if not stale:
        return 0
    for row in stale:
        queue.flow_run_ring(*row)
    logger.info("Re-enqueued %d queued runs", len(stale))
    return len(stale)


def flow_runs_recover_interrupted(*, lease: timedelta | None = None, limit: int = 1000) -> int:
    """Runs `running` for longer than their lease lost their worker: queue them again, or fail them.

    A run's lease is its flow's timeout (or LANGRUN_FLOW_TIMEOUT) plus
    LANGRUN_LEASE_MARGIN, and never more than LANGRUN_RUN_TIMEOUT plus the
    margin, where django-q2 stops a task: the engine stops a run at its timeout,
    so a run still `running` after its lease has nobody working on it. `lease`
    overrides it for every run. Each update is conditional on the claim seen
    (`attempts`), so a worker that finishes at the same moment wins or loses cleanly.
    """
    now = timezone.now()
    margin = timedelta(seconds=settings.LANGRUN_LEASE_MARGIN)
    longest = timedelta(seconds=settings.LANGRUN_RUN_TIMEOUT) + margin

    def lease_of(flow_timeout: int | None) -> timedelta:
        if lease is not None:
            return lease
        return min(timedelta(seconds=flow_timeout or settings.LANGRUN_FLOW_TIMEOUT) + margin, longest)

    shortest = lease if lease is not None else min(margin, longest)
    running = FlowRun.objects.unfinished().filter(status=FlowRun.Status.RUNNING, started_at__lt=now - shortest)
    # Per flow timeout (a lease each), so that runs well within a long lease never fill the batch ahead of a run
    # past its short one: a few distinct timeouts, a query each.
    timeouts = {None} if lease is not None else set(running.order_by().values_list("flow__timeout", flat=True).distinct())
    stuck = []
    for timeout in timeouts:
        past = running.filter(started_at__lt=now - lease_of(timeout))
        if lease is None:
            past = past.filter(flow__timeout=timeout) if timeout is not None else past.filter(flow__timeout__isnull=True)
        stuck += past.values_list("started_at", "attempts", "flow__max_attempts", *queue.RING_FIELDS).order_by("started_at")[:limit]
    stuck.sort(key=lambda row: row[0])
    recovered = 0
    for _, attempts, max_attempts, *ring in stuck[:limit]:
        run_id = ring[0]
        interrupted = f"Attempt {attempts} was interrupted: its worker stopped, or it ran past its timeout."
        current = FlowRun.objects.filter(pk=run_id, status=FlowRun.Status.RUNNING, attempts=attempts)
        with transaction.atomic():
            if attempts < max_attempts:
                changed = current.update(status=FlowRun.Status.QUEUED, error=interrupted, enqueued_at=now)
                if changed:
                    transaction.on_commit(lambda ring=ring: queue.flow_run_ring(*ring))
            else:
                error = f"{interrupted} No attempts left ({attempts} of {max_attempts})."
                changed = current.update(status=FlowRun.Status.FAILED, error=error, finished_at=now)
                if changed:
                    outbox.run_ended(run_id=run_id)
            if changed:
                _attempt_interrupted(run_id=run_id, number=attempts, error=interrupted, at=now)
        recovered += changed
    if recovered:
        logger.warning("Recovered %d interrupted runs", recovered)
    return recovered


def _attempt_interrupted(*, run_id, number: int, error: str, at) -> None:
    """End a run's attempt taken back from its worker (the sweep's recovery, an operator's requeue) as `interrupted`."""
    RunAttempt.objects.filter(run_id=run_id, number=number).update(outcome=RunAttempt.Outcome.INTERRUPTED, error=error, finished_at=at)


def flow_runs_enqueue_due_retries(*, limit: int = 1000) -> int:
    """Ring for the runs whose retry backoff has passed (each once: `enqueued_at` moves past `next_attempt_at`).

    Returns how many were enqueued.
    """
    now = timezone.now()
    due = list(
        FlowRun.objects.unfinished()
        .filter(status=FlowRun.Status.QUEUED, next_attempt_at__lte=now, enqueued_at__lt=F("next_attempt_at"))
        .filter(flow__paused_at__isnull=True)
        .order_by("next_attempt_at")
        .values_list(*queue.RING_FIELDS)[:limit]
    )
    enqueued = 0
    for row in due:
        # Still due when marked: a resume's release may have rung it since it was read.
        if FlowRun.objects.filter(pk=row[0], status=FlowRun.Status.QUEUED, enqueued_at__lt=F("next_attempt_at")).update(enqueued_at=now):
            enqueued += queue.flow_run_ring(*row)  # one the broker refused is left to flow_runs_requeue_stale
    return enqueued


def flow_runs_release_idempotency_keys(*, older_than: timedelta | None = None) -> int:
    """Forget the idempotency keys of runs older than the retention window, so the keys may be used again."""
    if older_than is None:
        older_than = timedelta(seconds=settings.LANGRUN_IDEMPOTENCY_RETENTION)
    return FlowRun.objects.filter(idempotency_key__isnull=False, received_at__lt=timezone.now() - older_than).update(idempotency_key=None)


def flow_runs_sweep() -> dict[str, int]:
    """Everything the periodic sweep does: recover interrupted runs, ring for retries and lost doorbells, expire keys."""
    return {
        "recovered": flow_runs_recover_interrupted(),
        "retried": flow_runs_enqueue_due_retries(),
        "requeued": flow_runs_requeue_stale(),
        "waiting_keys_rung": run_control_release_keys(older_than=timedelta(seconds=settings.LANGRUN_REQUEUE_AFTER)),
        "keys_released": flow_runs_release_idempotency_keys(),
        "replay_jobs_resumed": replay_jobs_resume_stalled(),
    }


def sweep_schedule_ensure(sender=None, using: str = "default", **kwargs: Any) -> None:
    """Install the periodic sweep as a django-q2 schedule (runs after every `migrate`)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={"func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


def flow_runs_requeue(
    *,
    status: str = FlowRun.Status.QUEUED,
    flow: Flow | None = None,
    older_than: timedelta = timedelta(0),
    limit: int = 1000,
    dry_run: bool = False,
) -> list[FlowRun]:
    """An operator's requeue (`manage.py requeue_runs`); returns the runs it acted on (or would, with `dry_run`).

    - `queued`: enqueue again (as the sweep does) those last enqueued more than `older_than` ago.
    - `running`: put back to `queued` and enqueue those started more than `older_than` ago, for runs
      whose worker died; a run that is really still running could then run twice, so pick the age with care.
    - `failed`: replay those finished more than `older_than` ago as new linked runs (terminal runs never
      change); runs whose payload retention cleared are left out.
    """
    age_field = {FlowRun.Status.QUEUED: "enqueued_at", FlowRun.Status.RUNNING: "started_at", FlowRun.Status.FAILED: "finished_at"}
    if status not in age_field:
        raise ValueError(f"Runs that are {status!r} cannot be requeued; choose one of {', '.join(age_field)}.")
    now = timezone.now()
    qs = FlowRun.objects.filter(status=status, **{f"{age_field[status]}__lte": now - older_than}).select_related("flow", "version", "user")
    if flow is not None:
        qs = qs.filter(flow=flow)
    if status == FlowRun.Status.FAILED:
        qs = qs.filter(payload_pruned_at__isnull=True)
    else:
        qs = qs.unfinished()
    runs = list(qs.order_by(age_field[status])[:limit])
    if dry_run or not runs:
        return runs
    if status == FlowRun.Status.FAILED:
        replays = []
        for run in runs:
            # One run that cannot be replayed (its tweaks no longer fit, deleted since it was listed) must not stop
            # the rest: a second invocation would replay again those already replayed.
            try:
                replays.append(flow_run_replay(run=run, user=run.user))
            except (FlowsError, Http404) as exc:
                logger.warning("Run %s not replayed: %s", run.id, exc)
        logger.info("Replayed %d failed runs", len(replays))
        return replays
    acted = []
    interrupted = "Attempt {} was interrupted: an operator requeued the run (requeue_runs)."
    for run in runs:
        # Conditional on the claim seen, as the sweep's recovery is; the attempt taken back ends `interrupted`.
        with transaction.atomic():
            moved = FlowRun.objects.filter(pk=run.pk, status=status, attempts=run.attempts).update(
                status=FlowRun.Status.QUEUED, enqueued_at=now
            )
            if moved and status == FlowRun.Status.RUNNING:
                _attempt_interrupted(run_id=run.pk, number=run.attempts, error=interrupted.format(run.attempts), at=now)
        if moved:
            queue.flow_run_ring(run.id, run.flow_id, run.version_id, run.user_id)
            acted.append(run)
    logger.info("Requeued %d %s runs", len(acted), status)
    return acted
