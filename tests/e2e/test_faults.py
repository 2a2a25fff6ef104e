"""Faults caused for real: a worker killed mid-run, a stopped cluster, Redis going away, load on SQLite,
a flood of duplicate deliveries, and hostile input against the real HTTP server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

import tests.components  # noqa: F401 - the flows below use the test components
from flows.models import FlowRun, NodeResult, RunAttempt
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import ROOT, Service, free_port, wait_for_runs
from tests.helpers import GREETING_FLOW, side_effect_flow

pytestmark = pytest.mark.e2e

is_sqlite = connection.vendor == "sqlite"


@pytest.fixture
def owner(transactional_db):
    user = User.objects.create_user("faults")
    return user, api_key_create(user=user).key


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_until(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def manage(service: Service, *args, **env) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**service.env, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def run_status(run_id) -> str:
    return FlowRun.objects.values_list("status", flat=True).get(pk=run_id)


# --- 1. a worker killed mid-run, and a graceful stop ---------------------------------------


def test_killed_cluster_run_completes_exactly_once_on_a_new_cluster(service, owner, tmp_path):
    user, key = owner
    effects = tmp_path / "effects"
    flow = flow_create(user=user, name="slow", endpoint_name="slow", data=side_effect_flow(effects, delay=3))
    flow.max_attempts = 2
    flow.save()
    cluster = service.start_cluster("cluster1")
    run_id = requests.post(f"{service.url}/api/v1/webhook/slow", json={"n": 1}, headers={"x-api-key": key}, timeout=10).json()["run_id"]
    assert wait_until(lambda: run_status(run_id) == "running"), service.log("cluster1")
    time.sleep(0.5)
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(10)
    time.sleep(3)  # longer than the component's delay: a surviving worker would have recorded its effect by now
    assert run_status(run_id) == "running" and lines(effects) == 0

    service.start_cluster("cluster2")
    # The sweep (here with a lease of 1 s instead of LANGRUN_RUN_TIMEOUT + margin) finds the run orphaned.
    out = manage(service, "sweep_runs", LANGRUN_RUN_TIMEOUT="1", LANGRUN_LEASE_MARGIN="0")
    assert "recovered: 1" in out, out
    assert wait_for_runs([run_id], timeout=60) == {"succeeded": 1}, service.log("cluster2")
    run = FlowRun.objects.get(pk=run_id)
    assert run.attempts == 2 and run.outputs == {"echo": {"n": 1}}
    assert list(RunAttempt.objects.filter(run=run).values_list("outcome", flat=True)) == ["interrupted", "succeeded"]
    assert lines(effects) == 1
    assert "recovered: 0" in manage(service, "sweep_runs", LANGRUN_RUN_TIMEOUT="1", LANGRUN_LEASE_MARGIN="0")
    time.sleep(1)
    assert lines(effects) == 1 and run_status(run_id) == "succeeded"


def test_sigterm_lets_the_running_run_finish(service, owner, tmp_path):
    user, key = owner
    effects = tmp_path / "effects"
    flow_create(user=user, name="slow", endpoint_name="slow", data=side_effect_flow(effects, delay=2))
    cluster = service.start_cluster()
    run_id = requests.post(f"{service.url}/api/v1/webhook/slow", json={"n": 1}, headers={"x-api-key": key}, timeout=10).json()["run_id"]
    assert wait_until(lambda: run_status(run_id) == "running"), service.log("cluster")
    cluster.send_signal(signal.SIGTERM)
    assert cluster.wait(60) is not None
    run = FlowRun.objects.get(pk=run_id)
    assert (run.status, run.attempts, lines(effects)) == ("succeeded", 1, 1), service.log("cluster")


# --- 2. Redis stops while webhooks arrive --------------------------------------------------


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own on a free port (never the machine's shared one)."""
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]

    class OwnRedis:
        url = f"redis://127.0.0.1:{port}/0"
        proc = None

        def start(self):
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_until(lambda: _port_open(port), timeout=10), "redis-server did not start"

        def stop(self):
            if self.proc and self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(10)

    redis = OwnRedis()
    redis.start()
    yield redis
    redis.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(is_sqlite or not os.environ.get("REDIS_URL"), reason="production profile (PostgreSQL + Redis) only")
@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server to start a Redis of its own")
def test_redis_down_every_webhook_is_accepted_and_runs_after_recovery(owner, own_redis, tmp_path):
    user, key = owner
    flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    service = Service(tmp_path)
    service.env.update({"REDIS_URL": own_redis.url, "LANGRUN_RATE_LIMIT_FLOW": "100000"})  # the limiter's cache is down too
    service.start_web()
    try:

        def send(i):
            return requests.post(f"{service.url}/api/v1/webhook/greet", json={"name": f"n{i}"}, headers={"x-api-key": key}, timeout=30)

        before = [send(i) for i in range(5)]
        own_redis.stop()
        during = [send(i) for i in range(5, 25)]
        assert [r.status_code for r in before + during] == [202] * 25, [r.text for r in during if r.status_code != 202][:3]
        assert "Could not enqueue run" in service.log("web")
        ids = [r.json()["run_id"] for r in before + during]
        assert FlowRun.objects.filter(pk__in=ids, status="queued").count() == 25

        own_redis.start()  # empty: what it held before it stopped is gone too
        service.start_cluster()
        out = manage(service, "sweep_runs", REDIS_URL=own_redis.url, LANGRUN_REQUEUE_AFTER="0")
        assert "requeued: 25" in out, out
        assert wait_for_runs(ids, timeout=90) == {"succeeded": 25}, service.log("cluster")
        assert sorted(FlowRun.objects.filter(pk__in=ids).values_list("outputs__greeting", flat=True)) == sorted(
            f"Hello n{i}!" for i in range(25)
        )
    finally:
        service.stop()


