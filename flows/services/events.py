"""Event streams read from the run ledger: a run's progress, `/run?stream=true`, a flow's webhook runs.

Nothing here waits on a queue the worker pushes to: each stream reads the ledger (the run row and its node
results, which the worker records as nodes finish) at an interval and turns what changed into events. So a
stream works whichever process or machine executes the run, and needs no broker of its own.

A *source* has `poll() -> (chunks, done)`: the text to send since the last poll, and whether the stream is
over. `event_stream()` drives a source as a plain generator, with keep-alives and a bounded lifetime; a
view hands it to a StreamingHttpResponse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from flows.models import Flow, FlowRun, NodeResult
from flows.services import langflow
from flows.services.versions import flow_run_graph_data
from flows.services.watch import WATCH
from langrun.db import connection_give_back
from langrun.waits import parked

KEEPALIVE = ": keep-alive\n\n"
EXPIRED = ": the stream's lifetime is over; reconnect to go on\n\n"
_FINISHED = (NodeResult.Status.SUCCEEDED, NodeResult.Status.FAILED, NodeResult.Status.SKIPPED)


class EventSource(Protocol):
    """What a stream reads: `poll()` gives the chunks to send since the last call and whether the stream is over."""

    def poll(self) -> tuple[list[str], bool]: ...

    def keepalive(self) -> str:
        """What to send when nothing was sent for a while ("" for nothing)."""
        ...

    def expired(self) -> str:
        """The last words of a stream whose lifetime is over."""
        ...


def _json(data: Any) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder)


def sse(event: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {_json(data)}\n\n"


def langflow_record(event: str, data: Any) -> str:
    """One record of Langflow's `/run?stream=true`: a JSON line `{"event", "data"}` and a blank line (not SSE fields)."""
    return _json({"event": event, "data": data}) + "\n\n"


def event_stream(
    source: EventSource, *, poll: float | None = None, keepalive: float | None = None, lifetime: float | None = None, sleep=None
) -> Iterator[str]:
    """Drive `source` until it is done or `lifetime` seconds passed, sending a keep-alive when nothing was sent
    for `keepalive` seconds. A client that went away is noticed at the next write (at the latest the next
    keep-alive): the server closes this generator, and nothing is left behind.

    Between two reads the stream is parked (langrun.waits), without a database connection from its process's pool:
    it reads again when the process's watch of the ledger (flows/services/watch.py) rings its doorbell, or for a
    keep-alive. Given `sleep` (or inside a transaction, whose rows the watch cannot see) it reads every `poll` seconds.
    """
    poll = settings.LANGRUN_STREAM_POLL if poll is None else poll
    keepalive = settings.LANGRUN_STREAM_KEEPALIVE if keepalive is None else keepalive
    lifetime = settings.LANGRUN_STREAM_LIFETIME if lifetime is None else lifetime
    follows = getattr(source, "follows", None)
    doorbell = WATCH.follow(follows) if sleep is None and follows is not None and not connection.in_atomic_block else None
    sleep = sleep or time.sleep
    # A first read with nothing to send is followed by a keep-alive at once: the answer's headers go out with the
    # first bytes, and a client (or its proxy) that got none would be waiting a keep-alive period for them.
    started = time.monotonic()
    last = started - keepalive
    try:
        while True:
            chunks, done = source.poll()
            connection_give_back()
            now = time.monotonic()
            if chunks:
                yield "".join(chunks)
                last = now
            if done:
                return
            if now - started >= lifetime:
                yield source.expired()
                return
            if now - last >= keepalive:
                beat = source.keepalive()
                if beat:
                    yield beat
                last = now
            with parked():
                if doorbell is None:
                    sleep(poll)
                else:
                    doorbell.wait(min(last + keepalive, started + lifetime) - time.monotonic())
    finally:
        if doorbell is not None:
            WATCH.unfollow(doorbell)


# --- Reading a run's progress --------------------------------------------------------------------------------


class _Progress:
    """What was already told of one run's nodes, to tell only what changed."""

    def __init__(self):
        self.started: set[str] = set()
        self.finished: set[str] = set()

    def changes(self, nodes: list[NodeResult]) -> list[tuple[str, NodeResult]]:
        """("started" | "finished", node) for each node that started or finished since the last call, in order."""
        out = []
        for node in nodes:
            if node.node_id not in self.started:
                self.started.add(node.node_id)
                out.append(("started", node))
            if node.status in _FINISHED and node.node_id not in self.finished:
                self.finished.add(node.node_id)
                out.append(("finished", node))
        return out


