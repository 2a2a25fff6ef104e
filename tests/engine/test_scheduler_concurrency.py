"""The async runner: runs and branches that wait on the network overlap on one event loop; the time limit,
a failure and a cancel stop the HTTP calls in flight (the server sees the connection closed); progress
reaches on_node; slow sync work (a hostile regex, a sleeping component) leaves the loop to other runs."""

import asyncio
import threading
import time

import pytest

import tests.components  # noqa: F401 - registers TestSideEffect
from flows.engine import Component, Input, Output, RunContext, parse_graph, registry, run_graph, run_graph_async
from flows.engine.registry import Registry

LOCAL = ("127.0.0.1",)


class SlowServer:
    """An HTTP server on the test's loop: answers after `delay` seconds; `/hang` never answers and notes
    when the client closes the connection; `/status/NNN` answers NNN at once."""

    def __init__(self, delay: float = 0.5):
        self.delay = delay
        self.requests = self.in_flight = self.peak = 0
        self.hanging = asyncio.Event()  # a request reached /hang
        self.closed = asyncio.Event()  # the client closed a /hang connection
        self.closed_at: float | None = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            path = head.split(" ", 2)[1]
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if path.startswith("/hang"):
                self.hanging.set()
                if await reader.read(1) == b"":
                    self.closed_at = time.monotonic()
                    self.closed.set()
                return
            if path.startswith("/status/"):
                status = int(path.rsplit("/", 1)[1])
            else:
                status = 200
                await asyncio.sleep(self.delay)
            body = b'{"ok": true}'
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.in_flight -= 1
            writer.close()


def call_flow(url: str, *, timeout: float = 30) -> dict:
    return {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "early", "type": "Output", "params": {"name": "early"}},
            {"id": "call", "type": "HTTPRequest", "params": {"method": "POST", "url": url, "body": {"ping": True}, "timeout": timeout}},
            {"id": "out", "type": "Output", "params": {"name": "answer"}},
        ],
        "edges": [
            {"source": "hook", "target": "early", "target_input": "value"},
            {"source": "hook", "target": "call", "target_input": "data"},
            {"source": "call", "source_output": "body", "target": "out", "target_input": "value"},
        ],
    }


def context(payload=None) -> RunContext:
    return RunContext(payload=payload, http_allowed_hosts=LOCAL)


def statuses(result) -> dict[str, str]:
    return {n.node_id: n.status for n in result.nodes}


# --- Overlap -------------------------------------------------------------------------------------


def test_200_runs_waiting_on_a_slow_server_overlap_on_one_loop():
    async def main():
        async with SlowServer(delay=0.5) as server:
            graph = parse_graph(call_flow(server.url + "/slow"))
            started = time.monotonic()
            results = await asyncio.gather(*(run_graph_async(graph, context=context({"n": n}), timeout=60) for n in range(200)))
            return server, results, time.monotonic() - started

    server, results, elapsed = asyncio.run(main())
    assert [r.status for r in results] == ["succeeded"] * 200, {r.error for r in results}
    assert all(r.outputs == {"early": {"n": n}, "answer": {"ok": True}} for n, r in enumerate(results))
    assert server.requests == 200 and server.peak > 100
    assert elapsed < 20  # one after another: 100 s


def test_independent_branches_of_one_graph_run_concurrently():
    async def main():
        async with SlowServer(delay=0.6) as server:
            graph = parse_graph(
                {
                    "nodes": [
                        {"id": "hook", "type": "Webhook"},
                        {"id": "a", "type": "HTTPRequest", "params": {"url": server.url + "/a"}},
                        {"id": "b", "type": "HTTPRequest", "params": {"url": server.url + "/b"}},
                        {"id": "join", "type": "JSONBuild"},
                        {"id": "out", "type": "Output", "params": {"name": "both"}},
                    ],
                    "edges": [
                        {"source": "hook", "target": "a", "target_input": "data"},
                        {"source": "hook", "target": "b", "target_input": "data"},
                        {"source": "a", "source_output": "status", "target": "join", "target_input": "a"},
                        {"source": "b", "source_output": "status", "target": "join", "target_input": "b"},
                        {"source": "join", "target": "out", "target_input": "value"},
                    ],
                }
            )
            started = time.monotonic()
            result = await run_graph_async(graph, context=context())
            return server, result, time.monotonic() - started

    server, result, elapsed = asyncio.run(main())
    assert result.status == "succeeded" and result.outputs == {"both": {"a": 200, "b": 200}}
    assert server.peak == 2 and elapsed < 1.1  # one after the other: 1.2 s
    assert [(n.node_id, n.order) for n in result.nodes] == [("hook", 0), ("a", 1), ("b", 2), ("join", 3), ("out", 4)]