# --- 3. the embedded profile under load ----------------------------------------------------


@pytest.mark.skipif(not is_sqlite, reason="embedded profile (SQLite + ORM broker) only")
def test_embedded_profile_under_load(service, owner):
    """8 concurrent senders, 2,000 webhooks, a worker running: every request 202, every run succeeds, no lock errors."""
    user, key = owner
    flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    service.start_cluster()
    local = threading.local()

    def send(i: int):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        r = session.post(f"{service.url}/api/v1/webhook/greet", json={"name": f"n{i}"}, headers={"x-api-key": key}, timeout=60)
        return r.status_code, r.json().get("run_id")

    total = 2000
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(total)))
    assert [code for code, _ in results].count(202) == total
    ids = [run_id for _, run_id in results]
    assert wait_for_runs(ids, timeout=400) == {"succeeded": total}, service.log("cluster")[-3000:]
    assert FlowRun.objects.count() == total
    logs = service.log("web") + service.log("cluster")
    assert "database is locked" not in logs and "Traceback" not in logs


# --- 4. a flood of duplicate deliveries ----------------------------------------------------


def test_same_idempotency_key_fifty_times_concurrently_is_one_run(service, owner):
    user, key = owner
    flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    barrier = threading.Barrier(50)

    def send(_):
        barrier.wait()
        r = requests.post(
            f"{service.url}/api/v1/webhook/greet",
            json={"name": "Ada"},
            headers={"x-api-key": key, "Idempotency-Key": "evt_flood"},
            timeout=60,
        )
        return r.status_code, r.json()["run_id"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(send, range(50)))
    assert {code for code, _ in results} == {202}
    assert len({run_id for _, run_id in results}) == 1
    assert FlowRun.objects.count() == 1
    service.start_cluster()
    assert wait_for_runs([results[0][1]]) == {"succeeded": 1}


# --- 5. one user's output the database cannot store, among another user's runs -----------------

CHAR_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "char", "type": "Template", "params": {"template": "{n:c}"}},  # {"n": 0} renders a NUL
        {"id": "out", "type": "Output", "params": {"name": "char"}},
    ],
    "edges": [
        {"source": "hook", "target": "char", "target_input": "data"},
        {"source": "char", "target": "out", "target_input": "value"},
    ],
}


