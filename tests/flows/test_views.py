import copy

import pytest

import tests.components  # noqa: F401 - registers the test components
from flows.models import Flow, FlowRun
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_create
from langrun.services import api_key_create
from tests.helpers import GREETING_FLOW


def create(client, **fields):
    body = {"name": "Greeting", "data": GREETING_FLOW, **fields}
    return client.post("/api/v1/flows/", body, format="json")


def test_create_list_retrieve_update_delete(key_client, user):
    created = create(key_client, endpoint_name="greet", description="says hello")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["user_id"] == str(user.pk) and body["webhook"] is True
    assert body["webhook_url"] == "http://testserver/api/v1/webhook/greet"
    flow_id = body["id"]

    listed = key_client.get("/api/v1/flows/").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == flow_id
    assert key_client.get(f"/api/v1/flows/{flow_id}").json()["name"] == "Greeting"

    patched = key_client.patch(f"/api/v1/flows/{flow_id}", {"name": "Hello"}, format="json")
    assert patched.status_code == 200 and patched.json()["name"] == "Hello"
    assert key_client.delete(f"/api/v1/flows/{flow_id}").status_code == 204
    assert not Flow.objects.exists()


def test_invalid_graph_is_422_located_at_the_node(key_client):
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][2]["type"] = "Nope"
    response = create(key_client, data=data)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", "nodes", 2, "type"]
    assert response.json()["detail"][0]["type"] == "unknown_component"
    assert not Flow.objects.exists()


def test_invalid_graph_on_update_is_422_and_keeps_the_old_graph(key_client, flow):
    response = key_client.patch(
        f"/api/v1/flows/{flow.id}", {"data": {"nodes": [], "edges": [{"source": "a", "target": "b"}]}}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", "edges", 0, "source"]
    flow.refresh_from_db()
    assert flow.data == GREETING_FLOW


def test_missing_fields_and_bad_endpoint_name_are_422(key_client):
    response = key_client.post("/api/v1/flows/", {"endpoint_name": "no spaces!"}, format="json")
    assert response.status_code == 422
    locs = {tuple(e["loc"]): e["type"] for e in response.json()["detail"]}
    assert locs[("body", "name")] == "missing" and locs[("body", "data")] == "missing"
    assert ("body", "endpoint_name") in locs


@pytest.mark.parametrize("name", ["0123456789abcdef0123456789abcdef", "01234567-89ab-cdef-0123-456789ABCDEF"])
def test_an_endpoint_name_the_webhook_would_read_as_a_flow_id_is_422(key_client, flow, name):
    # The webhook reads a UUID (hyphens or not) as a flow id: a flow with such a name got a webhook_url that was a 404.
    response = create(key_client, endpoint_name=name)
    assert response.status_code == 422, response.content
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "endpoint_name"]]
    assert key_client.patch(f"/api/v1/flows/{flow.id}", {"endpoint_name": name}, format="json").status_code == 422
    assert create(key_client, endpoint_name="0123456789abcdef0123456789abcde").status_code == 201  # one short of a UUID


def test_an_imported_endpoint_name_that_reads_as_a_flow_id_is_dropped(key_client):
    document = {"name": "Imported", "endpoint_name": "0123456789abcdef0123456789abcdef", "data": GREETING_FLOW}
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code in (201, 422), response.content
    if response.status_code == 201:
        assert response.json()[0]["endpoint_name"] != "0123456789abcdef0123456789abcdef"


def test_endpoint_name_clash_is_422_not_500(key_client, flow):
    response = create(key_client, endpoint_name=flow.endpoint_name)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "endpoint_name"], "msg": "You already have a flow with endpoint name greet.", "type": "unique"}
    ]


