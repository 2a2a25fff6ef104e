"""A real cluster keeping many runs in flight (flows/services/inflight.py): killed with 100 runs waiting on the
network, every run ends once per attempt after a restart; 500 runs in flight hold about one database connection
per process; a running run cancelled through the API has its HTTP call closed."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.db import connection

from bench.procs import process_tree
from flows.models import FlowRun, NodeResult, RunAttempt
from flows.services.flows import flow_create
from flows.services.sweep import flow_runs_recover_interrupted
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import wait_for_runs
from tests.helpers import SlowAPI, http_flow

pytestmark = pytest.mark.e2e


@pytest.fixture
def owner(transactional_db):
    user = User.objects.create_user("inflight")
    return user, api_key_create(user=user).key


@pytest.fixture
def api():
    with SlowAPI(delay=2.0) as server:
        yield server


def wait_until(predicate, timeout=60.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def post_webhooks(service, key: str, endpoint: str, n: int) -> list[str]:
    session = requests.Session()

    def post(i):
        response = session.post(f"{service.url}/api/v1/webhook/{endpoint}", json={"i": i}, headers={"x-api-key": key}, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["run_id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, range(n)))


def database_connections(pids: list[int]) -> int:
    """Connections the processes hold to the test database: TCP sockets to PostgreSQL's port, or SQLite's open file."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        path = os.path.realpath(settings["NAME"])
        return sum(1 for pid in pids for target in _fd_targets(pid) if target == path)
    port = f":{int(settings.get('PORT') or 5432):04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[2].endswith(port) and fields[3] == "01":  # remote address, ESTABLISHED
                    inodes.add(f"socket:[{fields[9]}]")
    return sum(1 for pid in pids for target in _fd_targets(pid) if target in inodes)


def _fd_targets(pid: int) -> list[str]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
    return targets


def test_a_killed_cluster_with_100_runs_in_flight_ends_each_once_per_attempt(service, owner, api, settings):
    user, key = owner
    service.env["LANGRUN_HTTP_ALLOWED_HOSTS"] = "127.0.0.1"
    flow = flow_create(user=user, name="slow", endpoint_name="slow", data=http_flow(api.url + "/slow"))
    flow.max_attempts, flow.timeout = 2, 5
    flow.save()
    api.delay = 30  # the first attempts wait until the cluster is killed
    cluster = service.start_cluster("cluster1")
    run_ids = post_webhooks(service, key, "slow", 100)
    assert wait_until(lambda: api.in_flight >= 100), service.log("cluster1")
    assert FlowRun.objects.filter(pk__in=run_ids, status="running").count() == 100
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(10)
    assert FlowRun.objects.filter(pk__in=run_ids, status="running").count() == 100  # nobody is left to finish them

    api.delay = 0.5
    service.start_cluster("cluster2")
    settings.LANGRUN_LEASE_MARGIN = 1  # a lease of 6 s: the flow's timeout and the margin
    time.sleep(6.5)
    assert flow_runs_recover_interrupted() == 100
    assert wait_for_runs(run_ids, timeout=120) == {"succeeded": 100}, service.log("cluster2")
    assert set(FlowRun.objects.filter(pk__in=run_ids).values_list("attempts", flat=True)) == {2}
    outcomes = sorted(RunAttempt.objects.filter(run__in=run_ids).values_list("number", "outcome"))
    assert outcomes == [(1, "interrupted")] * 100 + [(2, "succeeded")] * 100
    assert NodeResult.objects.filter(run__in=run_ids, status="succeeded").count() == 300
    assert flow_runs_recover_interrupted(lease=timedelta(0)) == 0  # none is left running


def test_500_runs_in_flight_hold_about_one_database_connection_per_process(service, owner, api):
    user, key = owner
    # The default concurrency: 500 runs of one account per worker process, so either process could take them all.
    service.env.update(LANGRUN_HTTP_ALLOWED_HOSTS="127.0.0.1", LANGRUN_WORKERS="2")
    flow_create(user=user, name="slow", endpoint_name="slow", data=http_flow(api.url + "/slow", timeout=60))
    api.delay = 30
    cluster = service.start_cluster()
    started = time.monotonic()
    run_ids = post_webhooks(service, key, "slow", 500)
    peak, processes = 0, []
    while time.monotonic() < started + 25 and api.in_flight < 500:
        processes = process_tree([cluster.pid])
        peak = max(peak, database_connections(processes))
        time.sleep(0.1)
    # Nearly all at once: a worker takes tasks while it has room for a batch.
    assert api.peak >= 490, service.log("cluster")
    processes = process_tree([cluster.pid])
    peak = max(peak, database_connections(processes))
    # qcluster, its sentinel, monitor, pusher and two workers: each worker's runs share one connection.
    assert peak <= len(processes), (peak, len(processes))
    api.delay = 0.1
    assert wait_for_runs(run_ids, timeout=120) == {"succeeded": 500}, service.log("cluster")


def test_a_running_run_cancelled_through_the_api_has_its_http_call_closed(service, owner, api):
    user, key = owner
    service.env["LANGRUN_HTTP_ALLOWED_HOSTS"] = "127.0.0.1"
    flow_create(user=user, name="hang", endpoint_name="hang", data=http_flow(api.url + "/hang", timeout=60))
    service.start_cluster()
    [run_id] = post_webhooks(service, key, "hang", 1)
    assert api.hanging.wait(30), service.log("cluster")
    assert wait_until(lambda: NodeResult.objects.filter(run_id=run_id, node_id="call", status="running").exists(), timeout=5)
    response = requests.post(f"{service.url}/api/v1/runs/{run_id}/cancel", headers={"x-api-key": key}, timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api.closed.wait(5), service.log("cluster")
    assert wait_until(lambda: NodeResult.objects.filter(run_id=run_id, node_id="call", status="failed").exists(), timeout=5)
    assert requests.post(f"{service.url}/api/v1/runs/{run_id}/cancel", headers={"x-api-key": key}, timeout=10).status_code == 409
