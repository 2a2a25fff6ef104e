"""Structured logs: readable text by default, one JSON object per line with LOG_FORMAT=json.

A line logged while a run is being handled carries its `run_id` and `flow_id`,
taken from `extra={...}` or from the context that `log_context()` sets.
Only the message and a few known fields are written: payloads are never logged
by langrun, fields whose names suggest secrets are masked, and so are the paths
that carry a secret (a flow's ingest token in `/webhook/t/<token>`), in these
lines as in gunicorn's access log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from contextlib import contextmanager
from datetime import UTC, datetime

_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("langrun_run_id", default=None)
_flow_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("langrun_flow_id", default=None)

CONTEXT_FIELDS = ("run_id", "flow_id")
SECRET_WORDS = ("key", "secret", "password", "token", "authorization", "payload", "body", "cookie")
# A path segment that is itself a credential: an ingest token's webhook URL (webhooks/urls.py).
SECRET_PATH = re.compile(r"(/webhook/t/)[^/?#\s\"]+", re.IGNORECASE)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", *CONTEXT_FIELDS}


@contextmanager
def log_context(*, run_id=None, flow_id=None):
    """Every line logged inside the block (in this thread or task) carries these ids."""
    tokens = [_run_id.set(str(run_id) if run_id else None), _flow_id.set(str(flow_id) if flow_id else None)]
    try:
        yield
    finally:
        _flow_id.reset(tokens[1])
        _run_id.reset(tokens[0])


def mask_secret_paths(text: str) -> str:
    """`text` with the secret in any path that carries one replaced by `***`."""
    return SECRET_PATH.sub(r"\1***", text) if "/t/" in text or "/T/" in text else text


class SecretPathFilter(logging.Filter):
    """Masks the secret of a path that carries one (Django logs a refused request's path: `Forbidden: /api/…`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secret_paths(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


class RunContextFilter(logging.Filter):
    """Puts run_id and flow_id on every record (None when the line is not about a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("run_id", _run_id), ("flow_id", _flow_id)):
            value = getattr(record, name, None) or var.get()
            setattr(record, name, str(value) if value else None)
        return True


def _extras(record: logging.LogRecord) -> dict:
    out = {}
    for name, value in record.__dict__.items():
        if name in _STANDARD or name.startswith("_"):
            continue
        if hasattr(value, "method") and hasattr(value, "path"):  # an HttpRequest: its repr has the query string (?x-api-key=…)
            value = mask_secret_paths(f"{value.method} {value.path}")
        out[name] = "[redacted]" if any(w in name.lower() for w in SECRET_WORDS) else value
    return out


class TextFormatter(logging.Formatter):
    """`2026-01-01 12:00:00,000 INFO flows.services.runs Run accepted run_id=… flow_id=…`"""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{f}={getattr(record, f)}" for f in CONTEXT_FIELDS if getattr(record, f, None))
        return f"{line} {ids}" if ids else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id, flow_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for f in CONTEXT_FIELDS:
            if getattr(record, f, None):
                entry[f] = getattr(record, f)
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
