"""Parked requests (langrun/waits.py, langrun/gunicorn_worker.py): callers waiting for runs and open event streams hold
neither the threads that answer webhooks nor a database connection each (real gunicorn, PostgreSQL or SQLite)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from flows.models import FlowRun
from tests.e2e.helpers import Service, wait_for_runs

pytestmark = pytest.mark.e2e

HELD = 40
# Each of the two web processes answers one request at once, and may park all forty (the processes need not take
# them evenly).
PARKED_ENV = {
    "WEB_THREADS": "1",
    "LANGRUN_WAITS_PER_PROCESS": str(HELD),
    "LANGRUN_WAITS_PER_USER": str(HELD),
    "LANGRUN_STREAMS_PER_PROCESS": str(HELD),
    "LANGRUN_STREAMS_PER_USER": str(HELD),
    "LANGRUN_STREAM_KEEPALIVE": "1",
    "LANGRUN_WEBHOOK_MAX_WAIT": "60",
}


def _database_connections() -> int | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def _webhooks_answered_at_once(url: str, key: str, count: int = 20) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.monotonic()
        response = requests.post(f"{url}/api/v1/webhook/greet", json={"name": "Bo"}, headers={"x-api-key": key}, timeout=30)
        assert response.status_code == 202, response.text
        seconds.append(time.monotonic() - started)
    return seconds


@pytest.fixture
def parked_service(tmp_path, transactional_db):
    service = Service(tmp_path)
    service.env.update(PARKED_ENV)
    service.start_web()
    yield service
    service.stop()


def test_waiting_callers_are_parked_and_webhooks_are_answered_at_once(parked_service, setup_flow):
    flow, key = setup_flow
    url = parked_service.url
    pool = ThreadPoolExecutor(max_workers=HELD)

    def wait() -> tuple[int, dict]:
        response = requests.post(f"{url}/api/v1/webhook/greet?wait=50", json={"name": "Ada"}, headers={"x-api-key": key}, timeout=90)
        return response.status_code, response.json()

    try:
        # No cluster yet: every run stays queued, so each caller waits.
        waits = [pool.submit(wait) for _ in range(HELD)]
        deadline = time.monotonic() + 20
        while FlowRun.objects.filter(flow=flow).count() < HELD and time.monotonic() < deadline:
            time.sleep(0.1)
        assert FlowRun.objects.filter(flow=flow).count() == HELD, parked_service.log("web")[-3000:]
        time.sleep(0.5)
        assert not any(f.done() for f in waits), "a caller was answered without waiting"
        # Two processes answering one request each, 40 callers parked on them: other webhooks are answered at once.
        assert max(_webhooks_answered_at_once(url, key)) < 1.0
        connections = _database_connections()
        if connections is not None:  # each process's pool: one request answered and the ledger's watch
            assert connections <= 2 * (1 + 1), connections
        # A worker executes the runs: each waiting caller gets its run's result.
        parked_service.start_cluster()
        answers = [f.result(timeout=90) for f in waits]
        assert [code for code, _ in answers] == [200] * HELD
        assert {body["status"] for _, body in answers} == {"succeeded"}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _events(response) -> list[tuple[str, dict]]:
    """The events of an SSE response until a `run_finished`."""
    events, name = [], None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            if name == "run_finished":
                break
    return events


def test_open_event_streams_are_parked_and_webhooks_are_answered_at_once(parked_service, setup_flow):
    flow, key = setup_flow
    url = parked_service.url
    headers = {"x-api-key": key, "Accept": "text/event-stream"}
    runs = [
        requests.post(f"{url}/api/v1/webhook/greet", json={"name": "Ada"}, headers={"x-api-key": key}, timeout=10).json()["run_id"]
        for _ in range(HELD // 2)
    ]
    streams = []
    try:
        for run_id in runs:  # queued: no cluster yet
            streams.append(requests.get(f"{url}/api/v1/runs/{run_id}/events", headers=headers, stream=True, timeout=30))
        for _ in range(HELD // 2):
            streams.append(requests.get(f"{url}/api/v1/webhook-events/greet", headers=headers, stream=True, timeout=30))
        assert [s.status_code for s in streams] == [200] * HELD
        assert max(_webhooks_answered_at_once(url, key)) < 1.0
        connections = _database_connections()
        if connections is not None:
            assert connections <= 2 * (1 + 2), connections
        parked_service.start_cluster()
        wait_for_runs(runs)
        with ThreadPoolExecutor(max_workers=HELD // 2) as pool:
            finished = list(pool.map(_events, streams[: HELD // 2]))
        assert all(events[-1][0] == "run_finished" and events[-1][1]["status"] == "succeeded" for events in finished)
    finally:
        for s in streams:
            s.close()
