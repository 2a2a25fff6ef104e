import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env):
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL"}}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True)


def test_missing_secret_key_stops_startup_when_debug_is_off():
    result = run_python("import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'langrun.settings'; django.setup()")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_settings_switch_to_postgres_and_redis_from_the_environment():
    code = "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'langrun.settings'; from django.conf import settings as s; d = s.DATABASES['default']; print(d['ENGINE'], d['NAME'], d['CONN_MAX_AGE'], s.Q_CLUSTER.get('redis'), s.Q_CLUSTER.get('orm'))"
    result = run_python(code, SECRET_KEY="k", DATABASE_URL="postgres://u@db.example:5432/langrun", REDIS_URL="redis://cache:6379/1")
    assert result.stdout.split() == ["langrun.db.postgresql", "langrun", "600", "redis://cache:6379/1", "None"], result.stderr
    embedded = run_python(
        code.replace("d['NAME']", "d['OPTIONS']['transaction_mode']"), SECRET_KEY="k", LANGRUN_DATA_DIR="/tmp/langrun-settings-test"
    )
    assert embedded.stdout.split() == ["django.db.backends.sqlite3", "IMMEDIATE", "600", "None", "default"], embedded.stderr


def test_system_checks_pass(db):
    call_command("check", "--fail-level", "WARNING")


def test_migrations_are_up_to_date(db):
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)


def test_cluster_retry_must_exceed_timeout(settings):
    from flows.checks import check_cluster_retry

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "retry": 10, "timeout": 10}
    assert [e.id for e in check_cluster_retry()] == ["flows.E001"]


def test_health_endpoints(client, db):
    assert client.get("/health").json() == {"status": "ok"}
    body = client.get("/health_check").json()  # no worker cluster runs here: tests/flows/test_health.py has the rest
    assert {"status", "chat", "db"} <= set(body) and body["db"] == body["chat"] == body["queue"] == "ok"
    version = client.get("/api/v1/version").json()
    assert version["package"] == "langrun" and version["version"]


def test_health_check_reports_a_broken_broker(client, db):
    from django_q.conf import Conf

    old = (Conf.REDIS, Conf.ORM, Conf.BROKER_CLASS)
    Conf.REDIS, Conf.ORM, Conf.BROKER_CLASS = "redis://127.0.0.1:1/0", None, "flows.broker.BulkRedis"
    try:
        response = client.get("/health_check")
    finally:
        Conf.REDIS, Conf.ORM, Conf.BROKER_CLASS = old
    assert response.status_code == 503 and response.json()["queue"] == "error" and response.json()["db"] == "ok"


@pytest.mark.parametrize("path", ["/api/nothing", "/api/v1/flows/x/y/z"])
def test_unknown_api_routes_are_json_404(client, path, settings):
    response = client.get(path)
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


def test_bootstrap_creates_demo_once(db):
    from flows.models import Flow
    from langrun.services import api_key_authenticate

    out = StringIO()
    call_command("bootstrap", "--base-url", "http://localhost:9000", stdout=out)
    text = out.getvalue()
    key = text.split("API key:")[1].split()[0]
    assert api_key_authenticate(key=key).user.is_superuser
    assert "curl -X POST 'http://localhost:9000/api/v1/webhook/demo'" in text and key in text
    assert Flow.objects.get().endpoint_name == "demo"
    again = StringIO()
    call_command("bootstrap", stdout=again)
    assert "set up" in again.getvalue() and Flow.objects.count() == 1


WSGI_IMPORT = (
    "import sys, langrun.wsgi; from django.db import connection; from django.urls import get_resolver;"
    " print('flows.broker' in sys.modules, 'redis' in sys.modules, connection.connection is None,"
    " 'webhooks.views' in sys.modules and get_resolver()._populated)"
)


def test_the_wsgi_module_imports_the_task_broker_without_connecting():
    # gunicorn's master imports langrun.wsgi before forking the workers: the broker's modules and the views (by the
    # URLconf) load there, once, rather than in every worker at its first requests; and nothing connects (neither
    # address has a server).
    result = run_python(
        WSGI_IMPORT, SECRET_KEY="k" * 50, DATABASE_URL="postgres://u@127.0.0.1:1/langrun", REDIS_URL="redis://127.0.0.1:1/0", DEBUG="false"
    )
    assert result.stdout.split() == ["True", "True", "True", "True"], result.stderr


def test_the_wsgi_module_leaves_the_embedded_database_unopened(tmp_path):
    # A worker forked with its master's SQLite connection would share the file handle: the master must not open one.
    result = run_python(WSGI_IMPORT, SECRET_KEY="k" * 50, LANGRUN_DATA_DIR=str(tmp_path), DEBUG="false")
    assert result.stdout.split() == ["False", "False", "True", "True"], result.stderr


def test_serve_starts_three_web_workers_per_core_on_postgresql_and_two_on_sqlite(monkeypatch):
    from django.db import connection

    from langrun.management.commands.serve import Command

    monkeypatch.delenv("WEB_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert Command().create_parser("manage.py", "serve").parse_args([]).web_workers == (10 if connection.vendor == "sqlite" else 15)
    monkeypatch.setenv("WEB_WORKERS", "7")
    assert Command().create_parser("manage.py", "serve").parse_args([]).web_workers == 7


def gunicorn_config():
    """gunicorn's settings as ./gunicorn.conf.py gives them, without loading the application."""
    from gunicorn.app.base import Application
    from gunicorn.config import Config

    class ConfigOnly(Application):
        def load_config(self):
            self.cfg = Config()
            self.load_config_from_file(str(ROOT / "gunicorn.conf.py"))

        def load(self):
            raise AssertionError("only the configuration is read")

    return ConfigOnly().cfg


def test_gunicorn_freezes_the_preloaded_application_before_forking_each_worker():
    # Workers forked from the master share its pages while nothing writes to them; the garbage collector
    # writes to every object it examines, and frozen objects are never examined.
    import gc

    cfg = gunicorn_config()
    assert cfg.preload_app is True
    assert gc.get_freeze_count() == 0
    try:
        cfg.pre_fork(None, None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_serve_waits_longer_after_each_death_of_the_cluster_in_a_row():
    from langrun.management.commands.serve import restart_delay

    assert [restart_delay(n) for n in (1, 2, 3, 4, 5, 6, 20)] == [1, 2, 4, 8, 16, 30, 30]


def test_gunicorn_workers_answer_web_threads_requests_at_once(monkeypatch):
    monkeypatch.setenv("WEB_THREADS", "12")
    monkeypatch.delitem(sys.modules, "langrun.gunicorn_conf", raising=False)  # read again, with this environment
    cfg = gunicorn_config()
    assert cfg.worker_class_str == "langrun.gunicorn_worker.ParkingWorker" and cfg.keepalive == 0
    assert cfg.worker_connections == 12


def test_gunicorn_opens_no_control_socket_of_the_users():
    # gunicorn's control socket is one path per OS user ($HOME/.gunicorn/gunicorn.ctl): a second install, or a test's
    # own server, would take it over from the first, and its stop remove it. `serve` and the process manager control
    # gunicorn by signals.
    assert gunicorn_config().control_socket_disable is True
