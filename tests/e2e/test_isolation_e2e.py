"""Hostile flows on real processes: a regular expression that backtracks for ever and outputs that
amplify their input fail their own runs, while the runs of other flows sent at the same time succeed."""

import json
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import Service, wait_for_runs
from tests.helpers import GREETING_FLOW

pytestmark = pytest.mark.e2e

# Backtracks exponentially on a run of a's that does not end the text.
HOSTILE_REGEX_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "check", "type": "Condition", "params": {"path": "s", "operator": "matches", "value": "(a|aa)+$"}},
        {"id": "out", "type": "Output", "params": {"name": "matched"}},
    ],
    "edges": [{"source": "hook", "target": "check"}, {"source": "check", "source_output": "true", "target": "out"}],
}
VICTIM = {"s": "a" * 40 + "!"}


def template_flow(template: str) -> dict:
    return {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "render", "type": "Template", "params": {"template": template}},
            {"id": "out", "type": "Output", "params": {"name": "text"}},
        ],
        "edges": [{"source": "hook", "target": "render", "target_input": "data"}, {"source": "render", "target": "out"}],
    }


def extract_flow(query: str) -> dict:
    return {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "pick", "type": "Extract", "params": {"query": query}},
            {"id": "out", "type": "Output", "params": {"name": "value"}},
        ],
        "edges": [{"source": "hook", "target": "pick"}, {"source": "pick", "target": "out"}],
    }


def owner(name: str):
    user = User.objects.create_user(name)
    return user, api_key_create(user=user).key


def post(url: str, key: str, body) -> requests.Response:
    return requests.post(url, json=body, headers={"x-api-key": key}, timeout=30)


def seconds(run: FlowRun) -> float:
    return (run.finished_at - run.received_at).total_seconds()


def test_a_hostile_regex_fails_its_runs_at_their_time_limit_and_other_flows_runs_succeed_promptly(service, transactional_db):
    attacker, attacker_key = owner("attacker")
    other, other_key = owner("other")
    flow_create(user=attacker, name="hostile", endpoint_name="hostile", data=HOSTILE_REGEX_FLOW, timeout=30)
    flow_create(user=other, name="greet", endpoint_name="greet", data=GREETING_FLOW)
    service.start_cluster()
    webhook = f"{service.url}/api/v1/webhook/"
    warm_up = post(webhook + "greet", other_key, {"name": "first"}).json()["run_id"]
    assert wait_for_runs([warm_up], timeout=60) == {"succeeded": 1}, service.log("cluster")

    sent = [("hostile", attacker_key, VICTIM)] * 4 + [("greet", other_key, {"name": f"n{i}"}) for i in range(30)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: post(webhook + r[0], r[1], r[2]), sent))
    assert [a.status_code for a in answers] == [202] * len(sent), answers[0].text
    run_ids = [a.json()["run_id"] for a in answers]
    assert wait_for_runs(run_ids, timeout=90) == {"failed": 4, "succeeded": 30}, service.log("cluster")

    runs = {str(run.id): run for run in FlowRun.objects.filter(pk__in=run_ids)}
    for run in (runs[run_id] for run_id in run_ids[:4]):
        assert "regular expression" in run.error and "took longer than 1 s" in run.error, run.error
        # Stopped by the regex time limit (the flow's own is 30 s), with room for a busy machine.
        assert run.node_results.get(node_id="check").duration_ms < 10_000
    greetings = [runs[run_id] for run_id in run_ids[4:]]
    assert all(run.outputs == {"greeting": f"Hello n{i}!"} for i, run in enumerate(greetings))
    # A batch of quick runs that took hostile ones waits a regex time limit per hostile run, not minutes.
    assert max(seconds(run) for run in greetings) < 20, sorted(seconds(run) for run in greetings)

    # The workers are free again: a new run goes through at once.
    started = time.monotonic()
    run_id = post(webhook + "greet", other_key, {"name": "after"}).json()["run_id"]
    assert wait_for_runs([run_id], timeout=30) == {"succeeded": 1}
    assert time.monotonic() - started < 10


