"""Two qcluster processes (as on two worker machines) sharing one Redis and one database."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db.models import Count

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import wait_for_runs
from tests.helpers import GREETING_FLOW

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="scale-out needs the production profile (REDIS_URL)"),
]

RUNS = 1000


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_for_log(service, name: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in service.log(name):
        assert time.monotonic() < deadline, f"{name} did not log {text!r}:\n{service.log(name)}"
        assert service.procs[name].poll() is None, f"{name} exited:\n{service.log(name)}"
        time.sleep(0.1)


def test_two_clusters_share_the_work_and_run_each_run_exactly_once(service):
    user = User.objects.create_user("scale")
    flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    key = api_key_create(user=user).key
    service.env["LANGRUN_QUEUE_LOG_LEVEL"] = "INFO"  # the clusters say when they consume the queue
    clusters = {name: service.start_cluster(name) for name in ("cluster-a", "cluster-b")}
    for name in clusters:
        wait_for_log(service, name, "pushing tasks at")

    sessions: dict[int, requests.Session] = {}

    def send(i: int):
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        r = session.post(f"{service.url}/api/v1/webhook/greet", json={"name": f"n{i}"}, headers={"x-api-key": key}, timeout=60)
        return r.status_code, r.json().get("run_id")

    # django-q2 replaces a worker process after 500 tasks: note every process each cluster ever had.
    pids_seen = {name: set() for name in clusters}
    watching = threading.Event()

    def watch():
        while not watching.wait(0.1):
            for name, proc in clusters.items():
                pids_seen[name] |= descendants(proc.pid)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(send, range(RUNS)))
        assert [code for code, _ in results] == [202] * RUNS
        ids = [run_id for _, run_id in results]
        assert wait_for_runs(ids, timeout=300) == {"succeeded": RUNS}, service.log("cluster-a") + service.log("cluster-b")
    finally:
        watching.set()
        watcher.join()

    runs = FlowRun.objects.filter(pk__in=ids)
    assert set(runs.values_list("attempts", flat=True)) == {1}
    assert sorted(runs.values_list("outputs__greeting", flat=True)) == sorted(f"Hello n{i}!" for i in range(RUNS))

    # Which cluster ran what: a run records host:pid of its worker; map the pids to each cluster's process tree.
    per_worker = dict(runs.values_list("worker").annotate(n=Count("pk")))
    host = socket.gethostname()
    assert all(worker.startswith(f"{host}:") for worker in per_worker)
    per_cluster = {}
    for name, proc in clusters.items():
        pids = pids_seen[name] | descendants(proc.pid)
        per_cluster[name] = sum(n for worker, n in per_worker.items() if int(worker.rsplit(":", 1)[1]) in pids)
    assert sum(per_cluster.values()) == RUNS, (per_worker, per_cluster)
    assert all(n > 0 for n in per_cluster.values()), per_cluster
