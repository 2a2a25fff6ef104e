"""The web stays up: callers that wait, slow clients and a dying worker do not take /health down (real processes)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import tests.components  # noqa: F401 - registers TestSideEffect here too (the servers load it by LANGRUN_COMPONENT_MODULES)
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import ROOT, Service, wait_for_runs
from tests.helpers import GREETING_FLOW

pytestmark = pytest.mark.e2e


def _health_seconds(url: str) -> float:
    started = time.monotonic()
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    return time.monotonic() - started


def _slow_sockets(url: str, count: int) -> list[socket.socket]:
    """Connections that start a request and then send nothing more (slowloris)."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nX-Drip: ")
        sockets.append(s)
    return sockets


@pytest.fixture
def shared_service(transactional_db, tmp_path):
    """The web with small shares of waiting: two callers per account and process."""
    svc = Service(tmp_path)
    svc.env.update(LANGRUN_WAITS_PER_USER="2")
    svc.start_web()
    yield svc
    svc.stop()


def test_waiting_callers_and_slow_clients_leave_health_answering(shared_service, tmp_path):
    service = shared_service
    # No qcluster runs: every run stays queued, so each `?wait=` holds its request for the whole wait.
    callers = []
    for name in ("waiter1", "waiter2", "waiter3"):
        user = User.objects.create_user(name)
        flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        callers.append(api_key_create(user=user).key)
    # Synchronous runs of a slow flow execute in the web process and hold their request meanwhile.
    runner = User.objects.create_user("runner")
    slow_flow = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "slow", "type": "TestSideEffect", "params": {"path": str(tmp_path / "effects"), "delay": 10}},
            {"id": "out", "type": "Output", "params": {"name": "echo"}},
        ],
        "edges": [{"source": "hook", "target": "slow", "target_input": "data"}, {"source": "slow", "target": "out"}],
    }
    flow_create(user=runner, name="Slow", endpoint_name="slow", data=slow_flow)
    runner_key = api_key_create(user=runner).key
    slow = _slow_sockets(service.url, 4)
    pool = ThreadPoolExecutor(max_workers=20)

    def run(_) -> int:
        response = requests.post(
            f"{service.url}/api/v1/run/slow", json={"input_value": "{}"}, headers={"x-api-key": runner_key}, timeout=30
        )
        return response.status_code

    def wait(key: str) -> tuple[int, float]:
        started = time.monotonic()
        response = requests.post(
            f"{service.url}/api/v1/webhook/greet?wait=15", json={"name": "Ada"}, headers={"x-api-key": key}, timeout=30
        )
        return response.status_code, time.monotonic() - started

    try:
        # The first caller asks for more waits than its share in both web processes (LANGRUN_WAITS_PER_USER each).
        mine = [pool.submit(wait, callers[0]) for _ in range(6)]
        others = [pool.submit(wait, key) for key in callers[1:] for _ in range(3)]
        runs = [pool.submit(run, n) for n in range(4)]
        time.sleep(1.5)  # every wait has reached a worker by now
        assert max(_health_seconds(service.url) for _ in range(5)) < 1.0
        answers = [f.result() for f in mine + others]
        assert {code for code, _ in answers} <= {200, 202}
        # Past its share, a caller is answered at once (its run accepted, as usual); the others waited it out.
        at_once = [seconds for code, seconds in (f.result() for f in mine) if seconds < 3]
        assert len(at_once) >= 2
        assert any(seconds >= 14 for _, seconds in answers)
        assert {f.result() for f in runs} <= {200, 202}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for s in slow:
            s.close()


def test_slow_clients_alone_do_not_take_the_web(service):
    slow = _slow_sockets(service.url, 8)
    try:
        time.sleep(6)  # past the time gunicorn gives a new connection to send its first bytes
        assert max(_health_seconds(service.url) for _ in range(5)) < 1.0
    finally:
        for s in slow:
            s.close()


def _answered_and_left_open(url: str, stop: threading.Event, held: list[socket.socket]) -> None:
    """Requests whose answers are read to the end, then their connections kept open: the client never closes."""
    host, port = url.removeprefix("http://").split(":")
    while not stop.is_set():
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while s.recv(65536):  # until the server's end is closed
            pass
        held.append(s)