def _nodes_of(run_ids) -> dict[Any, list[NodeResult]]:
    by_run: dict[Any, list[NodeResult]] = {}
    for node in NodeResult.objects.filter(run_id__in=list(run_ids)).order_by("order"):
        by_run.setdefault(node.run_id, []).append(node)
    return by_run


class RunEventsSource:
    """langrun's events of one run: `node_started`, `node_finished` (with its output), `run_finished`; over when the run is."""

    def __init__(self, *, run_id):
        self.run_id = run_id
        self.follows = ("run", str(run_id))
        self.progress = _Progress()

    def keepalive(self) -> str:
        return KEEPALIVE

    def expired(self) -> str:
        return EXPIRED

    def poll(self) -> tuple[list[str], bool]:
        run = FlowRun.objects.filter(pk=self.run_id).only("status", "outputs", "error", "finished_at").first()
        if run is None:  # deleted meanwhile (retention, its flow deleted)
            return [sse("run_finished", {"run_id": self.run_id, "status": None, "outputs": None, "error": "The run was deleted."})], True
        chunks = []
        for change, node in self.progress.changes(_nodes_of([self.run_id]).get(run.pk, [])):
            data = {"run_id": run.pk, "node_id": node.node_id, "type": node.component_type}
            if change == "started":
                chunks.append(sse("node_started", data))
            else:
                data.update(status=node.status, output=node.output, error=node.error, duration_ms=node.duration_ms)
                chunks.append(sse("node_finished", data))
        if run.status in FlowRun.TERMINAL:
            chunks.append(sse("run_finished", {"run_id": run.pk, "status": run.status, "outputs": run.outputs, "error": run.error}))
            return chunks, True
        return chunks, False


class RunStreamSource:
    """Langflow's `/run?stream=true` for one run: `add_message` per text output as its node finishes, then `end`
    with the RunResponse, or `error` for a run that failed."""

    def __init__(self, *, run_id, flow: Flow, input_value: str | None, output_type: str, output_component: str, session_id: str, render):
        self.run_id = run_id
        self.flow = flow
        self.input_value = input_value
        self.output_type = output_type
        self.output_component = output_component
        self.session_id = session_id
        self.render = render  # the RunResponse as the API renders it (the view's serializer)
        self.follows = ("run", str(run_id))
        self.progress = _Progress()
        self.outputs: set[str] | None = None
        self.greeted = False

    def keepalive(self) -> str:
        return ""  # Langflow's clients read every record as JSON, and Langflow sends nothing between events

    def expired(self) -> str:
        message = f"The run {self.run_id} is still going; follow it at /api/v1/runs/{self.run_id}."
        return langflow_record("error", {"error": message})

    def poll(self) -> tuple[list[str], bool]:
        run = FlowRun.objects.select_related("version").filter(pk=self.run_id).first()
        if run is None:
            return [langflow_record("error", {"error": "The run was deleted."})], True
        run.flow = self.flow
        chunks = []
        if not self.greeted:
            self.greeted = True
            if self.input_value:
                message = langflow.langflow_message(
                    text=self.input_value,
                    run=run,
                    session_id=self.session_id,
                    component_id=None,
                    sender=langflow.USER_SENDER,
                    sender_name=langflow.USER_SENDER_NAME,
                )
                chunks.append(langflow_record("add_message", message))
        if self.outputs is None:
            self.outputs = langflow.output_node_ids(run)
        for change, node in self.progress.changes(_nodes_of([run.pk]).get(run.pk, [])):
            value = node.output.get("value") if isinstance(node.output, dict) else None
            if (
                change == "finished"
                and node.node_id in self.outputs
                and node.status == NodeResult.Status.SUCCEEDED
                and isinstance(value, str)
            ):
                message = langflow.langflow_message(text=value, run=run, session_id=self.session_id, component_id=node.node_id)
                chunks.append(langflow_record("add_message", message))
        if run.status not in FlowRun.TERMINAL:
            return chunks, False
        if run.status == FlowRun.Status.SUCCEEDED:
            answer = langflow.run_response(
                run,
                inputs={"input_value": self.input_value},
                output_type=self.output_type,
                output_component=self.output_component,
                session_id=self.session_id,
            )
            chunks.append(langflow_record("end", {"result": self.render(answer)}))
        else:
            chunks.append(langflow_record("error", {"error": run.error or f"The run ended {run.status}."}))
        return chunks, True


