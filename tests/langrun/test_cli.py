"""The `langrun` command: its own subcommands, the manage.py passthrough, and processes that start in any directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

from langrun.cli import main
from langrun.processes import GUNICORN_CONFIG, web_command, worker_command

ROOT = Path(__file__).resolve().parents[2]


def langrun(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`langrun ARGS` in `cwd` on the embedded default, with the checkout importable (as an installed package is)."""
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "-m", "langrun.cli", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_names_the_subcommands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for word in ("serve", "web", "worker", "migrate", "create-api-key", "status", "help"):
        assert f"\n  {word} " in out


def test_commands_run_in_any_directory_with_their_files_under_langrun_home(tmp_path):
    migrated = langrun(tmp_path, "migrate", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    home = tmp_path / "var"
    assert (home / "langrun.sqlite3").is_file() and (home / "secret_key").is_file()
    status = langrun(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queue_depth"] == 0
    created = langrun(tmp_path, "createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com")
    assert created.returncode == 0, created.stderr
    key = langrun(tmp_path, "create-api-key", "ops")
    assert key.returncode == 0 and "sk-" in key.stdout, key.stderr


def test_langrun_home_and_dotenv_choose_where_the_files_go(tmp_path):
    (tmp_path / ".env").write_text("LANGRUN_HOME=data\n")
    result = langrun(tmp_path, "migrate", "-v0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "langrun.sqlite3").is_file() and not (tmp_path / "var").exists()


def test_production_without_a_secret_key_stops_with_a_clear_message(tmp_path):
    result = langrun(tmp_path, "check", DATABASE_URL="postgres://u@127.0.0.1:1/langrun")
    assert result.returncode != 0 and "SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_every_manage_py_command_passes_through(tmp_path):
    result = langrun(tmp_path, "help")
    assert result.returncode == 0, result.stderr
    for command in ("qcluster", "create_api_key", "langrun_status", "import_flow", "changepassword"):
        assert command in result.stdout


def test_the_worker_starts_langruns_qcluster_without_a_manage_py(tmp_path):
    command = worker_command()
    assert "manage.py" not in command
    result = subprocess.run(
        [*command, "--help"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "LANGRUN_WORKER_NICE" in result.stdout


def test_the_web_server_reads_its_settings_from_the_package_not_the_directory():
    from gunicorn.app.base import Application
    from gunicorn.config import Config

    command = web_command(host="127.0.0.1", port=8000, workers=3)
    assert command[command.index("--config") + 1] == GUNICORN_CONFIG
    assert command[command.index("--bind") + 1] == "127.0.0.1:8000" and command[command.index("--workers") + 1] == "3"

    class ConfigOnly(Application):
        def load_config(self):
            self.cfg = Config()
            self.load_config_from_module_name_or_filename(GUNICORN_CONFIG)

        def load(self):
            raise AssertionError("only the configuration is read")

    cfg = ConfigOnly().cfg
    assert cfg.preload_app is True and cfg.pre_fork.__module__ == "langrun.gunicorn_conf"
