"""Where the environment comes from before settings.py reads it: a `.env` file, Langflow's names, and LANGRUN_HOME.

Precedence, highest first: a real environment variable, the `.env` file, Langflow's name for the same setting.
No Django imports: the `langrun` command runs this before Django is set up.
"""

import os
import secrets
from pathlib import Path

import environ

# Langflow's name -> langrun's, for the settings both have (the README's table). A Langflow deployment's
# environment then works unchanged; langrun's name wins when both are set.
LANGFLOW_ALIASES = {
    "LANGFLOW_DATABASE_URL": "DATABASE_URL",
    "LANGFLOW_REDIS_URL": "REDIS_URL",
    "LANGFLOW_SECRET_KEY": "SECRET_KEY",
    "LANGFLOW_CONFIG_DIR": "LANGRUN_HOME",
    "LANGFLOW_HOST": "HOST",
    "LANGFLOW_PORT": "PORT",
    "LANGFLOW_WORKERS": "WEB_WORKERS",
    "LANGFLOW_LOG_LEVEL": "LOG_LEVEL",
    "LANGFLOW_WEBHOOK_AUTH_ENABLE": "LANGRUN_WEBHOOK_AUTH",
}
# Langflow writes log levels in lower case (`critical`); Python's logging knows only upper-case names.
_ALIAS_VALUE = {"LOG_LEVEL": str.upper}


def environment_load(directory: Path | None = None) -> None:
    """Read `.env` from `directory` (the current one by default) into os.environ, then apply Langflow's names.

    The current directory, not LANGRUN_HOME: the file may itself set LANGRUN_HOME, and it is where
    `langrun serve`, compose and process managers look for it. Values already in the environment are kept.
    """
    path = (directory or Path.cwd()) / ".env"
    if path.is_file():
        environ.Env.read_env(str(path), overwrite=False)
    for langflow_name, name in LANGFLOW_ALIASES.items():
        if langflow_name in os.environ and name not in os.environ:
            os.environ[name] = _ALIAS_VALUE.get(name, str)(os.environ[langflow_name])


def home_dir() -> Path:
    """LANGRUN_HOME: the embedded profile's database, the generated secret key and the collected static files."""
    return Path(os.environ.get("LANGRUN_HOME") or "var").expanduser().resolve()


def secret_key_ensure(home: Path) -> None:
    """On the embedded profile, without a SECRET_KEY, use (and on first start create) `<home>/secret_key` (`manage.py`, `langrun`).

    Never with DATABASE_URL set: processes on several machines must share one key, so production sets it.
    """
    if os.environ.get("SECRET_KEY") or os.environ.get("DATABASE_URL"):
        return
    path = home / "secret_key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50) + "\n")
    os.environ["SECRET_KEY"] = path.read_text().strip()
