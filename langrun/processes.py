"""The command lines of langrun's two kinds of process, for `serve`, `langrun web` and `langrun worker`.

Both work from any directory: gunicorn's settings come from an importable module (not ./gunicorn.conf.py),
and the worker starts through the installed package (not ./manage.py).
"""

import sys

# gunicorn's default line has the full request line and the referer: both may carry `?x-api-key=…`. Path only.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
GUNICORN_CONFIG = "python:langrun.gunicorn_conf"


def web_command(*, host: str, port: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "gunicorn", "langrun.wsgi", "--config", GUNICORN_CONFIG),
        *("--bind", f"{host}:{port}", "--workers", str(workers)),
        *("--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT),
    ]


def worker_command() -> list[str]:
    return [sys.executable, "-m", "langrun.cli", "worker"]
