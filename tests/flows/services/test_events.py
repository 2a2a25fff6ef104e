"""flows.services.events: streams read from the run ledger, fed here as the worker feeds it (node rows as nodes start and finish)."""

import json

import pytest
from django.utils import timezone

from flows.models import FlowRun, NodeResult
from flows.services.events import RunEventsSource, RunStreamSource, WebhookEventsSource, event_stream
from flows.services.runs import flow_run_create
from tests.helpers import new_run


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def drain(source) -> tuple[list[tuple[str, dict]], bool]:
    chunks, done = source.poll()
    return parse_sse("".join(chunks)), done


def node(run, node_id, status, order, *, type_="Template", output=None, error=""):
    """Write a node's row as the worker does: `running` when it starts, then its outcome."""
    NodeResult.objects.update_or_create(
        run=run,
        node_id=node_id,
        defaults={"component_type": type_, "status": status, "output": output, "error": error, "order": order, "duration_ms": 1.5},
    )


def finish(run, status="succeeded", outputs=None, error=""):
    FlowRun.objects.filter(pk=run.pk).update(status=status, outputs=outputs, error=error, finished_at=timezone.now())


def start(run):
    FlowRun.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now(), attempts=1)


def test_run_events_follow_the_nodes_as_they_are_recorded(flow, user):
    run = new_run(flow, user)
    source = RunEventsSource(run_id=run.pk)
    assert drain(source) == ([], False)
    start(run)
    node(run, "hook", "running", 0, type_="Webhook")
    events, done = drain(source)
    assert [e for e, _ in events] == ["node_started"] and not done
    assert events[0][1] == {"run_id": str(run.pk), "node_id": "hook", "type": "Webhook"}
    node(run, "hook", "succeeded", 0, type_="Webhook", output={"data": {"name": "Ada"}})
    node(run, "greet", "succeeded", 1, output={"text": "Hello Ada!"})  # started and finished between two reads
    events, done = drain(source)
    assert [(e, d["node_id"]) for e, d in events] == [("node_finished", "hook"), ("node_started", "greet"), ("node_finished", "greet")]
    assert events[2][1]["output"] == {"text": "Hello Ada!"} and events[2][1]["status"] == "succeeded"
    assert drain(source) == ([], False)  # nothing new: nothing sent
    node(run, "out", "succeeded", 2, type_="Output", output={"value": "Hello Ada!"})
    finish(run, outputs={"greeting": "Hello Ada!"})
    events, done = drain(source)
    assert [e for e, _ in events] == ["node_started", "node_finished", "run_finished"] and done
    assert events[-1][1] == {"run_id": str(run.pk), "status": "succeeded", "outputs": {"greeting": "Hello Ada!"}, "error": ""}


def test_a_finished_run_gives_its_whole_history_at_once_and_ends(flow, user):
    run = new_run(flow, user)
    node(run, "hook", "succeeded", 0, type_="Webhook", output={})
    node(run, "greet", "failed", 1, error="Template key 'name' is missing")
    node(run, "out", "skipped", 2, type_="Output")
    finish(run, status="failed", error="Node 'greet' failed")
    events, done = drain(RunEventsSource(run_id=run.pk))
    assert done and [e for e, _ in events] == ["node_started", "node_finished"] * 3 + ["run_finished"]
    assert events[3][1]["error"] == "Template key 'name' is missing" and events[-1][1]["status"] == "failed"


class Quiet:
    """A source with nothing to say, counting its reads."""

    def __init__(self):
        self.polls = 0

    def poll(self):
        self.polls += 1
        return [], False

    def keepalive(self):
        return ": keep-alive\n\n"

    def expired(self):
        return ": reconnect\n\n"


def test_the_stream_sends_keepalives_and_ends_after_its_lifetime(monkeypatch):
    import flows.services.events as events_module

    clock = [0.0]
    monkeypatch.setattr(events_module.time, "monotonic", lambda: clock[0])
    sent = []

    def sleep(seconds):
        clock[0] += seconds

    for chunk in event_stream(Quiet(), poll=1, keepalive=5, lifetime=12, sleep=sleep):
        sent.append((clock[0], chunk))
    # The first at once, when there is nothing else to send: a client (and its proxy) get the answer's headers now,
    # not a keep-alive period later.
    assert sent[:3] == [(0.0, ": keep-alive\n\n"), (5.0, ": keep-alive\n\n"), (10.0, ": keep-alive\n\n")]
    assert "reconnect" in sent[-1][1] and len(sent) == 4