# --- Stopping nodes in flight ---------------------------------------------------------------------------


def test_the_run_time_limit_ends_a_run_waiting_on_the_network_and_closes_its_connection():
    async def main():
        async with SlowServer() as server:
            graph = parse_graph(call_flow(server.url + "/hang"))
            started = time.monotonic()
            result = await run_graph_async(graph, context=context(), timeout=0.5)
            elapsed = time.monotonic() - started
            await asyncio.wait_for(server.closed.wait(), 2)
            return server, result, elapsed, server.closed_at - started

    server, result, elapsed, closed_after = asyncio.run(main())
    assert result.status == "failed" and result.timed_out and not result.retryable
    assert result.error.startswith("The run exceeded its time limit of 0.5 s in node 'call' (HTTPRequest)")
    assert statuses(result) == {"hook": "succeeded", "early": "succeeded", "call": "failed", "out": "skipped"}
    assert 0.45 < elapsed < 1.5 and closed_after < 1.5


class Nap(Component):
    """Awaits `seconds` (no time limit of its own)."""

    name = "Nap"
    inputs = (Input("seconds", "number", connectable=False), Input("data", "any", required=False))
    outputs = (Output("data", "any"),)

    async def run(self, *, seconds, data=None):
        await asyncio.sleep(seconds)
        return {"data": data}


class Doze(Component):
    """Sleeps `seconds` in its thread (sync, not quick)."""

    name = "Doze"
    inputs = (Input("seconds", "number", connectable=False), Input("data", "any", required=False))
    outputs = (Output("data", "any"),)

    def run(self, *, seconds, data=None):
        time.sleep(seconds)
        return {"data": data}


@pytest.fixture
def local_registry():
    reg = Registry()
    for name in ("Webhook", "Output", "Condition", "HTTPRequest"):
        reg.register(registry.get(name))
    reg.register(Nap)
    reg.register(Doze)
    return reg


def test_the_run_time_limit_stops_an_awaited_node_without_a_limit_of_its_own(local_registry):
    data = {
        "nodes": [{"id": "nap", "type": "Nap", "params": {"seconds": 30}}, {"id": "out", "type": "Output"}],
        "edges": [{"source": "nap", "target": "out"}],
    }
    graph = parse_graph(data, registry=local_registry)
    started = time.monotonic()
    result = run_graph(graph, timeout=0.3, registry=local_registry)
    assert time.monotonic() - started < 1.2
    assert result.status == "failed" and result.timed_out and not result.retryable
    assert result.error == "The run exceeded its time limit of 0.3 s in node 'nap' (Nap): it was still running."
    assert [(n.status, n.error) for n in result.nodes] == [("failed", "Still running at the run's time limit of 0.3 s."), ("skipped", "")]


def test_a_failing_branch_fails_the_run_at_once_and_stops_the_call_in_flight():
    async def main():
        async with SlowServer() as server:
            data = call_flow(server.url + "/hang")
            data["nodes"].append({"id": "bad", "type": "HTTPRequest", "params": {"url": server.url + "/status/503"}})
            data["edges"].append({"source": "hook", "target": "bad", "target_input": "data"})
            started = time.monotonic()
            result = await run_graph_async(parse_graph(data), context=context())
            elapsed = time.monotonic() - started
            await asyncio.wait_for(server.closed.wait(), 2)
            return result, elapsed

    result, elapsed = asyncio.run(main())
    assert elapsed < 2
    assert result.status == "failed" and result.retryable and not result.timed_out
    assert result.error.startswith("Node 'bad' (HTTPRequest) failed:") and "answered 503" in result.error
    assert statuses(result) == {"hook": "succeeded", "early": "succeeded", "call": "failed", "bad": "failed", "out": "skipped"}
    assert next(n for n in result.nodes if n.node_id == "call").error.startswith("Stopped: Node 'bad'")


