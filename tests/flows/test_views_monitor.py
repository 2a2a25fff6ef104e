"""GET /api/v1/monitor/builds: Langflow's vertex builds from recorded node results."""

import json

from rest_framework.test import APIClient

from flows.services.execution import flow_run_execute
from flows.services.flows import flow_update
from flows.services.runs import flow_run_create
from langrun.services import api_key_create


def test_vertex_builds_of_a_flow(key_client, flow):
    first = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Ada"})
    flow_run_execute(run_id=first.id)
    second = flow_run_create(flow=flow, user=flow.user, trigger="api", payload={"nobody": 1}, tweaks={"greet": {"template": "Yo {name}"}})
    flow_run_execute(run_id=second.id)
    flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={})  # still queued: not built yet

    response = key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}")
    assert response.status_code == 200
    builds = response.json()["vertex_builds"]
    assert set(builds) == {"hook", "greet", "out"}
    assert [b["build_id"] for b in builds["out"]] == [str(first.id)]  # skipped in the failed run: never built there
    hook = builds["hook"]
    assert [b["build_id"] for b in hook] == [str(first.id), str(second.id)]
    assert hook[0]["valid"] is True and hook[0]["flow_id"] == str(flow.id) and hook[0]["id"] == "hook"
    assert hook[0]["data"]["results"] == {"data": {"name": "Ada"}} and hook[0]["artifacts"] == {}
    greet_failed = builds["greet"][1]
    assert greet_failed["valid"] is False and "name" in greet_failed["data"]["message"]
    assert '"Yo {name}"' in greet_failed["params"]


def test_builds_report_the_params_of_the_version_each_run_executed(key_client, flow):
    old = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Ada"})
    flow_run_execute(run_id=old.id)
    changed = json.loads(json.dumps(flow.data).replace("Hello {name}!", "Bye {name}!"))
    flow_update(flow=flow, data=changed)
    new = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Bo"})
    flow_run_execute(run_id=new.id)
    greet = key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").json()["vertex_builds"]["greet"]
    assert [(b["build_id"], json.loads(b["params"])) for b in greet] == [
        (str(old.id), {"template": "Hello {name}!"}),
        (str(new.id), {"template": "Bye {name}!"}),
    ]


def test_a_flow_never_run_has_no_builds(key_client, flow):
    assert key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").json() == {"vertex_builds": {}}


def test_flow_id_missing_or_malformed_is_422(key_client, flow):
    missing = key_client.get("/api/v1/monitor/builds")
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["query", "flow_id"] and missing.json()["detail"][0]["type"] == "missing"
    bad = key_client.get("/api/v1/monitor/builds?flow_id=nope")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "flow_id"]


def test_owner_scoped(flow, make_user, client):
    other = APIClient()
    other.credentials(HTTP_X_API_KEY=api_key_create(user=make_user()).key)
    assert other.get(f"/api/v1/monitor/builds?flow_id={flow.id}").status_code == 404
    assert client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").status_code == 403


def test_builds_read_each_run_once_without_its_payload_or_outputs(key_client, flow):
    # Each node result used to bring its run's whole row: the run's outputs, payload and body read (and JSON decoded)
    # once per node, which for a flow of thousands of nodes held the request for minutes.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": "Ada"})
    flow_run_execute(run_id=run.id)
    with CaptureQueriesContext(connection) as queries:
        builds = key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").json()["vertex_builds"]
    assert set(builds) == {"hook", "greet", "out"} and builds["out"][0]["timestamp"]
    run_table = connection.ops.quote_name("flows_flowrun")
    for column in ("outputs", "payload", "body", "request"):
        assert not [q["sql"] for q in queries if f"{run_table}.{connection.ops.quote_name(column)}" in q["sql"]], column


def test_builds_are_the_newest_within_a_count_and_a_size(key_client, flow, settings, monkeypatch):
    # 100 runs of a flow of thousands of nodes, or of outputs of megabytes, made an answer of gigabytes.
    from flows.services import monitor

    runs = []
    for name in ("Ada", "Bo", "Cy"):
        runs.append(flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={"name": name * 100}))
        flow_run_execute(run_id=runs[-1].id)
    every = key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").json()["vertex_builds"]
    assert [b["build_id"] for b in every["out"]] == [str(r.id) for r in runs]

    monkeypatch.setattr(monitor, "VERTEX_BUILDS_MAX", 4)  # the newest 4 node results: Cy's 3 and Bo's Output
    builds = key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").json()["vertex_builds"]
    assert [b["build_id"] for b in builds["out"]] == [str(runs[1].id), str(runs[2].id)]
    assert [b["build_id"] for b in builds["hook"]] == [str(runs[2].id)]

    monkeypatch.setattr(monitor, "VERTEX_BUILDS_MAX", 1000)
    newest_run = sum(len(json.dumps(r.output)) for r in runs[2].node_results.all())
    settings.LANGRUN_MAX_RUN_OUTPUT_BYTES = newest_run + 10  # Cy's outputs fit, not one more
    builds = key_client.get(f"/api/v1/monitor/builds?flow_id={flow.id}").json()["vertex_builds"]
    assert {b["build_id"] for node in builds.values() for b in node} == {str(runs[2].id)} and len(builds) == 3