def test_synchronous_runs_of_a_hostile_regex_fail_without_freezing_the_web(transactional_db, tmp_path):
    service = Service(tmp_path)
    # The four runs are one account's: each must execute in its request, not be answered at once by the cap on waits.
    service.env["LANGRUN_WAITS_PER_USER"] = "4"
    service.start_web()
    try:
        _hostile_synchronous_runs(service)
    finally:
        service.stop()


def _hostile_synchronous_runs(service) -> None:
    attacker, attacker_key = owner("attacker")
    flow_create(user=attacker, name="hostile", endpoint_name="hostile", data=HOSTILE_REGEX_FLOW, timeout=30)
    body = {"input_value": json.dumps(VICTIM)}
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        # Twice as many as gunicorn has workers here; no cluster runs: each run executes in its request.
        sync = [pool.submit(post, f"{service.url}/api/v1/run/hostile", attacker_key, body) for _ in range(4)]
        time.sleep(0.2)
        health = requests.get(f"{service.url}/health", timeout=30)
        health_took = time.monotonic() - started
        answers = [future.result() for future in sync]
    assert health.status_code == 200 and health_took < 10
    assert time.monotonic() - started < 20
    assert [a.status_code for a in answers] == [500] * 4, answers[0].text  # failed runs, answered as Langflow does
    runs = FlowRun.objects.filter(trigger="api")
    assert sorted(runs.values_list("status", flat=True)) == ["failed"] * 4
    assert all("took longer than 1 s" in error for error in runs.values_list("error", flat=True))


def test_amplifying_outputs_fail_their_runs_at_the_output_limit(service, transactional_db):
    service.env["LANGRUN_MAX_OUTPUT_BYTES"] = "100000"
    attacker, attacker_key = owner("attacker")
    other, other_key = owner("other")
    flows = {
        "padded": (template_flow("{x:+z0100000000}"), {"x": 1}, "format spec"),
        "precise": (template_flow("{x:,.99999999f}"), {"x": 1}, "format spec"),
        "wide": (template_flow("{x:1000}" * 200), {"x": 1}, "larger than the limit of 100000 bytes"),
        "doubling": (extract_flow("s" + " | [@,@]" * 40), {"s": "0123456789"}, "larger than the limit of 100000 bytes"),
    }
    for name, (data, _, _) in flows.items():
        flow_create(user=attacker, name=name, endpoint_name=name, data=data)
    flow_create(user=other, name="greet", endpoint_name="greet", data=GREETING_FLOW)
    service.start_cluster()

    sent = [(name, attacker_key, payload) for name, (_, payload, _) in flows.items()] * 3
    sent += [("greet", other_key, {"name": f"n{i}"}) for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: post(f"{service.url}/api/v1/webhook/{r[0]}", r[1], r[2]), sent))
    assert [a.status_code for a in answers] == [202] * len(sent)
    run_ids = [a.json()["run_id"] for a in answers]
    assert wait_for_runs(run_ids, timeout=90) == {"failed": 12, "succeeded": 20}, service.log("cluster")

    for (name, _, _), answer in zip(sent, answers, strict=True):
        run = FlowRun.objects.get(pk=answer.json()["run_id"])
        if name == "greet":
            assert run.status == "succeeded" and run.outputs == {"greeting": f"Hello {run.payload['name']}!"}
        else:
            assert run.status == "failed" and flows[name][2] in run.error, (name, run.error)
            assert run.outputs in (None, {})
            assert all(len(str(node.output or "")) < 200_000 for node in run.node_results.all())


class Drip(socketserver.BaseRequestHandler):
    """Answers any request with headers at once, then one byte of its body every 2 s."""

    def handle(self):
        self.request.settimeout(60)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            request += chunk
        try:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                if self.server.stop.wait(2):
                    return
                self.request.sendall(b"x")
        except OSError:
            pass  # the client gave up, as it should


