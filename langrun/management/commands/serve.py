import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand
from django.db import connection

from langrun.processes import web_command, worker_command


def web_workers_default(database_vendor: str) -> int:
    """gunicorn sync workers for this machine, measured in the README's "Performance": three per core with
    PostgreSQL (a webhook waits on the database and Redis part of its time, and a waiting worker holds its
    request), two with SQLite (in the process, nothing to wait for; more workers only queue for its write lock)."""
    return (2 if database_vendor == "sqlite" else 3) * (os.cpu_count() or 1)


class Command(BaseCommand):
    help = "Run the web server (gunicorn) and a django-q2 cluster together in the foreground; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", web_workers_default(connection.vendor))))

    def handle(self, *args, host: str, port: int, web_workers: int, **options):
        web = web_command(host=host, port=port, workers=web_workers)
        cluster = worker_command()
        procs = [subprocess.Popen(web), subprocess.Popen(cluster)]
        self.stdout.write(f"langrun is listening on http://{host}:{port}/ (admin: /admin/, API docs: /api/docs/)")

        def stop(*_):
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        finally:
            stop()
            deadline = time.monotonic() + 30
            for p in procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
        codes = [p.returncode for p in procs]
        if any(c not in (0, -signal.SIGTERM, -signal.SIGINT) for c in codes):
            sys.exit(1)
