"""Schedules in the API: /api/v1/schedules (create, list, change, delete); bad cron is a located 422; others' are 404."""

import pytest
from django_q.models import Schedule
from rest_framework.test import APIClient

from flows.models import FlowSchedule
from langrun.services import api_key_create


@pytest.fixture
def other_client(make_user):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key_create(user=make_user("mallory")).key)
    return c


def test_create_list_change_delete(key_client, flow):
    response = key_client.post(
        "/api/v1/schedules/", {"flow": str(flow.pk), "cron": "0 9 * * 1-5", "payload": {"name": "Team"}}, format="json"
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["cron"] == "0 9 * * 1-5" and created["interval_minutes"] is None and created["payload"] == {"name": "Team"}
    assert created["flow"] == str(flow.pk) and created["next_run_at"].endswith(":00Z")
    listed = key_client.get(f"/api/v1/schedules/?flow={flow.pk}").json()
    assert [s["id"] for s in listed["results"]] == [created["id"]]
    assert key_client.get(f"/api/v1/schedules/?flow={created['id']}").json()["count"] == 0
    bad = key_client.get("/api/v1/schedules/?flow=")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "flow"]

    changed = key_client.patch(f"/api/v1/schedules/{created['id']}", {"interval_minutes": 10}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["cron"] == "" and changed.json()["interval_minutes"] == 10
    q_id = FlowSchedule.objects.get(pk=created["id"]).q_schedule_id
    assert Schedule.objects.get(pk=q_id).minutes == 10

    assert key_client.delete(f"/api/v1/schedules/{created['id']}").status_code == 204
    assert not FlowSchedule.objects.exists() and not Schedule.objects.filter(pk=q_id).exists()


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"cron": "not a cron"}, ["body", "cron"]),
        ({"cron": "8 11 7 12 * 0 2026"}, ["body", "cron"]),
        ({"cron": "0 0 30 2 *"}, ["body", "cron"]),
        ({"cron": "* * * * *", "interval_minutes": 5}, ["body"]),
        ({}, ["body"]),
        ({"interval_minutes": 0}, ["body", "interval_minutes"]),
        ({"cron": "* * * * *", "payload": "x" * 3}, ["body", "payload"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field(key_client, flow, body, loc):
    response = key_client.post("/api/v1/schedules/", {"flow": str(flow.pk), **body}, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == loc
    assert not FlowSchedule.objects.exists()


def test_other_users_flows_and_schedules_are_404(key_client, other_client, flow):
    response = other_client.post("/api/v1/schedules/", {"flow": str(flow.pk), "cron": "* * * * *"}, format="json")
    assert response.status_code == 404
    created = key_client.post("/api/v1/schedules/", {"flow": str(flow.pk), "cron": "* * * * *"}, format="json").json()
    assert other_client.get(f"/api/v1/schedules/{created['id']}").status_code == 404
    assert other_client.delete(f"/api/v1/schedules/{created['id']}").status_code == 404
    assert other_client.get("/api/v1/schedules/").json()["count"] == 0
    assert FlowSchedule.objects.count() == 1


def test_schedule_runs_are_listed_by_their_trigger(key_client, flow):
    from flows.services.schedules import flow_schedule_create, flow_schedule_fire

    schedule = flow_schedule_create(flow=flow, interval_minutes=1)
    run = flow_schedule_fire(schedule_id=schedule.pk, intended_at=None)
    assert [r["id"] for r in key_client.get("/api/v1/runs/?trigger=schedule").json()["results"]] == [str(run.pk)]


def test_schema_lists_schedules(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/schedules/"])
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/schedules/{id}"])


def test_a_schedule_past_the_accounts_share_is_a_422_and_saves_nothing(key_client, flow, settings):
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    assert key_client.post("/api/v1/schedules/", {"flow": str(flow.pk), "interval_minutes": 5}, format="json").status_code == 201
    refused = key_client.post("/api/v1/schedules/", {"flow": str(flow.pk), "interval_minutes": 5}, format="json")
    assert refused.status_code == 422, refused.content
    assert refused.json()["detail"][0]["loc"] == ["body"] and "LANGRUN_MAX_SCHEDULES_PER_USER" not in refused.json()["detail"][0]["msg"]
    assert FlowSchedule.objects.count() == 1