@pytest.fixture
def drip():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    server.stop = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.stop.set()
    server.shutdown()
    server.server_close()


def test_a_slow_drip_server_fails_the_http_run_at_its_node_timeout(service, transactional_db, drip):
    service.env["LANGRUN_HTTP_ALLOWED_HOSTS"] = "127.0.0.1"
    attacker, attacker_key = owner("attacker")
    other, other_key = owner("other")
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "call", "type": "HTTPRequest", "params": {"url": drip, "timeout": 3}},
            {"id": "out", "type": "Output"},
        ],
        "edges": [{"source": "hook", "target": "call"}, {"source": "call", "source_output": "body", "target": "out"}],
    }
    flow_create(user=attacker, name="drip", endpoint_name="drip", data=data, timeout=10)
    flow_create(user=other, name="greet", endpoint_name="greet", data=GREETING_FLOW)
    service.start_cluster()
    webhook = f"{service.url}/api/v1/webhook/"
    warm_up = post(webhook + "greet", other_key, {"name": "first"}).json()["run_id"]
    assert wait_for_runs([warm_up], timeout=60) == {"succeeded": 1}, service.log("cluster")

    sent = [("drip", attacker_key, {})] * 2 + [("greet", other_key, {"name": f"n{i}"}) for i in range(10)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda r: post(webhook + r[0], r[1], r[2]), sent))
    run_ids = [a.json()["run_id"] for a in answers]
    assert wait_for_runs(run_ids, timeout=60) == {"failed": 2, "succeeded": 10}, service.log("cluster")
    for run in FlowRun.objects.filter(pk__in=run_ids[:2]):
        assert "timed out" in run.error and "within 3 s" in run.error, run.error
        assert 2.9 < (run.finished_at - run.started_at).total_seconds() < 8
    assert max(seconds(run) for run in FlowRun.objects.filter(pk__in=run_ids[2:])) < 10


@pytest.mark.parametrize("slow", [False, True], ids=["quick", "waiting-on-the-network"])
def test_a_backlog_of_one_accounts_runs_holds_another_accounts_run_behind_one_turn(transactional_db, tmp_path, slow):
    """The workers meet a queue of 600 of alice's runs with bob's behind them: with the Redis broker, bob's run starts
    among the first of the backlog, not after it (one lane per account, taken in turns)."""
    from django.conf import settings

    from flows.services.runs import flow_run_create
    from tests.helpers import SlowAPI, http_flow

    if not settings.Q_CLUSTER.get("redis"):
        pytest.skip("the database broker takes tasks in arrival order")
    svc = Service(tmp_path)
    svc.env.update({"LANGRUN_WORKERS": "1", "LANGRUN_RUN_CONCURRENCY": "20", "LANGRUN_HTTP_ALLOWED_HOSTS": "127.0.0.1"})
    with SlowAPI(delay=0.2) as api:
        data = http_flow(api.url + "/slow") if slow else GREETING_FLOW
        alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
        backlog = flow_create(user=alice, name="Backlog", endpoint_name="greet", data=data)
        flow = flow_create(user=bob, name="Greeting", endpoint_name="greet", data=data)
        held = [flow_run_create(flow=backlog, user=alice, trigger="webhook", payload={"name": f"n{i}"}).pk for i in range(600)]
        bobs = flow_run_create(flow=flow, user=bob, trigger="webhook", payload={"name": "Bob"})
        svc.start_cluster()  # no worker ran before: every run waits in the queue, bob's rung last
        try:
            assert wait_for_runs([*held, bobs.pk], timeout=240) == {"succeeded": 601}, svc.log("cluster")[-3000:]
        finally:
            svc.stop()
    bobs.refresh_from_db()
    ahead = FlowRun.objects.filter(pk__in=held, started_at__lt=bobs.started_at).count()
    assert ahead <= 60, ahead  # a turn or two of alice's lane, not her 600


