"""Schedules: a flow running on a clock, executed by django-q2's scheduler.

Each FlowSchedule owns one `django_q.Schedule` row calling `flows.tasks.run_schedule` with the schedule's id and
the time it was due (`intended_at`). django-q2 takes due rows under a row lock, so a cluster fires each once; the
run's idempotency key (schedule and due time) makes a second firing of the same time record nothing even so.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from croniter import CroniterError, croniter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.http import Http404
from django.utils import timezone

from flows.exceptions import ScheduleInvalid, ScheduleLimitReached
from flows.models import FlowRun, FlowSchedule
from flows.services.flows import flow_kept
from flows.services.runs import flow_run_create

logger = logging.getLogger(__name__)

FIRE_TASK = "flows.tasks.run_schedule"


def flow_schedule_check(*, cron: str, interval_minutes: int | None) -> None:
    """Raise ScheduleInvalid unless exactly one of a valid cron expression and an interval is given."""
    if bool(cron) == bool(interval_minutes):
        raise ScheduleInvalid("Give either a cron expression (`cron`) or an interval (`interval_minutes`), not both.")
    if cron:
        _cron_check(cron)


def _cron_check(cron: str) -> None:
    # croniter also takes seconds and years (six or seven fields) and expressions with no next date; django-q2 computes
    # every due schedule's next firing in one transaction, so one such schedule would stop all of them.
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleInvalid(f"{cron!r} is not a cron expression of five fields (minute hour day month weekday).", field="cron")
    try:
        croniter(cron, timezone.now()).get_next(datetime)
    except CroniterError:
        raise ScheduleInvalid(f"{cron!r} never fires: no date matches it.", field="cron") from None


def flow_schedule_room_check(*, user_id, lock: bool = False, adding: int = 1) -> None:
    """ScheduleLimitReached when `adding` more schedules would take the account past LANGRUN_MAX_SCHEDULES_PER_USER.
    Every firing is a task in the queue all accounts share (with the sweep's), so one account's schedules are bounded.
    `lock`: hold the account's row until the caller's transaction ends, so that two creations at once cannot both take
    the last place."""
    if lock:
        get_user_model().objects.select_for_update().filter(pk=user_id).exists()
    limit = settings.LANGRUN_MAX_SCHEDULES_PER_USER
    if FlowSchedule.objects.filter(flow__user_id=user_id).count() + adding > limit:
        raise ScheduleLimitReached(limit)


def flow_schedules_move_check(*, flow_id, user_id, lock: bool = False) -> None:
    """ScheduleLimitReached when a flow's schedules, which go with it to a new owner, do not fit in `user_id`'s share.
    With `lock`, the caller holds the flow's row already: a schedule's creation takes the flow, then its owner."""
    moving = FlowSchedule.objects.filter(flow_id=flow_id).count()
    if moving:
        flow_schedule_room_check(user_id=user_id, lock=lock, adding=moving)


def _next_run(*, cron: str, interval_minutes: int | None) -> datetime:
    now = timezone.now()
    if cron:
        return croniter(cron, now).get_next(datetime)
    return now + timedelta(minutes=interval_minutes)


def _q_schedule_sync(schedule: FlowSchedule) -> None:
    from django_q.models import Schedule

    fields = {
        "name": f"flow-schedule-{schedule.pk}",
        "func": FIRE_TASK,
        "args": repr(str(schedule.pk)),
        "schedule_type": Schedule.CRON if schedule.cron else Schedule.MINUTES,
        "cron": schedule.cron or None,
        "minutes": schedule.interval_minutes,
        "repeats": -1,
        "intended_date_kwarg": "intended_at",
        "next_run": _next_run(cron=schedule.cron, interval_minutes=schedule.interval_minutes),
    }
    if schedule.q_schedule_id and Schedule.objects.filter(pk=schedule.q_schedule_id).update(**fields):
        return
    schedule.q_schedule = Schedule.objects.create(**fields)
    FlowSchedule.objects.filter(pk=schedule.pk).update(q_schedule=schedule.q_schedule)


def flow_schedule_create(*, flow, cron: str = "", interval_minutes: int | None = None, payload=None, name: str = "") -> FlowSchedule:
    """Run `flow` on a clock: every time `cron` (UTC) says, or every `interval_minutes`, with `payload`; within the
    account's share of schedules (flow_schedule_room_check)."""
    cron = (cron or "").strip()
    flow_schedule_check(cron=cron, interval_minutes=interval_minutes)
    with transaction.atomic():
        # The flow first, then its owner: a delete takes them in that order too. A flow moved to another owner since
        # it was read (flow_update holds the same lock) is no longer the caller's, nor its owner's share this counts.
        flow_kept(flow=flow)
        flow_schedule_room_check(user_id=flow.user_id, lock=True)
        schedule = FlowSchedule.objects.create(
            flow=flow, name=name, cron=cron, interval_minutes=None if cron else interval_minutes, payload=payload or {}
        )
        _q_schedule_sync(schedule)
    return schedule


def flow_schedule_update(*, schedule: FlowSchedule, **fields) -> FlowSchedule:
    """Change a schedule's clock, payload or name; its next firing is computed again from now."""
    for name in ("name", "cron", "interval_minutes", "payload"):
        if name in fields:
            setattr(schedule, name, fields[name])
    schedule.cron = (schedule.cron or "").strip()
    if schedule.cron and "interval_minutes" not in fields:
        schedule.interval_minutes = None
    if fields.get("interval_minutes") and "cron" not in fields:
        schedule.cron = ""
    flow_schedule_check(cron=schedule.cron, interval_minutes=schedule.interval_minutes)
    with transaction.atomic():
        # A schedule deleted since it was read (its django-q2 row with it) stays deleted: a whole-row save inserted
        # it again, and a new django-q2 row that went on firing.
        if not FlowSchedule.objects.select_for_update().filter(pk=schedule.pk).exists():
            raise Http404(f"Schedule {schedule.pk} not found.")
        schedule.save(update_fields=["name", "cron", "interval_minutes", "payload", "updated_at"])
        _q_schedule_sync(schedule)
    return schedule


def flow_schedule_delete(*, schedule: FlowSchedule) -> None:
    schedule.delete()  # its django-q2 Schedule goes with it (_q_schedule_delete)


@receiver(post_delete, sender=FlowSchedule)
def _q_schedule_delete(sender, instance: FlowSchedule, **kwargs) -> None:
    """Whichever way a schedule goes (its flow deleted, the admin, the API), its django-q2 row goes too."""
    from django_q.models import Schedule

    if instance.q_schedule_id:
        Schedule.objects.filter(pk=instance.q_schedule_id).delete()


def flow_schedule_fire(*, schedule_id, intended_at: str | None) -> FlowRun | None:
    """Record the run of one firing (trigger `schedule`); None when the schedule was deleted meanwhile."""
    schedule = FlowSchedule.objects.select_related("flow", "flow__user").filter(pk=schedule_id).first()
    if schedule is None:
        logger.info("Schedule %s no longer exists; nothing to run", schedule_id)
        return None
    due = intended_at or timezone.now().replace(second=0, microsecond=0).isoformat()
    return flow_run_create(
        flow=schedule.flow,
        user=schedule.flow.user,
        trigger=FlowRun.Trigger.SCHEDULE,
        payload=schedule.payload,
        body=json.dumps(schedule.payload),
        content_type="application/json",
        idempotency_key=f"schedule:{schedule.pk}:{due}",
    )
