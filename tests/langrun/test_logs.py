"""Structured logs: JSON lines or text, run_id and flow_id on every line about a run, no payloads or secrets."""

import io
import json
import logging

import pytest

from flows import tasks
from flows.services.runs import flow_run_create
from langrun.logs import JsonFormatter, RunContextFilter, SecretPathFilter, TextFormatter, log_context, mask_secret_paths

SECRET = "card-4242-4242-4242-4242"


@pytest.fixture
def log_lines():
    """Root logs through langrun's filter and the given formatter, as the LOGGING setting wires them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RunContextFilter())
    handler.addFilter(SecretPathFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    def lines(formatter) -> list[str]:
        handler.setFormatter(formatter)
        return stream

    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_json_lines_about_a_run_carry_its_ids_and_never_its_payload(log_lines, flow, user):
    stream = log_lines(JsonFormatter())
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": SECRET}, body=json.dumps({"name": SECRET}))
    tasks.execute_run(str(run.id))
    run.refresh_from_db()
    assert run.status == "succeeded" and SECRET in run.outputs["greeting"]

    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    about_run = [e for e in entries if e["logger"].startswith("flows") and "version 1 recorded" not in e["message"]]
    assert {e["message"].split(" (")[0].split(" in ")[0] for e in about_run} >= {"Run accepted", "Run succeeded"}
    for e in about_run:
        assert (e["run_id"], e["flow_id"]) == (str(run.id), str(flow.id)), e
        assert {"time", "level", "logger", "message"} <= set(e)
    assert SECRET not in stream.getvalue()


def test_context_ids_and_redacted_extras(log_lines):
    stream = log_lines(JsonFormatter())
    log = logging.getLogger("langrun.test")
    with log_context(run_id="r-1", flow_id="f-1"):
        log.warning("inside", extra={"api_key": "sk-123", "attempt": 2})
    log.warning("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["run_id"], inside["flow_id"], inside["attempt"], inside["api_key"]) == ("r-1", "f-1", 2, "[redacted]")
    assert "run_id" not in outside and "flow_id" not in outside


def test_request_extra_is_logged_without_its_query_string(log_lines, rf):
    stream = log_lines(JsonFormatter())
    request = rf.post("/api/v1/webhook/demo?x-api-key=sk-secret")
    logging.getLogger("django.request").warning("Forbidden: %s", request.path, extra={"status_code": 403, "request": request})
    entry = json.loads(stream.getvalue())
    assert entry["request"] == "POST /api/v1/webhook/demo" and "sk-secret" not in stream.getvalue()


def test_text_format_appends_the_ids(log_lines):
    stream = log_lines(TextFormatter())
    with log_context(run_id="r-2", flow_id="f-2"):
        logging.getLogger("flows.x").info("hello")
    assert stream.getvalue().rstrip().endswith("INFO flows.x hello run_id=r-2 flow_id=f-2")


def test_settings_choose_the_formatter(monkeypatch):
    import importlib

    import langrun.settings

    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    try:
        s = importlib.reload(langrun.settings)
        assert s.LOGGING["handlers"]["console"]["formatter"] == "json"
        assert s.LOGGING["root"]["level"] == "WARNING"
    finally:
        monkeypatch.delenv("LOG_FORMAT")
        monkeypatch.delenv("LOG_LEVEL")
        importlib.reload(langrun.settings)


def test_serve_access_log_leaves_out_query_strings_and_referers():
    from langrun.processes import ACCESS_LOG_FORMAT

    assert "%(U)s" in ACCESS_LOG_FORMAT
    for field in ("%(r)s", "%(q)s", "%(f)s", "%({"):
        assert field not in ACCESS_LOG_FORMAT


TOKEN = "it-Zx9_secret-token-value"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"/api/v1/webhook/t/{TOKEN}", "/api/v1/webhook/t/***"),
        (f"POST /api/v1/webhook/t/{TOKEN}/?wait=1 HTTP/1.1", "POST /api/v1/webhook/t/***/?wait=1 HTTP/1.1"),
        (f"/api/v1/WEBHOOK/T/{TOKEN}", "/api/v1/WEBHOOK/T/***"),
        ("/api/v1/webhook/greet", "/api/v1/webhook/greet"),
        ("/api/v1/webhook/t", "/api/v1/webhook/t"),
    ],
)
def test_a_token_in_a_path_is_masked(text, masked):
    assert mask_secret_paths(text) == masked


def test_djangos_line_and_the_request_extra_mask_a_token_path(log_lines, rf):
    stream = log_lines(JsonFormatter())
    request = rf.post(f"/api/v1/webhook/t/{TOKEN}")
    logging.getLogger("django.request").warning("Forbidden: %s", request.path, extra={"status_code": 403, "request": request})
    entry = json.loads(stream.getvalue())
    assert (entry["message"], entry["request"]) == ("Forbidden: /api/v1/webhook/t/***", "POST /api/v1/webhook/t/***")
    assert TOKEN not in stream.getvalue()


def test_the_settings_put_the_mask_on_the_console():
    from django.conf import settings

    assert "secret_paths" in settings.LOGGING["handlers"]["console"]["filters"]


def test_gunicorns_access_log_masks_a_token_path():
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    from langrun.gunicorn_conf import AccessLogger, logger_class
    from langrun.processes import ACCESS_LOG_FORMAT

    assert logger_class is AccessLogger
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"/api/v1/webhook/t/{TOKEN}?wait=1",
        "PATH_INFO": f"/api/v1/webhook/t/{TOKEN}",
        "QUERY_STRING": "wait=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_REFERER": f"https://example.com/webhook/t/{TOKEN}",
    }
    response = SimpleNamespace(status="202 Accepted", sent=10, headers=[])
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    atoms = AccessLogger(Config()).atoms(response, request, environ, timedelta(milliseconds=5))
    assert TOKEN not in str(atoms)
    assert atoms["U"] == "/api/v1/webhook/t/***" and atoms["r"] == "POST /api/v1/webhook/t/***?wait=1 HTTP/1.1"
    line = ACCESS_LOG_FORMAT % atoms
    assert '"POST /api/v1/webhook/t/*** HTTP/1.1" 202' in line
