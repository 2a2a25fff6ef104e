"""Helpers for end-to-end tests: the real processes (gunicorn, a django-q2 cluster) on the test database, and waiting for runs."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + db["NAME"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """gunicorn plus any number of qcluster processes, sharing the test database and broker."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "langrun.settings",
            "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": test_database_url(),
            "LANGRUN_CLUSTER_NAME": settings.Q_CLUSTER["name"],
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LANGRUN_ORM_POLL": "0.05",
            "LANGRUN_COMPONENT_MODULES": "tests.components",
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        # A session of its own, so a test can signal the whole process tree (qcluster's workers too).
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start_web(self, args: list[str] | None = None) -> None:
        """gunicorn, by default as `gunicorn langrun.wsgi` in the repository; `args` (after the interpreter) otherwise."""
        self.start("web", args or ["-m", "gunicorn", "langrun.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or workers still loading Django
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log('web')}")

    def start_cluster(self, name: str = "cluster") -> subprocess.Popen:
        return self.start(name, ["manage.py", "qcluster"])

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def wait_for_runs(run_ids, timeout: float = 60.0):
    """Poll the ledger until every run is terminal; return {status: count}."""
    from flows.models import FlowRun

    deadline = time.monotonic() + timeout
    while True:
        statuses = list(FlowRun.objects.filter(pk__in=run_ids).values_list("status", flat=True))
        if all(s in ("succeeded", "failed") for s in statuses) and len(statuses) == len(run_ids):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts
