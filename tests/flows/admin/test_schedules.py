"""flows.admin.schedules: schedules saved through the services, a bad cron as a form error, owner scoping."""

from django.urls import reverse
from django_q.models import Schedule

from flows.models import FlowSchedule
from flows.services.schedules import flow_schedule_create
from tests.helpers import login


def test_add_change_and_list_a_schedule(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    c = login(staff)
    response = c.post(
        reverse("admin:flows_flowschedule_add"),
        {"flow": str(flow.pk), "name": "weekdays", "cron": "0 9 * * 1-5", "interval_minutes": "", "payload": '{"name": "Team"}'},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = FlowSchedule.objects.get()
    assert (schedule.cron, schedule.payload) == ("0 9 * * 1-5", {"name": "Team"})
    assert Schedule.objects.get(pk=schedule.q_schedule_id).cron == "0 9 * * 1-5"
    response = c.post(
        reverse("admin:flows_flowschedule_change", args=[schedule.pk]),
        {"flow": str(flow.pk), "name": "often", "cron": "", "interval_minutes": "5", "payload": "{}"},
    )
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.cron, schedule.interval_minutes) == ("", 5)
    assert Schedule.objects.get(pk=schedule.q_schedule_id).minutes == 5
    assert "often" in c.get(reverse("admin:flows_flowschedule_changelist")).content.decode()


def test_a_bad_cron_is_a_form_error(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    response = login(staff).post(
        reverse("admin:flows_flowschedule_add"), {"flow": str(flow.pk), "cron": "every day", "interval_minutes": "", "payload": "{}"}
    )
    assert response.status_code == 200
    assert "is not a cron expression" in response.content.decode()
    assert not FlowSchedule.objects.exists()


def test_a_payload_no_database_can_store_is_a_form_error(staff, make_flow):
    # NaN passed Django's JSONField and failed SQLite's JSON_VALID check on save: a 500.
    flow = make_flow(staff, endpoint_name="greet")
    for payload in ('{"a": NaN}', '{"a": 1e999}', "[" * 5000 + "]" * 5000):
        response = login(staff).post(
            reverse("admin:flows_flowschedule_add"), {"flow": str(flow.pk), "cron": "0 9 * * *", "interval_minutes": "", "payload": payload}
        )
        assert response.status_code == 200 and response.context["adminform"].form.errors["payload"]
    assert not FlowSchedule.objects.exists()


def test_a_cron_that_never_fires_is_a_form_error(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    c = login(staff)
    for cron, message in (("8 11 7 12 * 0 2026", "five fields"), ("0 0 30 2 *", "never fires")):
        response = c.post(
            reverse("admin:flows_flowschedule_add"), {"flow": str(flow.pk), "cron": cron, "interval_minutes": "", "payload": "{}"}
        )
        assert response.status_code == 200
        assert message in response.content.decode()
    assert not FlowSchedule.objects.exists()


def test_other_users_schedules_are_404(staff, other, make_flow):
    schedule = flow_schedule_create(flow=make_flow(other, endpoint_name="theirs"), cron="* * * * *")
    c = login(staff)
    assert c.get(reverse("admin:flows_flowschedule_change", args=[schedule.pk])).status_code == 404
    assert str(schedule) not in c.get(reverse("admin:flows_flowschedule_changelist")).content.decode()


def test_a_schedule_past_the_accounts_share_is_a_form_error(staff, make_flow, settings):
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    flow = make_flow(staff, endpoint_name="greet")
    flow_schedule_create(flow=flow, interval_minutes=5)
    response = login(staff).post(
        reverse("admin:flows_flowschedule_add"), {"flow": str(flow.pk), "cron": "0 9 * * *", "interval_minutes": "", "payload": "{}"}
    )
    assert response.status_code == 200
    assert "at most 1 schedules" in response.content.decode()
    assert FlowSchedule.objects.count() == 1


def test_the_last_place_taken_between_the_forms_check_and_its_save_is_an_error_message(staff, make_flow, settings, monkeypatch):
    from flows.admin import schedules as schedules_admin

    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    flow = make_flow(staff, endpoint_name="greet")
    monkeypatch.setattr(schedules_admin, "flow_schedule_room_check", lambda **kwargs: None)  # the form saw room
    flow_schedule_create(flow=flow, interval_minutes=5)  # taken meanwhile, as by an API call
    response = login(staff).post(
        reverse("admin:flows_flowschedule_add"),
        {"flow": str(flow.pk), "cron": "0 9 * * *", "interval_minutes": "", "payload": "{}"},
        follow=True,
    )
    assert response.status_code == 200
    assert "at most 1 schedules" in response.content.decode()
    assert FlowSchedule.objects.count() == 1