class WebhookEventsSource:
    """Langflow's webhook-events stream of one flow: the build events of its webhook runs received since the
    stream opened (`vertices_sorted`, `build_start`, `add_message`, `end_vertex`, `end`), and a `heartbeat`
    when nothing happened for a while. Never over by itself."""

    def __init__(self, *, flow: Flow, clock: Callable[[], Any] = timezone.now):
        self.flow = flow
        self.clock = clock
        self.opened = clock()
        self.last_poll = self.opened
        self.follows = ("flow", str(flow.id), self.opened)
        self.runs: dict[Any, _Progress] = {}
        self.ended: dict[Any, Any] = {}  # run id -> when it ended, kept while a poll could still see it
        self.greeted = False

    def keepalive(self) -> str:
        return sse("heartbeat", {"timestamp": time.time()})

    def expired(self) -> str:
        return EXPIRED

    def poll(self) -> tuple[list[str], bool]:
        chunks = []
        if not self.greeted:
            self.greeted = True
            chunks.append(sse("connected", {"flow_id": str(self.flow.id), "flow_name": self.flow.name}))
        now = self.clock()
        window = self.last_poll - timedelta(seconds=5)  # a run that finished between two polls is still seen
        self.last_poll = now
        runs = list(
            FlowRun.objects.filter(flow_id=self.flow.id, trigger=FlowRun.Trigger.WEBHOOK, received_at__gte=self.opened)
            .filter(Q(finished_at__isnull=True) | Q(finished_at__gte=window))
            .exclude(pk__in=list(self.ended))
            .select_related("version")
            .order_by("received_at")
        )
        self.ended = {pk: at for pk, at in self.ended.items() if at >= window}
        started = [run for run in runs if run.status != FlowRun.Status.QUEUED]
        nodes = _nodes_of([run.pk for run in started]) if started else {}
        for run in started:
            run.flow = self.flow
            chunks.extend(self._run_events(run, nodes.get(run.pk, [])))
        return chunks, False

    def _run_events(self, run: FlowRun, nodes: list[NodeResult]) -> list[str]:
        chunks = []
        progress = self.runs.get(run.pk)
        if progress is None:
            progress = self.runs[run.pk] = _Progress()
            graph = flow_run_graph_data(run=run) or {}
            ids = [n.get("id") for n in graph.get("nodes", []) if isinstance(n, dict)]
            chunks.append(sse("vertices_sorted", {"ids": ids, "to_run": ids, "run_id": str(run.pk)}))
        outputs = langflow.output_node_ids(run)
        session_id = str(self.flow.id)
        for change, node in progress.changes(nodes):
            if change == "started":
                chunks.append(sse("build_start", {"id": node.node_id}))
                continue
            if node.status == NodeResult.Status.SKIPPED:
                continue  # an unchosen branch: Langflow builds no vertex for it
            data = langflow.result_data(run, node, session_id=session_id, is_output=node.node_id in outputs)
            if "message" in data["outputs"]:
                chunks.append(sse("add_message", data["results"]["message"]))
            build = {
                "id": node.node_id,
                "valid": node.status == NodeResult.Status.SUCCEEDED,
                "params": node.error or None,
                "data": {k: data[k] for k in ("results", "outputs", "logs", "messages", "duration")},
                "artifacts": data["artifacts"],
                "timestamp": langflow.langflow_timestamp(run.finished_at),
                "messages": data["messages"],
                "inactivated_vertices": [],
                "next_vertices_ids": [],
                "top_level_vertices": [],
                "build_id": str(run.pk),
            }
            chunks.append(sse("end_vertex", {"build_data": build}))
        if run.status in FlowRun.TERMINAL:
            chunks.append(sse("end", {"run_id": str(run.pk), "success": run.status == FlowRun.Status.SUCCEEDED}))
            self.runs.pop(run.pk, None)
            self.ended[run.pk] = run.finished_at or self.clock()
        return chunks
