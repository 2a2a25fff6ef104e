"""Pause and resume in the API: POST /flows/{id}/pause and /resume, the flow's `paused`, a run's `waiting_for`."""

import pytest
from rest_framework.test import APIClient

from flows.models import Flow, FlowRun
from flows.services.execution import flow_run_execute
from langrun.services import api_key_create
from tests.helpers import post


@pytest.fixture
def other_client(make_user):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key_create(user=make_user("mallory")).key)
    return c


def test_pause_then_resume(key_client, flow, api_key, enqueued):
    response = key_client.post(f"/api/v1/flows/{flow.pk}/pause")
    assert response.status_code == 200, response.content
    assert response.json()["paused"] is True and response.json()["paused_at"]
    assert key_client.get(f"/api/v1/flows/{flow.pk}").json()["paused"] is True

    # A paused flow still accepts webhooks, and the run says what it waits for.
    accepted = post(key_client, "greet", HTTP_X_API_KEY=api_key)
    assert accepted.status_code == 202, accepted.content
    run_id = accepted.json()["run_id"]
    assert flow_run_execute(run_id=run_id) is None
    run = key_client.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "queued" and run["waiting_for"] == "flow_paused"
    listed = key_client.get("/api/v1/runs/").json()["results"][0]
    assert listed["waiting_for"] == "flow_paused"

    response = key_client.post(f"/api/v1/flows/{flow.pk}/resume")
    assert response.status_code == 200
    assert response.json()["paused"] is False and response.json()["paused_at"] is None
    assert response.json()["released"] == 1
    assert enqueued[-1] == run_id
    assert key_client.get(f"/api/v1/runs/{run_id}").json()["waiting_for"] == "worker"
    assert flow_run_execute(run_id=run_id).status == FlowRun.Status.SUCCEEDED
    assert key_client.get(f"/api/v1/runs/{run_id}").json()["waiting_for"] is None


def test_another_users_flow_is_404(other_client, flow):
    assert other_client.post(f"/api/v1/flows/{flow.pk}/pause").status_code == 404
    assert other_client.post(f"/api/v1/flows/{flow.pk}/resume").status_code == 404
    assert Flow.objects.get(pk=flow.pk).paused_at is None


def test_paused_is_read_only_in_a_patch(key_client, flow):
    response = key_client.patch(f"/api/v1/flows/{flow.pk}", {"paused": True}, format="json")
    assert response.status_code == 200
    assert Flow.objects.get(pk=flow.pk).paused_at is None


def test_schema_lists_pause_and_resume(client):
    schema = client.get("/api/schema/?format=json").json()
    assert "post" in schema["paths"]["/api/v1/flows/{id}/pause"]
    assert "post" in schema["paths"]["/api/v1/flows/{id}/resume"]