def test_a_nul_output_fails_its_own_runs_and_no_other(service, owner):
    """10 webhooks of one user's flow that outputs a NUL among 100 of another user's quick flow, all waiting in
    the queue when the cluster starts (so that the Redis broker batches them): the 100 succeed, the 10 fail."""
    user, key = owner
    flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    attacker = User.objects.create_user("nul-sender")
    attacker_key = api_key_create(user=attacker).key
    flow_create(user=attacker, name="Chars", endpoint_name="chars", data=CHAR_FLOW)
    local = threading.local()

    def send(i: int):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        if i % 11 == 5:
            r = session.post(f"{service.url}/api/v1/webhook/chars", json={"n": 0}, headers={"x-api-key": attacker_key}, timeout=60)
        else:
            r = session.post(f"{service.url}/api/v1/webhook/greet", json={"name": f"n{i}"}, headers={"x-api-key": key}, timeout=60)
        assert r.status_code == 202, r.text
        return r.json()["run_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(send, range(110)))
    bad = [run_id for i, run_id in enumerate(ids) if i % 11 == 5]
    good = [run_id for run_id in ids if run_id not in bad]
    assert (len(good), len(bad)) == (100, 10)
    service.start_cluster()
    assert wait_for_runs(ids, timeout=120) == {"succeeded": 100, "failed": 10}, service.log("cluster")[-3000:]
    assert {FlowRun.objects.get(pk=run_id).outputs["greeting"] for run_id in good} == {f"Hello n{i}!" for i in range(110) if i % 11 != 5}
    errors = set(FlowRun.objects.filter(pk__in=bad).values_list("error", flat=True))
    assert errors == {"Node 'char' output contains a NUL character, which cannot be stored."}
    assert not RunAttempt.objects.filter(outcome="interrupted").exists()


# --- 6. hostile input -------------------------------------------------------------------------


def raw_request(port: int, data: bytes) -> int | None:
    """Send bytes as they are (no client-side cleaning); the response's status code, or None if the server hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        received = b""
        while b"\r\n" not in received:
            chunk = s.recv(4096)
            if not chunk:
                return None
            received += chunk
    return int(received.split(b" ", 2)[1])


def test_hostile_input_is_4xx_or_202_never_5xx(service, owner):
    user, key = owner
    flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    url = f"{service.url}/api/v1/webhook"
    auth = {"x-api-key": key}
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_objects = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    sql = "'; DROP TABLE flows_flowrun; --"
    cases = [
        ("POST", "greet", {"Content-Type": "application/json"}, b'{"name": '),
        ("POST", "greet", {"Content-Type": "application/json"}, b"{'name': 'single quotes'}"),
        ("POST", "greet", {"Content-Type": "application/json"}, b'{"n": NaN}'),
        ("POST", "greet", {"Content-Type": "application/json"}, b'{"n": "\\u0000"}'),
        ("POST", "greet", {"Content-Type": "application/json"}, b'{"n": "\\ud800"}'),
        ("POST", "greet", {"Content-Type": "application/json"}, b"\xff\xfe\xfa"),
        ("POST", "greet", {"Content-Type": "text/plain"}, b"caf\xe9"),
        ("POST", "greet", {"Content-Type": "application/xml"}, b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"),
        ("POST", "greet", {"Content-Type": "multipart/form-data; boundary=zzz"}, b"--zzz\r\nbroken"),
        ("POST", "greet", {"Content-Type": "application/x-www-form-urlencoded"}, b"&".join(b"f%d=1" % i for i in range(5000))),
        ("POST", "greet", {"Content-Type": "../../etc/passwd"}, b"{}"),
        ("POST", "greet", {"Content-Type": "application/json"}, b"x" * (1024 * 1024 + 1)),
        ("POST", "greet", {"Content-Type": "application/json"}, deep),
        ("POST", "greet", {"Content-Type": "application/json"}, deep_objects),
        ("POST", "greet", {"Content-Type": "application/json"}, b""),
        ("POST", "greet", {"Content-Type": "application/json"}, json.dumps({"name": sql}).encode()),
        ("POST", "greet", {"Content-Type": "application/json", "Idempotency-Key": sql}, b'{"name": "Ada"}'),
        ("POST", "greet", {"Content-Type": "application/json", "Idempotency-Key": "x" * 10_000}, b"{}"),
        ("POST", "greet", {"Content-Type": "application/json", "webhook-signature": "v1,AAAA", "webhook-id": "1"}, b"{}"),
        ("POST", "greet?user_id=" + requests.utils.quote(sql), {}, b"{}"),
        ("POST", requests.utils.quote(sql, safe=""), {}, b"{}"),
        ("POST", "%2e%2e%2f%2e%2e%2fadmin", {}, b"{}"),
        ("POST", "fl%C3%B6w-%F0%9F%9A%80", {}, b"{}"),
        ("POST", "%ff%fe", {}, b"{}"),
        ("POST", "%00", {}, b"{}"),
        ("POST", "a" * 3000, {}, b"{}"),
        ("POST", f"{flow.id}?x-api-key=' OR 1=1 --", {"x-api-key": None}, b"{}"),
        ("POST", "greet", {"x-api-key": "sk-' OR 1=1 --"}, b"{}"),
        ("POST", "greet?x-api-key=sk-abcdefgh%00ijklmnopqrstuvwxyz", {"x-api-key": None}, b"{}"),
        ("POST", "greet?x-api-key=sk-%ff%fe%00", {"x-api-key": None}, b"{}"),
        ("GET", "greet", {}, b""),
        ("PUT", "greet", {"Content-Type": "application/json"}, b"{}"),
    ]
    statuses = []
    for method, path, headers, body in cases:
        r = requests.request(method, f"{url}/{path}", headers={**auth, **headers}, data=body, timeout=60)
        statuses.append((path[:40], headers.get("Content-Type"), r.status_code))

    raw_cases = [
        # header injection: CR/LF inside a header value, a second request smuggled behind the first
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: " + key.encode() + b"\r\nX-Injected: a\rb\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/v1/webhook/../../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /api/v1/webhook/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /api/v1/webhook/flow\xc3\xb6 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: evil.example.com\r\nX-Api-Key: " + key.encode() + b"\r\nContent-Length: 2\r\n\r\n{}",
        # a body longer than its Content-Length claims: only the declared bytes are read
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}" + b"x" * 2_000_000,
        b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: " + key.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ]
    for data in raw_cases:
        statuses.append((data[:60], "raw", raw_request(service.port, data)))

    server_errors = [s for s in statuses if s[2] is None or s[2] >= 500]
    assert not server_errors, server_errors
    accepted = sum(1 for s in statuses if s[2] == 202)
    assert 1 <= accepted < len(statuses) / 2, statuses
    # Every 202 is one whole run; nothing else left a record.
    assert FlowRun.objects.count() == accepted
    assert NodeResult.objects.count() == 0
    assert User.objects.count() == 1
    log = service.log("web")
    # Django logs the refused Host header (a 400) with a traceback; nothing else may have one.
    assert "Internal Server Error" not in log and log.count("Traceback") == log.count("django.security.DisallowedHost")
    print(*statuses, sep="\n")
