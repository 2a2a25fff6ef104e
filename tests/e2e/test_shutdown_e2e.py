"""Clean shutdown: SIGTERM or SIGINT to `manage.py serve` or `langrun serve` stops the web server and the worker
cluster, with every process they started (gunicorn's workers, qcluster's sentinel, pusher, monitor and workers),
within 10 seconds when idle."""

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import Service

pytestmark = pytest.mark.e2e

STOP_WITHIN = 10.0


def _descendants(pid: int) -> set[tuple[int, str]]:
    """Every process below `pid`, as (pid, start time) so that a reused pid is not taken for a survivor."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in children:
                started = _start_time(child)
                if started:
                    found.add((child, started))
                    todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError, IndexError):  # gone, or going while /proc is read
        return None


def _alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    alive = set()
    for pid, started in processes:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):  # gone, or going while /proc is read
            continue
        if state != "Z" and _start_time(pid) == started:
            alive.add((pid, started))
    return alive


def _names(processes: set[tuple[int, str]]) -> list[str]:
    names = []
    for pid, _ in processes:
        try:
            names.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (FileNotFoundError, ProcessLookupError):
            names.append(f"{pid}: gone")
    return names


def _wait_healthy(svc: Service, proc, name: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, svc.log(name)
        try:
            if requests.get(f"{svc.url}/health_check", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/health_check never answered 200:\n{svc.log(name)}")


def _cluster_running(processes: set[tuple[int, str]]) -> bool:
    # The cluster, its sentinel, pusher, monitor and at least one worker: more than the web's processes alone.
    return sum("qcluster" in n or "langrun.cli worker" in n or "Process-" in n for n in _names(processes)) >= 4


def _stop_and_measure(svc: Service, proc, name: str, sig: signal.Signals) -> float:
    _wait_healthy(svc, proc, name)
    deadline = time.monotonic() + 30
    while not _cluster_running(tree := _descendants(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _cluster_running(tree), _names(tree)
    time.sleep(1)  # idle: the cluster's guard has gone round its loop
    tree = _descendants(proc.pid)
    started = time.monotonic()
    os.kill(proc.pid, sig)
    while (_alive(tree) or proc.poll() is None) and time.monotonic() - started < 60:
        time.sleep(0.05)
    took = time.monotonic() - started
    survivors = _alive(tree)
    print(f"\n{name}: {sig.name} stopped {len(tree) + 1} processes in {took:.1f} s")
    for pid, _ in survivors:  # leave nothing behind for the next test
        os.kill(pid, signal.SIGKILL)
    assert not survivors, (took, _names(survivors), svc.log(name))
    assert proc.poll() is not None, svc.log(name)
    assert took < STOP_WITHIN, (took, svc.log(name))
    return took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_manage_py_serve_stops_web_and_worker_within_10_seconds(transactional_db, tmp_path, sig):
    svc = Service(tmp_path)
    proc = svc.start("serve", ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(svc.port), "--web-workers", "2"])
    try:
        _stop_and_measure(svc, proc, "serve", sig)
        assert proc.returncode == 0, svc.log("serve")
    finally:
        svc.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_langrun_serve_stops_web_and_worker_within_10_seconds(transactional_db, tmp_path, sig):
    svc = Service(tmp_path)
    svc.env["LANGRUN_HOME"] = str(tmp_path / "home")
    args = ["-m", "langrun.cli", "serve", "--host", "127.0.0.1", "--port", str(svc.port), "--web-workers", "2"]
    proc = svc.start("langrun-serve", args)
    try:
        _stop_and_measure(svc, proc, "langrun-serve", sig)
        assert proc.returncode == 0, svc.log("langrun-serve")
    finally:
        svc.stop()


def test_ctrl_c_in_a_terminal_stops_web_and_worker_within_10_seconds(transactional_db, tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group, not only serve."""
    svc = Service(tmp_path)
    proc = svc.start("serve", ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(svc.port), "--web-workers", "2"])
    try:
        _wait_healthy(svc, proc, "serve")
        tree = _descendants(proc.pid)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        while (_alive(tree) or proc.poll() is None) and time.monotonic() - started < 60:
            time.sleep(0.05)
        took = time.monotonic() - started
        survivors = _alive(tree)
        print(f"\nserve: Ctrl-C stopped {len(tree) + 1} processes in {took:.1f} s")
        for pid, _ in survivors:
            os.kill(pid, signal.SIGKILL)
        assert not survivors and took < STOP_WITHIN, (took, _names(survivors), svc.log("serve"))
    finally:
        svc.stop()


