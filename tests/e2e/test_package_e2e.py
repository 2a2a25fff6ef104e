"""`pip install` of the built wheel into a fresh virtualenv, then `langrun serve` in an empty directory: the README's first steps."""

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv (no system site-packages) with the wheel and its pinned dependencies installed; its bin folder."""
    tmp = tmp_path_factory.mktemp("package")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT)], check=True, cwd=tmp, timeout=300
    )
    (wheel,) = (tmp / "dist").glob("langrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "flows/templates/admin/flows/flow/change_form.html" in names and "flows/static/flows/admin.js" in names
    assert "flows/migrations/0001_initial.py" in names and "langrun/gunicorn_conf.py" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
    subprocess.run([str(tmp / "venv/bin/pip"), "install", "-q", str(wheel)], check=True, timeout=600)
    return tmp / "venv/bin"


def _env(**extra) -> dict:
    # As a new user's shell: none of the test run's settings, and the checkout not importable.
    drop = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "LANGRUN_CLUSTER_NAME", "VIRTUAL_ENV"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def test_langrun_help_from_the_installed_command(installed, tmp_path):
    result = subprocess.run([str(installed / "langrun"), "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "serve" in result.stdout, result.stderr


def test_langrun_serve_in_an_empty_directory_runs_the_printed_curl(installed, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(installed / "langrun"), "serve", "--port", str(port), "--web-workers", "2"],
            cwd=tmp_path,
            env=_env(LANGRUN_ORM_POLL="0.05"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/health_check", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        text = log.read_text(errors="replace")
        key = re.search(r"-H 'x-api-key: (sk-[\w-]+)'", text)
        assert key, text
        answer = requests.post(f"{base}/api/v1/webhook/demo", json={"name": "Ada"}, headers={"x-api-key": key[1]}, timeout=10)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while (run := requests.get(answer.json()["status_url"], headers={"x-api-key": key[1]}, timeout=10).json())["status"] != "succeeded":
            assert run["status"] in ("queued", "running") and time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run["outputs"] == {"greeting": "Hello Ada!"}
        assert requests.get(f"{base}/static/admin/css/base.css", timeout=10).status_code == 200
        home = tmp_path / "var"
        assert (home / "langrun.sqlite3").is_file() and (home / "secret_key").is_file() and (home / "static").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
