"""Bulk replay in the API: POST /runs/replay (dry run, job), GET /jobs/{id}; bad input is a located 422."""

import pytest
from rest_framework.test import APIClient

from flows.models import FlowRun, ReplayJob
from flows.services import replays
from flows.services.runs import flow_run_create
from langrun.services import api_key_create


@pytest.fixture
def other_client(make_user):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key_create(user=make_user("mallory")).key)
    return c


@pytest.fixture
def steps(monkeypatch):
    enqueued = []
    monkeypatch.setattr(replays, "_step_later", lambda *, job_id: enqueued.append(str(job_id)))
    monkeypatch.setattr(replays, "_sleep", lambda seconds: None)
    return enqueued


def _failed_runs(flow, n):
    runs = [flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Ada"}) for _ in range(n)]
    FlowRun.objects.filter(pk__in=[r.pk for r in runs]).update(status="failed")
    return runs


def test_dry_run_counts_and_creates_nothing(key_client, flow):
    _failed_runs(flow, 3)
    response = key_client.post("/api/v1/runs/replay", {"status": "failed", "dry_run": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"matched": 3, "dry_run": True}
    assert not ReplayJob.objects.exists() and FlowRun.objects.count() == 3


def test_a_bulk_replay_starts_a_job_whose_progress_the_api_shows(key_client, flow, steps, django_capture_on_commit_callbacks):
    _failed_runs(flow, 3)
    with django_capture_on_commit_callbacks(execute=True):
        response = key_client.post(
            "/api/v1/runs/replay", {"flow": str(flow.pk), "status": "failed", "current_version": True}, format="json"
        )
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "pending" and job["matched"] == 3 and job["created"] == 0 and job["kind"] == "replay"
    assert job["filters"] == {"flow": str(flow.pk), "status": "failed"} and job["current_version"] is True
    assert response["Location"] == job["status_url"] == f"http://testserver/api/v1/jobs/{job['id']}"
    assert steps == [job["id"]]

    replays.replay_job_step(job_id=job["id"])
    shown = key_client.get(f"/api/v1/jobs/{job['id']}").json()
    assert (shown["status"], shown["matched"], shown["created"], shown["failed"]) == ("succeeded", 3, 3, 0)
    assert shown["started_at"] and shown["finished_at"]
    assert FlowRun.objects.filter(trigger="replay").count() == 3
    assert [j["id"] for j in key_client.get("/api/v1/jobs/").json()["results"]] == [job["id"]]


def test_another_users_job_and_flow_are_404(key_client, other_client, flow, user, steps):
    job = replays.replay_job_create(user=user, filters={"status": "failed"})
    assert other_client.get(f"/api/v1/jobs/{job.pk}").status_code == 404
    assert other_client.get("/api/v1/jobs/").json()["count"] == 0
    response = other_client.post("/api/v1/runs/replay", {"flow": str(flow.pk)}, format="json")
    assert response.status_code == 404
    assert key_client.get("/api/v1/jobs/not-a-uuid").status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body"]),
        ({"dry_run": True}, ["body"]),
        ({"status": "exploded"}, ["body", "status"]),
        ({"trigger": "carrier-pigeon"}, ["body", "trigger"]),
        ({"flow": "nope"}, ["body", "flow"]),
        ({"received_after": "yesterday"}, ["body", "received_after"]),
        ({"status": "failed", "dry_run": "maybe"}, ["body", "dry_run"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field(key_client, body, loc):
    response = key_client.post("/api/v1/runs/replay", body, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == loc
    assert not ReplayJob.objects.exists()


def test_schema_lists_bulk_replay_and_jobs(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert "post" in paths["/api/v1/runs/replay/"]
    assert "get" in paths["/api/v1/jobs/{id}"]


def test_a_jobs_status_url_follows_the_prefix_the_service_is_mounted_under(key_client, flow):
    from django.test.utils import override_script_prefix

    _failed_runs(flow, 1)
    with override_script_prefix("/langrun/"):
        job = key_client.post("/api/v1/runs/replay", {"status": "failed"}, format="json").json()
    assert job["status_url"] == f"http://testserver/langrun/api/v1/jobs/{job['id']}"
