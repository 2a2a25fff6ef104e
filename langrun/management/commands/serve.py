import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand
from django.db import connection

from langrun.processes import web_command, worker_command


def web_workers_default(database_vendor: str) -> int:
    """gunicorn worker processes for this machine (each answering WEB_THREADS requests at once, gunicorn.conf.py), measured in the
    README's "Performance" with one request per process: three per core with
    PostgreSQL (a webhook waits on the database and Redis part of its time, and a waiting worker holds its
    request), two with SQLite (in the process, nothing to wait for; more workers only queue for its write lock)."""
    return (2 if database_vendor == "sqlite" else 3) * (os.cpu_count() or 1)


# A cluster that dies is started again after 1, 2, 4 ... seconds, at most this long; a cluster that ran this long
# since its start counts as healthy again (the next death waits 1 s).
RESTART_DELAY_MAX = 30.0
HEALTHY_AFTER = 60.0
# On SIGTERM or SIGINT the web server and the cluster get this long to stop by themselves, then are killed. An idle
# cluster stops in 1-2 s; a busy one works through every task its pusher has already taken from the broker before
# it stops (with Redis up to `bulk` + `queue_limit` runs, about 45 s measured with 3-s runs), which no process
# manager waits for (Docker kills after 10 s). What the kill interrupts is not lost: a run left `running` is taken up
# again by the sweep once its lease expires, and runs taken but not started are still `queued` in the ledger.
STOP_GRACE_DEFAULT = 7.0


def restart_delay(deaths: int) -> float:
    """Seconds before starting a cluster again after `deaths` deaths in a row (1, 2, 4 ... capped)."""
    return min(RESTART_DELAY_MAX, 2.0 ** max(0, deaths - 1))


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn) and a django-q2 cluster together in the foreground; Ctrl-C stops both. "
        "A cluster that dies is started again (after 1, 2, 4 ... seconds, at most 30) while the web goes on accepting "
        "webhooks, whose runs wait for it; if the web server dies, serve stops."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", web_workers_default(connection.vendor))))
        parser.add_argument(
            "--stop-grace",
            type=float,
            default=STOP_GRACE_DEFAULT,
            help="Seconds the web server and the worker get to stop on SIGTERM or SIGINT before they are killed.",
        )

    def handle(self, *args, host: str, port: int, web_workers: int, stop_grace: float, **options):
        # Each child leads a process group of its own, which serve signals itself: a terminal's Ctrl-C reaches serve
        # alone, so that gunicorn's workers do not get it twice (from the terminal and from their master), and
        # whatever a child leaves behind when it is killed (a web worker that did not stop, the cluster's sentinel and
        # workers) is killed with its group.
        web = subprocess.Popen(web_command(host=host, port=port, workers=web_workers), process_group=0)
        cluster = self._start_cluster()
        self.stdout.write(f"langrun is listening on http://{host}:{port}/ (admin: /admin/, API docs: /api/docs/)")
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True
            for p in (web, cluster):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop)
        deaths, started, restart_at = 0, time.monotonic(), None
        try:
            while not stopping and web.poll() is None:
                time.sleep(0.5)
                if stopping:
                    break
                if cluster is not None and cluster.poll() is not None:
                    _group_kill(cluster)  # what the dead cluster leaves (its sentinel and workers) goes with it
                    deaths = 1 if time.monotonic() - started >= HEALTHY_AFTER else deaths + 1
                    delay = restart_delay(deaths)
                    self.stderr.write(f"The cluster exited (code {cluster.returncode}); starting a new one in {delay:.0f} s.")
                    cluster, restart_at = None, time.monotonic() + delay
                if cluster is None and time.monotonic() >= restart_at:
                    cluster, started = self._start_cluster(), time.monotonic()
            web_died = not stopping
        finally:
            stop()
            deadline = time.monotonic() + stop_grace
            for p in (web, cluster):
                if p is None:
                    continue
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{'The web server' if p is web else 'The cluster'} did not stop in {stop_grace:.0f} s: killed.")
                    p.kill()
                    p.wait()
            # Their children too, had a child been killed (they outlive it).
            for p in (web, cluster):
                if p is not None:
                    _group_kill(p)
        if web_died or web.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            sys.exit(1)

    def _start_cluster(self) -> subprocess.Popen:
        return subprocess.Popen(worker_command(), process_group=0)


def _group_kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
