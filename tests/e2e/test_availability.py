"""The web stays up: callers that wait, slow clients and a dying worker do not take /health down (real processes)."""

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from flows.services import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.conftest import GREETING_FLOW

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


def test_waiting_callers_and_slow_clients_leave_health_answering(service, transactional_db):
    # No qcluster runs: every run stays queued, so each `?wait=` holds its request for the whole wait.
    callers = []
    for name in ("waiter1", "waiter2", "waiter3"):
        user = User.objects.create_user(name)
        flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        callers.append(api_key_create(user=user).key)
    slow = _slow_sockets(service.url, 4)
    pool = ThreadPoolExecutor(max_workers=16)

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
        time.sleep(1.5)  # every wait has reached a worker by now
        assert max(_health_seconds(service.url) for _ in range(5)) < 1.0
        answers = [f.result() for f in mine + others]
        assert {code for code, _ in answers} <= {200, 202}
        # Past its share, a caller is answered at once (its run accepted, as usual); the others waited it out.
        at_once = [seconds for code, seconds in (f.result() for f in mine) if seconds < 3]
        assert len(at_once) >= 2
        assert any(seconds >= 14 for _, seconds in answers)
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


def test_threads_keep_and_reuse_one_database_connection_each(service, setup_flow):
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
    # 300 requests, and no more connections than two processes of eight threads, each thread keeping its own.
    assert 0 < after_one <= 2 * 8 and web_connections() <= 2 * 8
