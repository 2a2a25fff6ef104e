"""flows.services.schedules: a flow on a clock, through django-q2's Schedule; each firing records one run."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from flows.exceptions import ScheduleInvalid, ScheduleLimitReached
from flows.models import FlowRun, FlowSchedule
from flows.services.execution import flow_run_execute
from flows.services.pause import flow_pause
from flows.services.schedules import flow_schedule_create, flow_schedule_delete, flow_schedule_fire, flow_schedule_update
from tests.helpers import at_once


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


@pytest.mark.parametrize(
    "cron",
    [
        "8 11 7 12 * 0 2026",  # croniter's seven fields (seconds, year): once the year is past, it never fires again
        "0 0 * * * 0",  # croniter's six fields (seconds)
        "@daily",
        "0 0 30 2 *",  # a date that never occurs
        "0 0 31 4,6,9,11 *",
    ],
)
def test_a_cron_that_is_not_five_fields_or_never_fires_is_refused(flow, cron):
    with pytest.raises(ScheduleInvalid) as caught:
        flow_schedule_create(flow=flow, cron=cron)
    assert caught.value.status == 422 and caught.value.errors[0]["loc"] == ["body", "cron"]
    assert not FlowSchedule.objects.exists() and not Schedule.objects.filter(func="flows.tasks.run_schedule").exists()
    schedule = flow_schedule_create(flow=flow, cron="0 * * * *")
    with pytest.raises(ScheduleInvalid):
        flow_schedule_update(schedule=schedule, cron=cron)
    assert Schedule.objects.get(pk=schedule.q_schedule_id).cron == "0 * * * *"


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "0 0 L * *", "0 0 * * 5#3", "0 0 30 2 1", "  0 9 * * 1-5 "])
def test_five_field_crons_that_fire_are_kept_and_django_q_can_schedule_them(flow, cron):
    schedule = flow_schedule_create(flow=flow, cron=cron)
    q = Schedule.objects.get(pk=schedule.q_schedule_id)
    assert q.cron == cron.strip() and q.calculate_next_run() > timezone.now()


def test_update_and_delete_keep_django_q_in_step(flow):
    schedule = flow_schedule_create(flow=flow, cron="0 * * * *")
    schedule = flow_schedule_update(schedule=schedule, cron="", interval_minutes=2, payload={"n": 1})
    q = Schedule.objects.get(pk=schedule.q_schedule_id)
    assert (q.schedule_type, q.minutes) == (Schedule.MINUTES, 2)
    assert FlowSchedule.objects.get(pk=schedule.pk).payload == {"n": 1}
    flow_schedule_delete(schedule=schedule)
    assert not FlowSchedule.objects.exists() and not Schedule.objects.filter(pk=q.pk).exists()


def test_an_update_of_a_schedule_deleted_since_it_was_read_does_not_bring_it_back(flow):
    # The save found no row and inserted one, and a new django-q2 row with it: a schedule deleted (204) while a
    # PATCH of it was in flight fired again from then on.
    from django.http import Http404

    others = Schedule.objects.count()  # the sweeps' own
    schedule = flow_schedule_create(flow=flow, interval_minutes=5)
    read = FlowSchedule.objects.get(pk=schedule.pk)
    flow_schedule_delete(schedule=schedule)
    with pytest.raises(Http404):
        flow_schedule_update(schedule=read, interval_minutes=10)
    assert not FlowSchedule.objects.exists() and Schedule.objects.count() == others


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


def test_an_update_of_a_schedule_deleted_since_it_was_read_is_a_404_and_brings_nothing_back(flow):
    from django.http import Http404

    schedule = flow_schedule_create(flow=flow, interval_minutes=5)
    read = FlowSchedule.objects.get(pk=schedule.pk)  # as a PATCH reads it, before a DELETE commits
    flow_schedule_delete(schedule=FlowSchedule.objects.get(pk=schedule.pk))
    with pytest.raises(Http404):
        flow_schedule_update(schedule=read, name="renamed")
    assert not FlowSchedule.objects.exists()
    assert not Schedule.objects.filter(func="flows.tasks.run_schedule").exists()  # nothing left to fire


def test_an_account_has_at_most_its_share_of_schedules(flow, make_flow, make_user, settings):
    # Every firing is a task in the queue all accounts share: one account's thousands of schedules would delay the
    # others' firings and the sweep.
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 2
    second = make_flow(flow.user, endpoint_name="second")
    flow_schedule_create(flow=flow, interval_minutes=5)
    flow_schedule_create(flow=second, interval_minutes=5)
    with pytest.raises(ScheduleLimitReached) as caught:
        flow_schedule_create(flow=second, cron="0 9 * * *")
    assert caught.value.status == 422 and caught.value.errors[0]["loc"] == ["body"]
    assert "2 schedules" in str(caught.value)
    assert FlowSchedule.objects.count() == 2 and Schedule.objects.filter(func="flows.tasks.run_schedule").count() == 2
    other = make_flow(make_user("other"), endpoint_name="other")
    assert flow_schedule_create(flow=other, interval_minutes=5).pk  # another account's share is its own
    flow_schedule_delete(schedule=FlowSchedule.objects.filter(flow=flow).get())
    assert flow_schedule_create(flow=second, cron="0 9 * * *").pk  # a deleted schedule frees its place


@pytest.mark.django_db(transaction=True)
def test_two_schedules_created_at_once_cannot_both_take_the_last_place(make_user, make_flow, settings):
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    flow = make_flow(make_user())
    outcomes = at_once(*[lambda: flow_schedule_create(flow=flow, interval_minutes=5)] * 4)
    assert sorted(type(o).__name__ for o in outcomes) == ["FlowSchedule", *["ScheduleLimitReached"] * 3]
    assert FlowSchedule.objects.count() == 1


def test_a_schedule_of_a_flow_deleted_since_it_was_read_is_a_404_and_saves_nothing(flow):
    from django.http import Http404

    from flows.models import Flow

    stale = Flow.objects.get(pk=flow.pk)
    Flow.objects.filter(pk=flow.pk).delete()
    with pytest.raises(Http404):
        flow_schedule_create(flow=stale, interval_minutes=5)
    assert not FlowSchedule.objects.exists() and not Schedule.objects.filter(func="flows.tasks.run_schedule").exists()


def test_a_schedule_of_a_flow_moved_to_another_owner_since_it_was_read_is_a_404_and_saves_nothing(flow, make_flow, make_user, settings):
    # Counted in the share of the owner it was read with, it would have taken a place the new owner may not have.
    from django.http import Http404

    from flows.models import Flow
    from flows.services.flows import flow_update

    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    other = make_user("bob")
    flow_schedule_create(flow=make_flow(other, endpoint_name="theirs"), interval_minutes=5)
    stale = Flow.objects.get(pk=flow.pk)
    flow_update(flow=flow, user=other)
    with pytest.raises(Http404):
        flow_schedule_create(flow=stale, interval_minutes=5)
    assert FlowSchedule.objects.filter(flow__user=other).count() == 1
