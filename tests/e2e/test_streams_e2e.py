"""Event streams read from a live server: /run?stream=true, /runs/{id}/events and Langflow's webhook-events."""

import json
import queue
import threading
import time

import pytest
import requests
from django.utils import timezone

from flows.models import FlowRun, NodeResult
from flows.services.runs import flow_run_create

pytestmark = pytest.mark.e2e


def sse_events(response, until: str | None = None, out: queue.Queue | None = None) -> list[tuple[str, dict]]:
    """The server-sent events of a streamed response, read as they come, until the stream ends (or event `until`)."""
    events, fields = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
            continue
        if "event" in fields:
            event = (fields["event"], json.loads(fields["data"]))
            events.append(event)
            if out is not None:
                out.put(event)
            if event[0] == until:
                break
        fields = {}
    return events


def test_run_stream_is_langflows(service, setup_flow):
    flow, key = setup_flow
    with requests.post(
        f"{service.url}/api/v1/run/greet?stream=true",
        json={"input_value": '{"name": "Ada"}', "session_id": "chat-1"},
        headers={"x-api-key": key, "accept": "application/json"},
        stream=True,
        timeout=30,
    ) as response:
        assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        records = [json.loads(r) for r in response.text.split("\n\n") if r.strip()]
    assert [r["event"] for r in records] == ["add_message", "add_message", "end"]
    assert records[0]["data"]["sender"] == "User" and records[1]["data"]["text"] == "Hello Ada!"
    result = records[-1]["data"]["result"]
    assert result["session_id"] == "chat-1" and result["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Hello Ada!"
    assert FlowRun.objects.get().status == "succeeded"


def test_run_stream_bad_flag_is_422(service, setup_flow):
    _, key = setup_flow
    response = requests.post(f"{service.url}/api/v1/run/greet?stream=maybe", json={}, headers={"x-api-key": key}, timeout=30)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "stream"]


def test_run_events_follow_a_run_as_its_nodes_are_recorded(service, setup_flow):
    flow, key = setup_flow
    run = flow_run_create(flow=flow, user=flow.user, trigger="api", payload={"name": "Ada"})  # no cluster: the test is the worker
    got: queue.Queue = queue.Queue()
    url = f"{service.url}/api/v1/runs/{run.id}/events"
    asked = time.monotonic()
    with requests.get(url, headers={"x-api-key": key, "accept": "text/event-stream"}, stream=True, timeout=30) as response:
        # A queued run has nothing to tell yet: the headers come at once all the same, not with the first keep-alive.
        assert time.monotonic() - asked < 5
        assert response.headers["Content-Type"].startswith("text/event-stream")
        reader = threading.Thread(target=sse_events, args=(response,), kwargs={"out": got}, daemon=True)
        reader.start()
        FlowRun.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now(), attempts=1)
        NodeResult.objects.create(run=run, node_id="hook", component_type="Webhook", status="running", order=0)
        assert got.get(timeout=10) == ("node_started", {"run_id": str(run.id), "node_id": "hook", "type": "Webhook"})
        NodeResult.objects.filter(run=run, node_id="hook").update(status="succeeded", output={"data": {}})
        assert got.get(timeout=10)[0] == "node_finished"
        FlowRun.objects.filter(pk=run.pk).update(status="succeeded", outputs={"greeting": "x"}, finished_at=timezone.now())
        assert got.get(timeout=10) == (
            "run_finished",
            {"run_id": str(run.id), "status": "succeeded", "outputs": {"greeting": "x"}, "error": ""},
        )
        reader.join(10)
        assert not reader.is_alive()  # the stream ended with the run
    # A finished run: its whole history, then the end.
    with requests.get(url, headers={"x-api-key": key}, stream=True, timeout=30) as again:
        assert [e for e, _ in sse_events(again)] == ["node_started", "node_finished", "run_finished"]
    assert requests.get(url, timeout=10).status_code == 403


