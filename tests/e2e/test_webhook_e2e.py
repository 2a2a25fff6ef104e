"""A real gunicorn and a real qcluster: the webhook's way through the house, end to end."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from flows.models import FlowRun
from tests.e2e.helpers import wait_for_runs

pytestmark = pytest.mark.e2e


def test_webhook_then_status_url_shows_succeeded_run(service, setup_flow):
    flow, key = setup_flow
    service.start_cluster()
    response = requests.post(f"{service.url}/api/v1/webhook/greet", json={"name": "Ada"}, headers={"x-api-key": key}, timeout=10)
    assert response.status_code == 202, response.text
    status_url = response.json()["status_url"]
    assert status_url.startswith(service.url)

    deadline = time.monotonic() + 60
    body = {}
    while time.monotonic() < deadline:
        body = requests.get(status_url, headers={"x-api-key": key}, timeout=10).json()
        if body["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert body["status"] == "succeeded", (body, service.log("cluster"))
    assert body["outputs"] == {"greeting": "Hello Ada!"}
    assert [(n["id"], n["status"]) for n in body["nodes"]] == [("hook", "succeeded"), ("greet", "succeeded"), ("out", "succeeded")]
    assert body["attempts"] == 1


def test_runs_accepted_while_no_worker_runs_are_done_when_one_starts(service, setup_flow):
    flow, key = setup_flow
    ids = [
        requests.post(f"{service.url}/api/v1/webhook/{flow.id}", json={"name": str(i)}, headers={"x-api-key": key}, timeout=10).json()[
            "run_id"
        ]
        for i in range(5)
    ]
    assert set(FlowRun.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"queued"}
    service.start_cluster()
    assert wait_for_runs(ids) == {"succeeded": 5}, service.log("cluster")


def test_concurrent_webhooks_while_worker_runs(service, setup_flow):
    """8 concurrent senders while a worker executes: every request 202, every run succeeds, no lock errors."""
    flow, key = setup_flow
    service.start_cluster()
    session_per_thread = {}

    def send(i: int):
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        r = session.post(f"{service.url}/api/v1/webhook/greet", json={"name": f"n{i}"}, headers={"x-api-key": key}, timeout=30)
        return r.status_code, r.json().get("run_id")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(200)))
    assert [code for code, _ in results] == [202] * 200
    ids = [run_id for _, run_id in results]
    assert wait_for_runs(ids, timeout=120) == {"succeeded": 200}, service.log("cluster")
    logs = service.log("web") + service.log("cluster")
    assert "database is locked" not in logs
    assert sorted(FlowRun.objects.values_list("outputs__greeting", flat=True)) == sorted(f"Hello n{i}!" for i in range(200))
