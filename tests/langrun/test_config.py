"""Where settings come from: `.env`, Langflow's names for shared settings, LANGRUN_HOME and its secret key file."""

import os
import stat

import pytest

from langrun.config import LANGFLOW_ALIASES, environment_load, home_dir, secret_key_ensure


@pytest.fixture
def environment(monkeypatch):
    """os.environ as it was before the test, whatever read_env wrote into it."""
    saved = dict(os.environ)
    for name in {*LANGFLOW_ALIASES, *LANGFLOW_ALIASES.values(), "LANGRUN_TEST_FROM_FILE"}:
        monkeypatch.delenv(name, raising=False)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def test_dotenv_is_read_and_real_variables_win(environment, tmp_path):
    (tmp_path / ".env").write_text("LANGRUN_TEST_FROM_FILE=file\nLOG_LEVEL=DEBUG\n# a comment\nLANGRUN_WEBHOOK_AUTH=false\n")
    environment["LOG_LEVEL"] = "ERROR"
    environment_load(tmp_path)
    assert environment["LANGRUN_TEST_FROM_FILE"] == "file"
    assert environment["LANGRUN_WEBHOOK_AUTH"] == "false"
    assert environment["LOG_LEVEL"] == "ERROR"


def test_no_dotenv_changes_nothing(environment, tmp_path):
    before = dict(environment)
    environment_load(tmp_path)
    assert dict(environment) == before


def test_langflow_names_are_aliases(environment, tmp_path):
    environment.update(
        LANGFLOW_WEBHOOK_AUTH_ENABLE="false",
        LANGFLOW_DATABASE_URL="postgres://u@db/langflow",
        LANGFLOW_SECRET_KEY="s" * 40,
        LANGFLOW_HOST="0.0.0.0",
        LANGFLOW_PORT="7860",
        LANGFLOW_LOG_LEVEL="critical",
        LANGFLOW_REDIS_URL="redis://cache:6379/0",
    )
    environment_load(tmp_path)
    assert environment["LANGRUN_WEBHOOK_AUTH"] == "false"
    assert environment["DATABASE_URL"] == "postgres://u@db/langflow"
    assert environment["SECRET_KEY"] == "s" * 40
    assert (environment["HOST"], environment["PORT"]) == ("0.0.0.0", "7860")
    assert environment["LOG_LEVEL"] == "CRITICAL"  # Python's logging knows only upper-case level names
    assert environment["REDIS_URL"] == "redis://cache:6379/0"


def test_langruns_name_wins_over_langflows_also_from_dotenv(environment, tmp_path):
    (tmp_path / ".env").write_text("LANGRUN_WEBHOOK_AUTH=true\n")
    environment.update(LANGFLOW_WEBHOOK_AUTH_ENABLE="false", LANGFLOW_PORT="7860", PORT="9000")
    environment_load(tmp_path)
    assert environment["LANGRUN_WEBHOOK_AUTH"] == "true" and environment["PORT"] == "9000"


def test_an_alias_reaches_the_setting(monkeypatch, tmp_path):
    import importlib

    import langrun.settings

    monkeypatch.delenv("LANGRUN_WEBHOOK_AUTH", raising=False)
    monkeypatch.setenv("LANGFLOW_WEBHOOK_AUTH_ENABLE", "false")
    monkeypatch.chdir(tmp_path)
    try:
        assert importlib.reload(langrun.settings).LANGRUN_WEBHOOK_AUTH is False
    finally:
        monkeypatch.delenv("LANGFLOW_WEBHOOK_AUTH_ENABLE")
        monkeypatch.delenv("LANGRUN_WEBHOOK_AUTH", raising=False)  # the alias wrote it
        monkeypatch.undo()
        importlib.reload(langrun.settings)


def test_home_defaults_to_var_in_the_current_directory(environment, tmp_path, monkeypatch):
    monkeypatch.delenv("LANGRUN_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert home_dir() == tmp_path.resolve() / "var"
    environment["LANGRUN_HOME"] = "elsewhere"
    assert home_dir() == tmp_path.resolve() / "elsewhere"


def test_embedded_secret_key_is_created_once_and_kept_private(environment, tmp_path):
    environment.pop("SECRET_KEY", None)
    environment.pop("DATABASE_URL", None)
    secret_key_ensure(tmp_path / "home")
    key = environment["SECRET_KEY"]
    path = tmp_path / "home" / "secret_key"
    assert len(key) >= 50 and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    del environment["SECRET_KEY"]
    secret_key_ensure(tmp_path / "home")
    assert environment["SECRET_KEY"] == key


def test_no_secret_key_is_made_up_for_production_or_over_a_given_one(environment, tmp_path):
    environment.pop("SECRET_KEY", None)
    environment["DATABASE_URL"] = "postgres://u@db/langrun"
    secret_key_ensure(tmp_path)
    assert "SECRET_KEY" not in environment and not (tmp_path / "secret_key").exists()
    del environment["DATABASE_URL"]
    environment["SECRET_KEY"] = "given"
    secret_key_ensure(tmp_path)
    assert environment["SECRET_KEY"] == "given" and not (tmp_path / "secret_key").exists()