def test_a_stop_with_a_backlog_takes_at_most_the_grace_and_leaves_the_rest_to_the_sweep(transactional_db, tmp_path):
    """A busy cluster works through every task its pusher has taken before it stops (measured before the grace:
    13 s embedded, 47 s with Redis, for 3-s runs); serve waits `--stop-grace` seconds, then kills it. Nothing is
    lost: the runs not finished are still `queued` or `running` in the ledger, for the sweep. The runs take longer
    than the grace, so that the worker, which keeps many runs in flight at once, cannot finish them all first."""
    import tests.components  # noqa: F401 - registers TestSideEffect here too (the servers load it by LANGRUN_COMPONENT_MODULES)
    from flows.models import FlowRun
    from flows.services.flows import flow_create
    from langrun.models import User
    from langrun.services import api_key_create

    user = User.objects.create_user("stopper")
    slow = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "slow", "type": "TestSideEffect", "params": {"path": str(tmp_path / "effects"), "delay": 20}},
            {"id": "out", "type": "Output", "params": {"name": "echo"}},
        ],
        "edges": [{"source": "hook", "target": "slow", "target_input": "data"}, {"source": "slow", "target": "out"}],
    }
    flow_create(user=user, name="Slow", endpoint_name="slow", data=slow)
    key = api_key_create(user=user).key
    svc = Service(tmp_path)
    proc = svc.start("serve", ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(svc.port), "--web-workers", "2"])
    try:
        _wait_healthy(svc, proc, "serve")
        for n in range(40):
            answer = requests.post(f"{svc.url}/api/v1/webhook/slow", json={"n": n}, headers={"x-api-key": key}, timeout=30)
            assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while not FlowRun.objects.filter(status="running").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        tree = _descendants(proc.pid)
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        while (_alive(tree) or proc.poll() is None) and time.monotonic() - started < 90:
            time.sleep(0.05)
        took = time.monotonic() - started
        survivors = _alive(tree)
        for pid, _ in survivors:
            os.kill(pid, signal.SIGKILL)
        statuses = list(FlowRun.objects.values_list("status", flat=True))
        counts = {s: statuses.count(s) for s in set(statuses)}
        print(f"\nserve with a backlog: SIGTERM stopped {len(tree) + 1} processes in {took:.1f} s; runs: {counts}")
        assert not survivors, _names(survivors)
        assert took < STOP_WITHIN, (took, counts, svc.log("serve"))
        # None could end within the grace: every run waits in the ledger for the next cluster or the sweep.
        assert set(counts) <= {"queued", "running"} and sum(counts.values()) == 40, counts
        assert counts.get("running", 0) >= 1, counts  # the stop did catch runs in flight
        assert "did not stop in 7 s: killed" in svc.log("serve")
    finally:
        svc.stop()


def test_a_web_worker_that_does_not_stop_is_killed_with_the_web_server(transactional_db, tmp_path):
    """A gunicorn worker that never handles its stop signal (here: stopped with SIGSTOP; in the wild, one caught
    between two signals or stuck in a request) keeps its master waiting; serve kills the master after the grace, and
    the worker with it: nothing is left behind."""
    svc = Service(tmp_path)
    args = ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(svc.port), "--web-workers", "2", "--stop-grace", "2"]
    proc = svc.start("serve", args)
    try:
        _wait_healthy(svc, proc, "serve")
        tree = _descendants(proc.pid)
        web_workers = [pid for pid, _ in tree if "gunicorn" in _names({(pid, "")})[0] and _parent(pid) != proc.pid]
        assert web_workers, _names(tree)
        os.kill(web_workers[0], signal.SIGSTOP)
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        while (_alive(tree) or proc.poll() is None) and time.monotonic() - started < 30:
            time.sleep(0.05)
        took = time.monotonic() - started
        survivors = _alive(tree)
        for pid, _ in survivors:
            os.kill(pid, signal.SIGKILL)
        assert not survivors, (took, _names(survivors), svc.log("serve"))
        assert took < STOP_WITHIN, (took, svc.log("serve"))
        assert "The web server did not stop in 2 s: killed." in svc.log("serve")
    finally:
        svc.stop()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