def test_cancel_stops_the_http_call_and_ends_the_run_cancelled_with_the_finished_nodes_recorded():
    async def main():
        async with SlowServer() as server:
            cancel = asyncio.Event()
            run = asyncio.create_task(run_graph_async(parse_graph(call_flow(server.url + "/hang")), context=context("hi"), cancel=cancel))
            await asyncio.wait_for(server.hanging.wait(), 5)
            cancel.set()
            cancelled_at = time.monotonic()
            result = await asyncio.wait_for(run, 2)
            ended = time.monotonic() - cancelled_at
            await asyncio.wait_for(server.closed.wait(), 2)
            return result, ended

    result, ended = asyncio.run(main())
    assert ended < 1
    assert result.status == "cancelled" and result.error == "The run was cancelled." and not result.retryable
    assert result.outputs == {"early": "hi"}
    assert [(n.node_id, n.status, n.error) for n in result.nodes] == [
        ("hook", "succeeded", ""),
        ("early", "succeeded", ""),
        ("call", "failed", "Cancelled while running."),
        ("out", "skipped", ""),
    ]


def test_a_run_cancelled_before_it_starts_runs_nothing():
    async def main():
        cancel = asyncio.Event()
        cancel.set()
        return await run_graph_async(parse_graph(call_flow("http://127.0.0.1:9/")), context=context(), cancel=cancel)

    result = asyncio.run(main())
    assert result.status == "cancelled" and set(statuses(result).values()) == {"skipped"} and result.outputs == {}


# --- Progress --------------------------------------------------------------------------------------------


def test_on_node_sees_each_node_start_and_end_with_secrets_masked():
    seen = []

    def on_node(node):
        seen.append((node.node_id, node.status, node.output))
        raise RuntimeError("a broken progress writer must not break the run")

    async def main():
        async with SlowServer(delay=0.1) as server:
            graph = parse_graph(call_flow(server.url + "/slow"))
            ctx = RunContext(payload={"token": "s3cret"}, http_allowed_hosts=LOCAL, secrets=frozenset({"s3cret"}))
            return await run_graph_async(graph, context=ctx, on_node=on_node)

    result = asyncio.run(main())
    assert result.status == "succeeded"
    for node_id in ("hook", "early", "call", "out"):
        mine = [status for seen_id, status, _ in seen if seen_id == node_id]
        assert mine == ["running", "succeeded"], (node_id, seen)
    # `out` starts only once `call` has ended.
    assert seen.index(("call", "succeeded", result.nodes[2].output)) < [s[:2] for s in seen].index(("out", "running"))
    assert ("hook", "succeeded", {"data": {"token": "********"}}) in seen


def test_on_node_hears_of_skipped_nodes():
    seen = []
    graph = parse_graph(
        {
            "nodes": [
                {"id": "hook", "type": "Webhook"},
                {"id": "if", "type": "Condition", "params": {"operator": "equals", "value": "yes"}},
                {"id": "no", "type": "Output"},
            ],
            "edges": [{"source": "hook", "target": "if"}, {"source": "if", "source_output": "false", "target": "no"}],
        }
    )
    result = asyncio.run(run_graph_async(graph, payload="yes", on_node=lambda n: seen.append((n.node_id, n.status))))
    assert result.status == "succeeded"
    assert seen == [("hook", "running"), ("hook", "succeeded"), ("if", "running"), ("if", "succeeded"), ("no", "skipped")]


# --- Slow sync work leaves the loop -------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|aa)+$"])
def test_a_hostile_regex_does_not_stall_another_run_on_the_same_loop(pattern):
    async def main():
        async with SlowServer(delay=0.5) as server:
            hostile = parse_graph(
                {
                    "nodes": [
                        {"id": "hook", "type": "Webhook"},
                        {"id": "if", "type": "Condition", "params": {"operator": "matches", "value": pattern}},
                    ],
                    "edges": [{"source": "hook", "target": "if"}],
                }
            )
            other = parse_graph(call_flow(server.url + "/slow"))

            started = time.monotonic()

            async def timed(run):
                result = await run
                return result, time.monotonic() - started

            return await asyncio.gather(
                timed(run_graph_async(hostile, payload="a" * 40 + "!")), timed(run_graph_async(other, context=context()))
            )

    (hostile, _), (other, other_took) = asyncio.run(main())
    assert other.status == "succeeded" and other_took < 1.0
    if pattern == r"(a|aa)+$":  # the regex package backtracks on this one until its time limit
        assert hostile.status == "failed" and "took longer than" in hostile.error


