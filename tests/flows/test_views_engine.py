"""The component catalogue, flow timeouts and node tracebacks through the API and services."""

import pytest

from flows.models import Flow
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from tests.helpers import GREETING_FLOW


def test_component_catalogue(key_client):
    response = key_client.get("/api/v1/components/")
    assert response.status_code == 200
    catalogue = {c["name"]: c for c in response.json()}
    assert {"Webhook", "Extract", "Template", "Condition", "HTTPRequest", "LanguageModel", "JSONBuild", "TextJoin", "Output"} <= set(
        catalogue
    )
    extract = catalogue["Extract"]
    assert extract["description"]
    assert [i["name"] for i in extract["inputs"]] == ["data", "query"] and extract["outputs"][0]["name"] == "value"
    operator = next(i for i in catalogue["Condition"]["inputs"] if i["name"] == "operator")
    assert "is_not_empty" in operator["choices"]
    assert [o["name"] for o in catalogue["HTTPRequest"]["outputs"]] == ["status", "headers", "body"]
    assert catalogue["Template"]["extra_inputs"]["type"] == "any"


def test_component_catalogue_needs_authentication(client):
    assert client.get("/api/v1/components/").status_code == 403


SLOW_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "call", "type": "HTTPRequest", "params": {"url": "URL", "timeout": 5}},
        {"id": "out", "type": "Output"},
    ],
    "edges": [{"source": "hook", "target": "call"}, {"source": "call", "source_output": "status", "target": "out"}],
}


def test_flow_timeout_field_validated(key_client):
    data = {"nodes": [{"id": "hook", "type": "Webhook"}], "edges": []}
    ok = key_client.post("/api/v1/flows/", {"name": "t", "data": data, "timeout": 30}, format="json")
    assert ok.status_code == 201 and ok.json()["timeout"] == 30
    bad = key_client.post("/api/v1/flows/", {"name": "t", "data": data, "timeout": 0}, format="json")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "timeout"]


@pytest.mark.parametrize("where", ["flow", "setting"])
def test_run_timeout_fails_the_run(user, server, settings, where):  # noqa: F811
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    data = {
        **SLOW_FLOW,
        "nodes": [
            SLOW_FLOW["nodes"][0],
            {**SLOW_FLOW["nodes"][1], "params": {"url": server.url + "/slow", "timeout": 5}},
            SLOW_FLOW["nodes"][2],
        ],
    }
    flow = flow_create(user=user, name="slow", data=data, timeout=1 if where == "flow" else None)
    if where == "setting":
        settings.LANGRUN_FLOW_TIMEOUT = 1
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "time limit of 1 s" in run.error
    assert dict(run.node_results.values_list("node_id", "status")) == {"hook": "succeeded", "call": "failed", "out": "skipped"}


def test_traceback_is_recorded_and_shown_to_staff_only(user, key_client, monkeypatch, make_user):
    from flows.engine.components.core import Template

    def boom(self, **values):
        raise RuntimeError("kaput")

    monkeypatch.setattr(Template, "run", boom)
    flow = Flow.objects.get(pk=flow_create(user=user, name="g", data=GREETING_FLOW).pk)
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"name": "Ada"})
    flow_run_execute(run_id=run.id)
    row = run.node_results.get(node_id="greet")
    assert row.error == "RuntimeError: kaput" and "Traceback" in row.traceback and "boom" in row.traceback
    nodes = key_client.get(f"/api/v1/runs/{run.id}").json()["nodes"]
    assert all("traceback" not in n for n in nodes)
    user.is_staff = True
    user.save()
    nodes = key_client.get(f"/api/v1/runs/{run.id}").json()["nodes"]
    assert "kaput" in next(n for n in nodes if n["id"] == "greet")["traceback"]


def test_catalogue_inputs_drive_validation_through_the_api(key_client):
    data = {
        "nodes": [{"id": "h", "type": "Webhook"}, {"id": "c", "type": "Condition", "params": {"operator": "between"}}],
        "edges": [{"source": "h", "target": "c"}],
    }
    response = key_client.post("/api/v1/flows/", {"name": "c", "data": data}, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", "nodes", 1, "params", "operator"]


def test_system_checks_for_engine_settings(settings):
    from flows.checks import check_engine_settings

    assert check_engine_settings() == []
    settings.LANGRUN_VARIABLES_KEY = "not-a-key"
    settings.LANGRUN_FLOW_TIMEOUT = settings.LANGRUN_RUN_TIMEOUT
    assert sorted(p.id for p in check_engine_settings()) == ["flows.E003", "flows.W001"]


def test_system_check_reads_every_key_of_the_list(settings):
    from cryptography.fernet import Fernet

    from flows.checks import check_engine_settings

    good = Fernet.generate_key().decode()
    settings.LANGRUN_VARIABLES_KEY = f"{good}, {good[::-1]}"
    problems = check_engine_settings()
    assert [p.id for p in problems] == ["flows.E003"] and "second" in problems[0].msg
    settings.LANGRUN_VARIABLES_KEY = f"{good},{Fernet.generate_key().decode()}"
    assert check_engine_settings() == []