def test_a_receiver_that_never_answers_does_not_hold_another_accounts_runs(transactional_db, tmp_path, settings):
    """Alice's subscription points at a receiver that never answers: each of her runs' alerts takes the whole alert
    timeout. Bob's run, sent while they are being sent, still finishes at once (the worker sends alerts on threads of
    its own; it sent each itself, and bob's run waited behind them)."""
    from flows.services.runs import flow_run_create
    from tests.helpers import SlowAPI
    from webhooks.alerts.models import Delivery
    from webhooks.alerts.services.subscriptions import subscription_create

    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]  # the subscription's local receiver
    svc = Service(tmp_path)
    svc.env.update({"LANGRUN_WORKERS": "1", "LANGRUN_ALERTS_TIMEOUT": "10", "LANGRUN_HTTP_ALLOWED_HOSTS": "127.0.0.1"})
    with SlowAPI() as api:
        alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
        hers = flow_create(user=alice, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        his = flow_create(user=bob, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        subscription_create(user=alice, url=api.url + "/hang", events=["run.succeeded"])
        svc.start_cluster()
        try:
            alices = [flow_run_create(flow=hers, user=alice, trigger="webhook", payload={"name": f"n{i}"}).pk for i in range(3)]
            assert wait_for_runs(alices, timeout=60) == {"succeeded": 3}
            assert api.hanging.wait(20), svc.log("cluster")[-3000:]  # her alerts are being sent
            started = time.monotonic()
            bobs = flow_run_create(flow=his, user=bob, trigger="webhook", payload={"name": "Bob"}).pk
            assert wait_for_runs([bobs], timeout=60) == {"succeeded": 1}
            took = time.monotonic() - started
            assert took < 6, (took, svc.log("cluster")[-3000:])
            assert Delivery.objects.filter(user=alice, status="pending").exists()  # still waiting on her receiver
        finally:
            svc.stop()


def test_one_accounts_runs_hanging_on_the_network_leave_slots_for_another_accounts(transactional_db, tmp_path):
    """Alice's runs call an API that never answers, more of them than the worker has slots: past her share they wait
    in the worker, which keeps LANGRUN_RUN_CONCURRENCY_RESERVE slots beyond it for others, and bob's runs, sent after
    hers, finish at once instead of waiting for her calls to time out (the worker took her runs until it was full,
    then took no task at all)."""
    from flows.services.runs import flow_run_create
    from tests.helpers import SlowAPI, http_flow

    svc = Service(tmp_path)
    svc.env.update(
        {
            "LANGRUN_WORKERS": "1",
            "LANGRUN_RUN_CONCURRENCY": "8",
            "LANGRUN_RUN_CONCURRENCY_RESERVE": "2",
            "LANGRUN_HTTP_ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    with SlowAPI() as api:
        alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
        hanging = flow_create(user=alice, name="Hanging", endpoint_name="hang", data=http_flow(api.url + "/hang", timeout=30))
        quick = flow_create(user=bob, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        slow = flow_create(user=bob, name="Slow", endpoint_name="slow", data=http_flow(api.url + "/slow"))
        svc.start_cluster()
        try:
            hers = [flow_run_create(flow=hanging, user=alice, trigger="webhook", payload={"n": i}).pk for i in range(30)]
            deadline = time.monotonic() + 30
            while FlowRun.objects.filter(pk__in=hers, status="running").count() < 8 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)  # the worker meets the rest of hers before bob's
            started = time.monotonic()
            his = [flow_run_create(flow=flow, user=bob, trigger="webhook", payload={"name": "Bob"}).pk for flow in (quick, slow)]
            assert wait_for_runs(his, timeout=60) == {"succeeded": 2}, svc.log("cluster")[-3000:]
            took = time.monotonic() - started
            assert took < 10, (took, svc.log("cluster")[-3000:])
            assert FlowRun.objects.filter(pk__in=hers, status="running").count() == 8  # her share, not one more
            assert not FlowRun.objects.filter(pk__in=hers, status__in=FlowRun.TERMINAL).exists()
        finally:
            svc.stop()