def test_a_closed_stream_reads_no_more():
    source = Quiet()
    stream = event_stream(source, poll=0, keepalive=0, lifetime=60, sleep=lambda s: None)
    next(stream)
    stream.close()  # what the server does when the client went away
    polls = source.polls
    with pytest.raises(StopIteration):
        next(stream)
    assert source.polls == polls


def test_webhook_events_tell_the_flows_webhook_runs_in_langflows_format(flow, user, make_flow):
    before = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Old"})
    source = WebhookEventsSource(flow=flow)
    events, done = drain(source)
    assert events == [("connected", {"flow_id": str(flow.id), "flow_name": flow.name})] and not done
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    by_api = new_run(flow, user)  # not a webhook run
    theirs = make_flow(user, endpoint_name="other")
    other = flow_run_create(flow=theirs, user=user, trigger="webhook", payload={"name": "Bo"})
    assert drain(source) == ([], False)  # queued: nothing has happened yet
    for r in (before, run, by_api, other):
        start(r)
    node(run, "hook", "running", 0, type_="Webhook")
    events, _ = drain(source)
    assert [e for e, _ in events] == ["vertices_sorted", "build_start"]
    assert events[0][1] == {"ids": ["hook", "greet", "out"], "to_run": ["hook", "greet", "out"], "run_id": str(run.pk)}
    node(run, "hook", "succeeded", 0, type_="Webhook", output={"data": {"name": "Ada"}})
    node(run, "greet", "succeeded", 1, output={"text": "Hello Ada!"})
    node(run, "out", "succeeded", 2, type_="Output", output={"value": "Hello Ada!"})
    finish(run, outputs={"greeting": "Hello Ada!"})
    events, _ = drain(source)
    names = [e for e, _ in events]
    assert names == ["end_vertex", "build_start", "end_vertex", "build_start", "add_message", "end_vertex", "end"]
    assert events[4][1]["text"] == "Hello Ada!" and events[4][1]["sender"] == "Machine"
    build = events[5][1]["build_data"]
    assert build["id"] == "out" and build["valid"] and build["data"]["results"]["message"]["text"] == "Hello Ada!"
    assert events[-1][1] == {"run_id": str(run.pk), "success": True}
    assert drain(source) == ([], False)  # an ended run is told once
    assert source.keepalive().startswith('event: heartbeat\ndata: {"timestamp": ')


def test_run_stream_is_langflows_records(flow, user):
    run = new_run(flow, user)
    source = RunStreamSource(
        run_id=run.pk,
        flow=flow,
        input_value='{"name": "Ada"}',
        output_type="chat",
        output_component="",
        session_id="s1",
        render=lambda answer: json.loads(json.dumps(answer, default=str)),
    )

    def records():
        chunks, done = source.poll()
        text = "".join(chunks)
        return [json.loads(r) for r in text.split("\n\n") if r], done

    first, done = records()
    assert [r["event"] for r in first] == ["add_message"] and first[0]["data"]["sender"] == "User" and not done
    node(run, "out", "succeeded", 2, type_="Output", output={"value": "Hello Ada!"})
    finish(run, outputs={"greeting": "Hello Ada!"})
    rest, done = records()
    assert [r["event"] for r in rest] == ["add_message", "end"] and done
    assert rest[0]["data"]["text"] == "Hello Ada!" and rest[0]["data"]["session_id"] == "s1"
    assert rest[1]["data"]["result"]["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Hello Ada!"


def test_run_stream_sends_no_keepalive_and_ends_with_an_error_record_when_its_lifetime_is_over(flow, user):
    run = new_run(flow, user)
    source = RunStreamSource(
        run_id=run.pk, flow=flow, input_value=None, output_type="chat", output_component="", session_id="s", render=dict
    )
    chunks = list(event_stream(source, poll=0.01, keepalive=0, lifetime=0.05))
    records = [json.loads(r) for r in "".join(chunks).split("\n\n") if r]  # every record is JSON, as Langflow's clients read them
    assert records == [{"event": "error", "data": {"error": f"The run {run.pk} is still going; follow it at /api/v1/runs/{run.pk}."}}]


def test_run_stream_of_a_failed_run_ends_with_an_error(flow, user):
    run = new_run(flow, user)
    finish(run, status="failed", error="Node 'greet' failed")
    source = RunStreamSource(
        run_id=run.pk, flow=flow, input_value=None, output_type="chat", output_component="", session_id="s", render=dict
    )
    chunks, done = source.poll()
    assert done and [json.loads(r) for r in "".join(chunks).split("\n\n") if r] == [
        {"event": "error", "data": {"error": "Node 'greet' failed"}}
    ]