def test_clients_that_do_not_close_do_not_take_the_web(service):
    stop, held = threading.Event(), []
    pool = ThreadPoolExecutor(max_workers=2)
    clients = [pool.submit(_answered_and_left_open, service.url, stop, held) for _ in range(2)]
    try:
        time.sleep(1)
        assert max(_health_seconds(service.url) for _ in range(10)) < 0.5
    finally:
        stop.set()
        for client in clients:
            client.result()
        for s in held:
            s.close()
    assert len(held) > 10  # the clients kept going, each answered in full


def test_web_processes_share_a_pool_of_database_connections(service, setup_flow):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counts the server's connections")
    _, key = setup_flow

    def web_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]

    def burst() -> None:
        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        requests.post(f"{service.url}/api/v1/webhook/greet", json={}, headers={"x-api-key": key}, timeout=30).status_code
                    ),
                    range(150),
                )
            )
        assert set(codes) == {202}

    burst()
    after_one = web_connections()
    burst()
    # 300 requests, and no more connections than two processes' pools: the requests each answers at once
    # (WEB_THREADS, 1), its ledger watch and a spare.
    assert 0 < after_one <= 2 * (1 + 2) and web_connections() <= 2 * (1 + 2)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cluster_of(serve_pid: int) -> int | None:
    for child in _children(serve_pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"qcluster" in argv or argv[1:4] == [b"-m", b"langrun.cli", b"worker"]:
                return child
        except FileNotFoundError:
            continue
    return None


def _until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return None


def test_serve_restarts_a_killed_worker_and_the_web_keeps_accepting(setup_flow, tmp_path):
    flow, key = setup_flow
    flow.max_attempts = 3  # a run the kill interrupts is attempted again (with one attempt, it fails as interrupted)
    flow.save()
    svc = Service(tmp_path)
    serve = svc.start("serve", ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(svc.port), "--web-workers", "2"])
    try:
        assert _until(lambda: _health_ok(svc.url), 30), svc.log("serve")
        first = _until(lambda: _cluster_of(serve.pid), 30)
        assert first, svc.log("serve")

        def webhook(n: int) -> tuple[int, str | None]:
            response = requests.post(f"{svc.url}/api/v1/webhook/greet", json={"name": f"n{n}"}, headers={"x-api-key": key}, timeout=30)
            return response.status_code, response.json().get("run_id")

        with ThreadPoolExecutor(max_workers=8) as pool:
            before = list(pool.map(webhook, range(40)))
            os.kill(first, signal.SIGKILL)
            during = list(pool.map(webhook, range(40, 200)))
        answers = before + during
        assert [code for code, _ in answers] == [202] * len(answers), svc.log("serve")
        assert serve.poll() is None, svc.log("serve")
        second = _until(lambda: (c := _cluster_of(serve.pid)) and c != first and c, 60)
        assert second, svc.log("serve")
        # Runs the killed cluster had taken are found by the sweep (here without waiting for their lease).
        run_ids = [run_id for _, run_id in answers]
        sweep = {"LANGRUN_RUN_TIMEOUT": "1", "LANGRUN_LEASE_MARGIN": "0", "LANGRUN_REQUEUE_AFTER": "1"}
        time.sleep(2)
        subprocess.run([sys.executable, "manage.py", "sweep_runs"], cwd=ROOT, env={**svc.env, **sweep}, check=True, timeout=120)
        assert wait_for_runs(run_ids, timeout=120) == {"succeeded": len(run_ids)}, svc.log("serve")
        assert _health_ok(svc.url)
    finally:
        svc.stop()
    assert serve.returncode in (0, -signal.SIGTERM)


def _health_ok(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_pooled_connections_the_server_ended_are_replaced_without_an_error(service, setup_flow):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("ends the server's connections")
    _, key = setup_flow

    def webhooks(count: int) -> list[int]:
        return [
            requests.post(f"{service.url}/api/v1/webhook/greet", json={}, headers={"x-api-key": key}, timeout=30).status_code
            for _ in range(count)
        ]

    assert set(webhooks(20)) == {202}  # each process's pool now holds connections
    with connection.cursor() as cursor:  # as a restart or an idle timeout on the server would
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] > 0
    time.sleep(0.5)
    assert set(webhooks(20)) == {202}
