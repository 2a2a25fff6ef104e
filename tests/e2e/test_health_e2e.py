"""/health_check with real processes: 503 until a qcluster reports, 200 while it does, 503 again once it is gone."""

import os
import signal
import time

import pytest
import requests

from tests.e2e.helpers import Service

pytestmark = pytest.mark.e2e
TIMEOUT = 6


def health_until(url: str, status: int, within: float) -> dict:
    deadline = time.monotonic() + within
    while True:
        response = requests.get(f"{url}/health_check", timeout=10)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response.json()
        time.sleep(0.2)


def test_health_check_follows_the_worker_cluster(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.env["LANGRUN_HEALTH_WORKER_TIMEOUT"] = str(TIMEOUT)
    # A cluster name of its own: clusters of earlier tests in this session leave their stats for their own timeout.
    svc.env["LANGRUN_CLUSTER_NAME"] += "-health"
    try:
        svc.start_web()
        body = requests.get(f"{svc.url}/health_check", timeout=10).json()
        assert body["worker"] == "error" and body["db"] == "ok" and body["chat"] == "ok"
        cluster = svc.start_cluster()
        body = health_until(svc.url, 200, within=30)
        assert body["worker"] == "ok" and len(body["workers"]) == 1 and body["worker_last_seen_s"] < 2
        # A killed cluster says nothing more: it stays counted for the timeout (its stats are kept that long,
        # past django-q2's 3 s), then the check fails.
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=15)
        time.sleep(4)
        assert requests.get(f"{svc.url}/health_check", timeout=10).status_code == 200
        body = health_until(svc.url, 503, within=TIMEOUT + 5)
        assert body["worker"] == "error" and body["workers"] == []  # its stats expired with the timeout
    finally:
        svc.stop()
