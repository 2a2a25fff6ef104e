"""flows/stream_views.py: who may open a stream, and what it answers before streaming."""

from flows.models import FlowRun
from tests.helpers import new_run


def test_run_events_of_another_users_run_are_404_and_need_a_key(key_client, client, make_user, make_flow):
    other = make_user()
    theirs = new_run(make_flow(other, endpoint_name="theirs"), other)
    assert key_client.get(f"/api/v1/runs/{theirs.id}/events").status_code == 404
    assert key_client.get("/api/v1/runs/00000000-0000-0000-0000-000000000000/events").json() == {"detail": "Run not found"}
    assert client.get(f"/api/v1/runs/{theirs.id}/events").status_code == 403


def test_a_finished_runs_events_stream_and_end(key_client, flow, user):
    run = new_run(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(status="cancelled", error="Cancelled before it started.")
    response = key_client.get(f"/api/v1/runs/{run.id}/events", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    body = b"".join(response.streaming_content).decode()
    assert body.startswith("event: run_finished\n") and '"status": "cancelled"' in body


def test_webhook_events_are_owner_scoped(key_client, client, flow, make_user, make_flow):
    other = make_user()
    make_flow(other, endpoint_name="theirs")
    response = key_client.get("/api/v1/webhook-events/theirs", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 404 and response.json() == {"detail": "Flow identifier theirs not found"}
    assert client.get("/api/v1/webhook-events/greet").status_code == 403