def test_malformed_json_body_is_422(key_client):
    response = key_client.generic("POST", "/api/v1/flows/", b"{nope", content_type="application/json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_flows_require_authentication(client, flow):
    response = client.get("/api/v1/flows/")
    assert response.status_code == 403 and "detail" in response.json()
    assert client.get("/api/v1/flows/", HTTP_X_API_KEY="sk-bogus-key-value").json() == {"detail": "Invalid API key"}


def test_other_users_flows_are_404(client, flow, make_user):
    bob = make_user("bob")
    client.credentials(HTTP_X_API_KEY=api_key_create(user=bob).key)
    assert client.get("/api/v1/flows/").json()["count"] == 0
    assert client.get(f"/api/v1/flows/{flow.id}").status_code == 404
    assert client.patch(f"/api/v1/flows/{flow.id}", {"name": "x"}, format="json").status_code == 404
    assert client.delete(f"/api/v1/flows/{flow.id}").status_code == 404
    assert Flow.objects.filter(pk=flow.pk, name="Greeting").exists()


def test_session_authentication_works(client, flow, user):
    client.force_login(user)
    assert client.get("/api/v1/flows/").json()["count"] == 1


def test_run_status_and_task_status(key_client, flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    queued = key_client.get(f"/api/v1/runs/{run.id}").json()
    assert queued["status"] == "queued" and queued["nodes"] == [] and queued["started_at"] is None
    assert key_client.get(f"/api/v1/task/{run.id}").json() == {"status": "queued", "result": None}

    flow_run_execute(run_id=run.id)
    body = key_client.get(f"/api/v1/runs/{run.id}").json()
    assert set(body) == {
        "id",
        "flow_id",
        "version",
        "status",
        "trigger",
        "attempts",
        "outputs",
        "error",
        "request",
        "received_at",
        "started_at",
        "finished_at",
        "replay_of",
        "waiting_for",
        "waiting",
        "nodes",
    }
    assert body["status"] == "succeeded" and body["outputs"] == {"greeting": "Hello Ada!"} and body["flow_id"] == str(flow.id)
    assert [n["id"] for n in body["nodes"]] == ["hook", "greet", "out"]
    assert set(body["nodes"][0]) == {"id", "type", "status", "output", "error", "duration_ms"}
    assert key_client.get(f"/api/v1/task/{run.id}").json() == {"status": "succeeded", "result": {"greeting": "Hello Ada!"}}


def test_failed_run_task_status_carries_the_error(key_client, flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    flow_run_execute(run_id=run.id)
    result = key_client.get(f"/api/v1/task/{run.id}").json()
    assert result["status"] == "failed" and "'name' is missing" in result["result"]["error"]


@pytest.mark.parametrize("run_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_runs_and_tasks_are_404(key_client, run_id):
    assert key_client.get(f"/api/v1/runs/{run_id}").status_code == 404
    response = key_client.get(f"/api/v1/task/{run_id}")
    assert response.status_code == 404 and response.json() == {"detail": "Task not found"}


def test_other_users_runs_are_404(client, flow, user, make_user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={})
    client.credentials(HTTP_X_API_KEY=api_key_create(user=make_user("bob")).key)
    assert client.get(f"/api/v1/runs/{run.id}").status_code == 404
    assert client.get(f"/api/v1/task/{run.id}").status_code == 404
    assert FlowRun.objects.count() == 1


@pytest.mark.usefixtures("execute_path")
def test_flow_api_sets_attempts_and_concurrency(key_client):
    from tests.helpers import GREETING_FLOW

    body = {"name": "R", "data": GREETING_FLOW, "max_attempts": 3, "max_concurrent_runs": 2}
    created = key_client.post("/api/v1/flows/", body, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["max_attempts"], created.json()["max_concurrent_runs"], created.json()["signed"]) == (3, 2, False)
    flow_id = created.json()["id"]
    patched = key_client.patch(f"/api/v1/flows/{flow_id}", {"max_concurrent_runs": None}, format="json")
    assert patched.status_code == 200 and patched.json()["max_concurrent_runs"] is None
    bad = key_client.post("/api/v1/flows/", {**body, "max_attempts": 0}, format="json")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "max_attempts"]
    assert key_client.post("/api/v1/flows/", {"name": "D", "data": GREETING_FLOW}, format="json").json()["max_attempts"] == 1


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"max_concurrent_runs": 2**31}, ["body", "max_concurrent_runs"]),
        ({"max_concurrent_runs": 2**62}, ["body", "max_concurrent_runs"]),
        ({"max_concurrent_runs": 2**63}, ["body", "max_concurrent_runs"]),
        ({"timeout": 2**63}, ["body", "timeout"]),
        ({"max_attempts": 2**63}, ["body", "max_attempts"]),
        ({"concurrency": {"limit": 2**63}}, ["body", "concurrency", "limit"]),
        ({"throttle": {"limit": 1, "period": 2**63}}, ["body", "throttle", "period"]),
        ({"response": {"mode": "static", "status": 2**63}}, ["body", "response"]),
        ({"response": {"mode": "flow", "timeout": 2**63}}, ["body", "response"]),
    ],
)
def test_an_integer_setting_past_its_bound_is_422_naming_it_and_changes_nothing(key_client, flow, fields, loc):
    response = key_client.patch(f"/api/v1/flows/{flow.pk}", fields, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == loc
    flow.refresh_from_db()
    assert (flow.max_concurrent_runs, flow.timeout, flow.max_attempts, flow.throttle_period) == (None, None, 1, None)
    assert create(key_client, endpoint_name="new", **fields).status_code == 422


def test_the_largest_max_concurrent_runs_is_kept(key_client, flow):
    response = key_client.patch(f"/api/v1/flows/{flow.pk}", {"max_concurrent_runs": 2**31 - 1}, format="json")
    assert response.status_code == 200 and response.json()["max_concurrent_runs"] == 2**31 - 1
    flow.refresh_from_db()
    assert flow.max_concurrent_runs == 2**31 - 1


def test_the_webhook_url_follows_the_prefix_the_service_is_mounted_under(key_client, flow):
    from django.test.utils import override_script_prefix

    with override_script_prefix("/langrun/"):  # what Django's WSGI handler sets from SCRIPT_NAME
        shown = key_client.get(f"/api/v1/flows/{flow.id}").json()
    assert shown["webhook_url"] == "http://testserver/langrun/api/v1/webhook/greet"