def test_a_sync_component_that_waits_runs_in_a_thread_and_the_loop_stays_responsive(tmp_path):
    path = tmp_path / "effects"
    graph = parse_graph(
        {
            "nodes": [
                {"id": "hook", "type": "Webhook"},
                {"id": "wait", "type": "TestSideEffect", "params": {"path": str(path), "delay": 0.5}},
                {"id": "out", "type": "Output"},
            ],
            "edges": [{"source": "hook", "target": "wait", "target_input": "data"}, {"source": "wait", "target": "out"}],
        }
    )

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        results = await asyncio.gather(*(run_graph_async(graph, payload=n) for n in range(3)))
        elapsed = time.monotonic() - started
        ticker.cancel()
        return results, elapsed, ticks

    results, elapsed, ticks = asyncio.run(main())
    assert [r.outputs for r in results] == [{"out": 0}, {"out": 1}, {"out": 2}]
    assert elapsed < 1.2 and ticks > 20  # one after another, with the loop blocked: 1.5 s and no ticks
    assert len(path.read_text().splitlines()) == 3


def test_a_node_in_a_thread_is_waited_for_at_the_time_limit_and_its_result_recorded(local_registry):
    data = {
        "nodes": [{"id": "doze", "type": "Doze", "params": {"seconds": 0.3}}, {"id": "out", "type": "Output"}],
        "edges": [{"source": "doze", "target": "out"}],
    }
    result = run_graph(parse_graph(data, registry=local_registry), timeout=0.1, registry=local_registry)
    assert result.timed_out and "before node 'out'" in result.error
    assert statuses(result) == {"doze": "succeeded", "out": "skipped"}


# --- The sync wrapper -----------------------------------------------------------------------------------


class ServerInThread:
    """A SlowServer on a loop of its own thread, for runs started from synchronous code."""

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(SlowServer(delay=0.05).__aenter__())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self.server

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.server.server.close()
        self.loop.close()


def test_run_graph_works_from_threads_and_twice_in_one_thread():
    outcomes = []
    with ServerInThread() as server:
        graph = parse_graph(call_flow(server.url + "/slow"))

        def runner():
            for _ in range(2):
                outcomes.append(run_graph(graph, context=context("x")).status)

        threads = [threading.Thread(target=runner) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert outcomes == ["succeeded"] * 6


def _longest_gap_while(graph, payloads) -> tuple[list, float]:
    """Run the graph once per payload on one loop beside a ticker; the results, and the longest the loop was held.
    (A node moved to a thread still competes with the loop for the GIL: gaps of some tens of milliseconds remain.)"""

    async def main():
        gaps, last = [0.0], time.monotonic()

        async def tick():
            nonlocal last
            while True:
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.02)
        last = time.monotonic()
        results = await asyncio.gather(*(run_graph_async(graph, payload=p) for p in payloads))
        await asyncio.sleep(0.02)  # the ticker's turn: it measures the gap the runs left
        ticker.cancel()
        return results, max(gaps)

    return asyncio.run(main())


def test_a_long_jmespath_query_leaves_the_loop_to_other_runs():
    graph = parse_graph(
        {
            "nodes": [
                {"id": "hook", "type": "Webhook"},
                {"id": "pick", "type": "Extract", "params": {"query": "items[?a > `-1`].b | length(@)"}},
                {"id": "out", "type": "Output"},
            ],
            "edges": [{"source": "hook", "target": "pick", "target_input": "data"}, {"source": "pick", "target": "out"}],
        }
    )
    big = {"items": [{"a": i, "b": i} for i in range(100_000)]}
    results, gap = _longest_gap_while(graph, [big])
    assert [r.outputs for r in results] == [{"out": 100_000}]
    assert gap < 0.2, gap  # inline, the query held the loop for most of a second


def test_a_giant_template_leaves_the_loop_to_other_runs():
    template = "{name} " * 400_000
    graph = parse_graph(
        {
            "nodes": [
                {"id": "hook", "type": "Webhook"},
                {"id": "text", "type": "Template", "params": {"template": template}},
                {"id": "out", "type": "Output"},
            ],
            "edges": [{"source": "hook", "target": "text", "target_input": "data"}, {"source": "text", "target": "out"}],
        }
    )
    results, gap = _longest_gap_while(graph, [{"name": "Ada"}])
    assert [len(r.outputs["out"]) for r in results] == [1_600_000]
    assert gap < 0.2, gap  # inline, the rendering held the loop for most of a second
