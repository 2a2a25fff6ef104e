"""flows.services.schedules: a flow on a clock, through django-q2's Schedule; each firing records one run."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from flows.exceptions import ScheduleInvalid
from flows.models import FlowRun, FlowSchedule
from flows.services.execution import flow_run_execute
from flows.services.pause import flow_pause
from flows.services.schedules import flow_schedule_create, flow_schedule_delete, flow_schedule_fire, flow_schedule_update


def test_a_cron_schedule_owns_a_django_q_schedule(flow):
    schedule = flow_schedule_create(flow=flow, cron="*/5 * * * *", payload={"name": "Cron"})
    q = Schedule.objects.get(pk=schedule.q_schedule_id)
    assert (q.func, q.schedule_type, q.cron, q.repeats, q.intended_date_kwarg) == (
        "flows.tasks.run_schedule",
        Schedule.CRON,
        "*/5 * * * *",
        -1,
        "intended_at",
    )
    assert q.next_run > timezone.now() and q.next_run.minute % 5 == 0 and q.next_run.second == 0
    assert q.args == repr(str(schedule.pk))


def test_an_interval_schedule(flow):
    schedule = flow_schedule_create(flow=flow, interval_minutes=15)
    q = Schedule.objects.get(pk=schedule.q_schedule_id)
    assert (q.schedule_type, q.minutes) == (Schedule.MINUTES, 15)
    assert timedelta(minutes=14) < q.next_run - timezone.now() <= timedelta(minutes=15)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"cron": "every tuesday"}, ["body", "cron"]),
        ({"cron": "61 * * * *"}, ["body", "cron"]),
        ({}, ["body"]),
        ({"cron": "* * * * *", "interval_minutes": 5}, ["body"]),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(flow, fields, loc):
    with pytest.raises(ScheduleInvalid) as caught:
        flow_schedule_create(flow=flow, **fields)
    assert caught.value.status == 422 and caught.value.errors[0]["loc"] == loc
    assert not FlowSchedule.objects.exists() and not Schedule.objects.filter(func="flows.tasks.run_schedule").exists()


def test_update_and_delete_keep_django_q_in_step(flow):
    schedule = flow_schedule_create(flow=flow, cron="0 * * * *")
    schedule = flow_schedule_update(schedule=schedule, cron="", interval_minutes=2, payload={"n": 1})
    q = Schedule.objects.get(pk=schedule.q_schedule_id)
    assert (q.schedule_type, q.minutes) == (Schedule.MINUTES, 2)
    assert FlowSchedule.objects.get(pk=schedule.pk).payload == {"n": 1}
    flow_schedule_delete(schedule=schedule)
    assert not FlowSchedule.objects.exists() and not Schedule.objects.filter(pk=q.pk).exists()


def test_deleting_the_flow_deletes_its_django_q_schedules(flow):
    schedule = flow_schedule_create(flow=flow, cron="0 * * * *")
    flow.delete()
    assert not Schedule.objects.filter(pk=schedule.q_schedule_id).exists()


def test_a_firing_records_one_run_per_due_time(flow):
    schedule = flow_schedule_create(flow=flow, cron="* * * * *", payload={"name": "Clock"})
    due = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).isoformat()
    run = flow_schedule_fire(schedule_id=schedule.pk, intended_at=due)
    again = flow_schedule_fire(schedule_id=schedule.pk, intended_at=due)  # a second cluster saw it too
    assert again.pk == run.pk and FlowRun.objects.count() == 1
    assert (run.trigger, run.payload, run.user_id) == ("schedule", {"name": "Clock"}, flow.user_id)
    assert flow_run_execute(run_id=run.pk).outputs == {"greeting": "Hello Clock!"}
    flow_schedule_fire(schedule_id=schedule.pk, intended_at=datetime(2026, 12, 6, 12, 1, tzinfo=UTC).isoformat())
    assert FlowRun.objects.filter(trigger="schedule").count() == 2


def test_a_paused_flows_scheduled_run_waits(flow):
    schedule = flow_schedule_create(flow=flow, interval_minutes=1)
    flow_pause(flow=flow)
    run = flow_schedule_fire(schedule_id=schedule.pk, intended_at=timezone.now().isoformat())
    assert flow_run_execute(run_id=run.pk) is None


def test_a_firing_of_a_deleted_schedule_records_nothing(flow):
    schedule = flow_schedule_create(flow=flow, interval_minutes=1)
    FlowSchedule.objects.filter(pk=schedule.pk).delete()
    assert flow_schedule_fire(schedule_id=schedule.pk, intended_at=None) is None
    assert not FlowRun.objects.exists()