def test_webhook_events_stream_a_webhook_run_live(service, setup_flow):
    flow, key = setup_flow
    service.start_cluster()
    got: queue.Queue = queue.Queue()
    with requests.get(f"{service.url}/api/v1/webhook-events/greet", headers={"x-api-key": key}, stream=True, timeout=60) as response:
        reader = threading.Thread(target=sse_events, args=(response,), kwargs={"until": "end", "out": got}, daemon=True)
        reader.start()
        assert got.get(timeout=10) == ("connected", {"flow_id": str(flow.id), "flow_name": "Greeting"})
        hook = requests.post(f"{service.url}/api/v1/webhook/greet", json={"name": "Ada"}, headers={"x-api-key": key}, timeout=10)
        assert hook.status_code == 202
        events = []
        while not events or events[-1][0] != "end":
            events.append(got.get(timeout=60))
    names = [e for e, _ in events]
    assert names[0] == "vertices_sorted" and names[-1] == "end" and "add_message" in names
    assert [d["build_data"]["id"] for e, d in events if e == "end_vertex"] == ["hook", "greet", "out"]
    assert events[-1][1] == {"run_id": hook.json()["run_id"], "success": True}
    assert next(d for e, d in events if e == "add_message")["text"] == "Hello Ada!"


def test_a_stream_whose_client_went_away_gives_back_its_slot(tmp_path, transactional_db, setup_flow):
    from tests.e2e.helpers import Service

    flow, key = setup_flow
    service = Service(tmp_path)
    # One process with two stream slots: the streams of clients that went away must free them for new ones.
    service.env.update(LANGRUN_STREAM_KEEPALIVE="0.5", LANGRUN_STREAMS_PER_PROCESS="2", LANGRUN_STREAMS_PER_USER="2")
    service.start_web(["-m", "gunicorn", "langrun.wsgi", "--bind", f"127.0.0.1:{service.port}", "--workers", "1"])

    def open_and_leave() -> list[int]:
        """Open two streams, read their first event, and go away."""
        codes = []
        for _ in range(2):
            stream = requests.get(f"{service.url}/api/v1/webhook-events/greet", headers={"x-api-key": key}, stream=True, timeout=10)
            codes.append(stream.status_code)
            if stream.status_code == 200:
                assert next(stream.iter_lines()).startswith(b"event: connected")
            stream.close()  # the client goes away
        return codes

    try:
        assert open_and_leave() == [200, 200]
        # Noticed at a keep-alive after the client left; each try that gets one slot leaves a stream of its own to
        # be noticed too, so a loaded machine may take a few keep-alives.
        deadline = time.monotonic() + 15
        while (codes := open_and_leave()) != [200, 200]:
            assert time.monotonic() < deadline, f"the slots of streams whose clients went away were not given back: {codes}"
            time.sleep(0.2)
    finally:
        service.stop()


def test_streams_past_the_share_are_refused_and_leave_threads_to_webhooks(tmp_path, transactional_db, setup_flow):
    """One account opening many streams cannot take every thread of the web: past its share each gets 429 with
    Retry-After, and a webhook is still answered at once while the others stay open."""
    from tests.e2e.helpers import Service

    flow, key = setup_flow
    service = Service(tmp_path)
    service.env.update(WEB_THREADS="2", LANGRUN_STREAMS_PER_PROCESS="1", LANGRUN_STREAMS_PER_USER="1")
    service.start_web()  # 2 processes x 2 threads, one stream each
    opened = []
    try:
        codes = []
        for _ in range(8):
            answer = requests.get(f"{service.url}/api/v1/webhook-events/greet", headers={"x-api-key": key}, stream=True, timeout=10)
            codes.append(answer.status_code)
            if answer.status_code == 200:
                opened.append(answer)
                assert next(answer.iter_lines()).startswith(b"event: connected")
            else:
                assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0, answer.text
        assert 1 <= codes.count(200) <= 2, codes
        started = time.monotonic()
        for n in range(10):
            hook = requests.post(f"{service.url}/api/v1/webhook/greet", json={"n": n}, headers={"x-api-key": key}, timeout=10)
            assert hook.status_code == 202, hook.text
        assert time.monotonic() - started < 5
    finally:
        for answer in opened:
            answer.close()
        service.stop()
