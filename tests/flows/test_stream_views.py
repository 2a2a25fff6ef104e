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


def test_open_streams_are_capped_per_process_and_a_closed_one_gives_its_slot_back(key_client, flow, user, settings):
    """Each open stream holds a web thread: past the process's share the answer is 429 with Retry-After (nothing to
    undo: a stream only reads), and the threads stay free for webhooks and health checks."""
    settings.LANGRUN_STREAMS_PER_PROCESS, settings.LANGRUN_STREAMS_PER_USER = 1, 5
    run = new_run(flow, user)
    first = key_client.get(f"/api/v1/runs/{run.id}/events", HTTP_ACCEPT="text/event-stream")
    try:
        assert first.status_code == 200
        refused = key_client.get(f"/api/v1/runs/{run.id}/events", HTTP_ACCEPT="text/event-stream")
        assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
        assert "streams" in refused.json()["detail"]
        assert key_client.get("/api/v1/webhook-events/greet", HTTP_ACCEPT="text/event-stream").status_code == 429
    finally:
        _client_went_away(first)
    again = key_client.get("/api/v1/webhook-events/greet", HTTP_ACCEPT="text/event-stream")
    assert again.status_code == 200
    _client_went_away(again)


def test_one_account_cannot_take_every_stream_of_a_process(key_client, flow, user, make_user, make_flow, settings):
    from rest_framework.test import APIClient

    from langrun.services import api_key_create

    settings.LANGRUN_STREAMS_PER_PROCESS, settings.LANGRUN_STREAMS_PER_USER = 5, 1
    other = make_user()
    make_flow(other, endpoint_name="theirs")
    their_client = APIClient()
    their_client.credentials(HTTP_X_API_KEY=api_key_create(user=other).key)
    mine = key_client.get("/api/v1/webhook-events/greet", HTTP_ACCEPT="text/event-stream")
    try:
        assert mine.status_code == 200
        assert key_client.get("/api/v1/webhook-events/greet", HTTP_ACCEPT="text/event-stream").status_code == 429
        theirs = their_client.get("/api/v1/webhook-events/theirs", HTTP_ACCEPT="text/event-stream")
        assert theirs.status_code == 200
        _client_went_away(theirs)
    finally:
        _client_went_away(mine)


def test_a_stream_that_ends_gives_its_slot_back(key_client, flow, user, settings):
    settings.LANGRUN_STREAMS_PER_PROCESS, settings.LANGRUN_STREAMS_PER_USER = 1, 1
    run = new_run(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(status="cancelled", error="Cancelled before it started.")
    for _ in range(3):
        response = key_client.get(f"/api/v1/runs/{run.id}/events", HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 200
        assert b"run_finished" in b"".join(response.streaming_content)  # the test client closes it at the end


def test_a_streamed_run_past_the_share_is_refused_before_anything_is_recorded(key_client, flow, settings):
    settings.LANGRUN_STREAMS_PER_PROCESS, settings.LANGRUN_STREAMS_PER_USER = 0, 0
    answer = key_client.post("/api/v1/run/greet?stream=true", {"input_value": "hi"}, content_type="application/json")
    assert answer.status_code == 429 and int(answer["Retry-After"]) > 0
    assert not FlowRun.objects.exists()


def _client_went_away(response) -> None:
    """What the server does when a stream's client disconnects: it closes the response (without the test client's
    closing of the test's database connection that comes with it outside a request)."""
    from django.core.signals import request_finished
    from django.db import close_old_connections

    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def test_a_streamed_run_refused_after_its_slot_was_taken_gives_the_slot_back(key_client, flow, settings):
    """A 422 raised while the stream holds its slot (tweaks naming no node) records nothing and leaves the slot free."""
    settings.LANGRUN_STREAMS_PER_PROCESS, settings.LANGRUN_STREAMS_PER_USER = 1, 1
    bad = {"input_value": "hi", "tweaks": {"nope": {"x": 1}}}
    refused = key_client.post("/api/v1/run/greet?stream=true", bad, content_type="application/json")
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "tweaks", "nope"]
    assert not FlowRun.objects.exists()
    opened = key_client.get("/api/v1/webhook-events/greet", HTTP_ACCEPT="text/event-stream")
    assert opened.status_code == 200
    _client_went_away(opened)


def test_run_stream_given_twice_is_422(key_client, flow):
    answer = key_client.post("/api/v1/run/greet?stream=true&stream=false", {"input_value": "hi"}, content_type="application/json")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "stream"]
