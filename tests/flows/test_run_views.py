"""POST /api/v1/run/{flow_id_or_name}: Langflow's Simplified Run Flow, executed in the request."""

import json
import re
import threading
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

import tests.components  # noqa: F401 - registers the test components
from flows.engine import Component, Input, Output, registry
from flows.engine.registry import register
from flows.models import FlowRun, Variable
from flows.services.execution import flow_run_claim, flow_run_execute
from flows.services.flows import flow_create
from flows.services.sweep import flow_runs_recover_interrupted
from flows.services.variables import variable_create, variable_value
from langrun.services import api_key_create
from tests.helpers import MODEL_FLOW, new_run


@pytest.fixture
def run_client(transactional_db, user, api_key):
    # The run executes in a thread with its own connection: it must see committed rows.
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key)
    return c


def test_runs_the_flow_and_answers_in_langflow_shape(run_client, flow):
    response = run_client.post(
        "/api/v1/run/greet", {"input_value": '{"name": "Ada"}', "output_type": "chat", "session_id": "s1"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["session_id"] == "s1" and body["status"] == "succeeded" and body["error"] == ""
    (block,) = body["outputs"]
    assert block["inputs"] == {"input_value": '{"name": "Ada"}'}
    (out,) = block["outputs"]
    assert out["component_id"] == "out" and out["component_display_name"] == "Output"
    # Langflow's message, where its clients read it, next to langrun's own output by name.
    message = out["results"]["message"]
    assert message["text"] == "Hello Ada!" and message["sender"] == "Machine" and message["sender_name"] == "AI"
    assert message["session_id"] == "s1" and message["component_id"] == "out"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} UTC", message["timestamp"])
    assert out["results"]["value"] == "Hello Ada!"
    assert out["outputs"] == {"value": {"message": "Hello Ada!", "type": "text"}, "message": {"message": "Hello Ada!", "type": "text"}}
    assert out["messages"][0]["message"] == "Hello Ada!" and out["artifacts"]["message"] == "Hello Ada!"
    run = FlowRun.objects.get(pk=body["run_id"])
    assert run.trigger == "api" and run.status == "succeeded" and run.payload == {"name": "Ada"}
    assert run.outputs == {"greeting": "Hello Ada!"}
    assert message["run_id"] == str(run.id) and message["flow_id"] == str(flow.id)


def test_without_a_session_id_the_session_is_the_flow_id(run_client, flow):
    body = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "Ada"}'}, format="json").json()
    assert body["session_id"] == str(flow.id)
    assert body["outputs"][0]["outputs"][0]["results"]["message"]["session_id"] == str(flow.id)


def test_a_structured_output_keeps_its_value_and_has_no_message(run_client, make_flow, user):
    data = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "out", "type": "Output"}],
        "edges": [{"source": "hook", "target": "out"}],
    }
    make_flow(user, data=data, endpoint_name="echo")
    (out,) = run_client.post("/api/v1/run/echo", {"input_value": '{"a": 1}'}, format="json").json()["outputs"][0]["outputs"]
    assert out["results"] == {"value": {"a": 1}}
    assert out["outputs"] == {"value": {"message": {"a": 1}, "type": "object"}}
    assert out["messages"] == []


def test_by_flow_id_with_tweaks_recorded_on_the_run(run_client, flow):
    tweaks = {"greet": {"template": "Hi {name}"}}
    response = run_client.post(f"/api/v1/run/{flow.id}", {"input_value": '{"name": "Bo"}', "tweaks": tweaks}, format="json")
    assert response.status_code == 200
    assert response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Hi Bo"
    assert FlowRun.objects.get().tweaks == tweaks


def test_debug_reports_every_node_and_output_component_one(run_client, flow):
    debug = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "A"}', "output_type": "debug"}, format="json").json()
    assert [o["component_id"] for o in debug["outputs"][0]["outputs"]] == ["hook", "greet", "out"]
    one = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "A"}', "output_component": "greet"}, format="json").json()
    assert [o["component_id"] for o in one["outputs"][0]["outputs"]] == ["greet"]
    assert one["outputs"][0]["outputs"][0]["results"] == {"text": "Hello A!"}


def test_input_value_that_is_not_json_is_wrapped_and_absent_is_empty(run_client, make_flow, user):
    data = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "out", "type": "Output", "params": {"name": "got"}}],
        "edges": [{"source": "hook", "target": "out"}],
    }
    make_flow(user, data=data, endpoint_name="echo")
    assert run_client.post("/api/v1/run/echo", {"input_value": "hello"}, format="json").json()["status"] == "succeeded"
    assert FlowRun.objects.get().outputs == {"got": {"payload": "hello"}}
    run_client.post("/api/v1/run/echo", {}, format="json")
    assert FlowRun.objects.order_by("-received_at").first().outputs == {"got": {}}


def test_a_failing_flow_answers_500_with_langflows_error_body_and_is_recorded(run_client, flow):
    response = run_client.post("/api/v1/run/greet", {"input_value": '{"other": 1}'}, format="json")
    assert response.status_code == 500, response.content
    body = response.json()
    # Langflow's detail is its error body as JSON text.
    error = json.loads(body["detail"])
    assert "greet" in error["message"] and set(error) >= {"message", "traceback", "description", "code", "suggestion"}
    run = FlowRun.objects.get(pk=body["run_id"])
    assert run.status == "failed" and run.error == error["message"]
    assert body["status"] == "failed" and body["status_url"].endswith(f"/api/v1/runs/{run.id}")
    assert run.node_results.get(node_id="out").status == "skipped"


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({"input_type": "voice"}, ["body", "input_type"], "invalid_choice"),
        ({"output_type": "json"}, ["body", "output_type"], "invalid_choice"),
        ({"tweaks": {"nope": {"x": 1}}}, ["body", "tweaks", "nope"], "unknown_node"),
        ({"tweaks": {"greet": "x"}}, ["body", "tweaks", "greet"], "not_a_dict"),
        ({"tweaks": {"greet": {"template": 5}}}, ["body", "tweaks", "greet", "template"], None),
        ({"output_component": "ghost"}, ["body", "output_component"], "unknown_node"),
        ({"input_value": 5}, ["body", "input_value"], "value_error"),
        ({"session_id": ["x"]}, ["body", "session_id"], "value_error"),
    ],
)
def test_bad_requests_are_422_and_store_nothing(run_client, flow, body, loc, type_):
    response = run_client.post("/api/v1/run/greet", body, format="json")
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc
    if type_:
        assert detail[0]["type"] == type_
    assert not FlowRun.objects.exists()


def test_auth_and_isolation(run_client, flow, make_user, make_flow):
    assert APIClient().post("/api/v1/run/greet", {}, format="json").status_code == 403
    other = make_user()
    theirs = make_flow(other, endpoint_name="theirs")
    assert run_client.post(f"/api/v1/run/{theirs.id}", {}, format="json").status_code == 404
    assert run_client.post("/api/v1/run/theirs", {}, format="json").json() == {"detail": "Flow identifier theirs not found"}
    # Their flow with the same endpoint name as mine: each key runs its owner's.
    make_flow(other, endpoint_name="greet")
    other_client = APIClient()
    other_client.credentials(HTTP_X_API_KEY=api_key_create(user=other).key)
    other_client.post("/api/v1/run/greet", {"input_value": '{"name": "Z"}'}, format="json")
    assert FlowRun.objects.get().flow.user == other


def test_timeout_answers_202_and_the_run_finishes_on_its_own(run_client, make_flow, user, settings):
    settings.LANGRUN_SYNC_RUN_TIMEOUT = 0.2
    release = threading.Event()

    @register
    class Gate(Component):
        """Blocks until the test releases it."""

        name = "TestGate"
        inputs = (Input("value", "any"),)
        outputs = (Output("value", "any"),)

        def run(self, value):
            release.wait(10)
            return {"value": value}

    try:
        data = {
            "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "gate", "type": "TestGate"}, {"id": "out", "type": "Output"}],
            "edges": [{"source": "hook", "target": "gate"}, {"source": "gate", "target": "out"}],
        }
        make_flow(user, data=data, endpoint_name="slow")
        response = run_client.post("/api/v1/run/slow", {"input_value": "1"}, format="json")
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "in progress" and response["Location"] == body["status_url"]
        assert body["status_url"].endswith(f"/api/v1/runs/{body['run_id']}")
        assert FlowRun.objects.get(pk=body["run_id"]).status == "running"
        release.set()
        from flows.services.waits import flow_run_wait

        assert flow_run_wait(run_id=body["run_id"], timeout=10).status == "succeeded"
    finally:
        release.set()
        registry._components.pop("TestGate", None)


def test_past_the_runs_a_web_process_executes_a_run_is_left_to_the_workers(run_client, flow, settings):
    # Each run of /run executed in the web process, un-niced: 40 synchronous runs of a flow of hostile regular
    # expressions (one account) held another account's webhooks up to 8.6 s, 60 streams 19.7 s.
    from flows.services import waits

    settings.LANGRUN_SYNC_RUN_TIMEOUT = 0.3
    settings.LANGRUN_WEB_RUNS_PER_PROCESS = 1
    assert waits.web_run_slot_take()  # another run executes in this process
    try:
        response = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "Ada"}'}, format="json")
        assert response.status_code == 202
        assert FlowRun.objects.get(pk=response.json()["run_id"]).status == "queued"  # enqueued: a worker runs it
        streamed = run_client.post("/api/v1/run/greet?stream=true", {"input_value": '{"name": "Ada"}'}, format="json")
        assert streamed.status_code == 200
        assert FlowRun.objects.filter(status="queued").count() == 2  # not started here either
    finally:
        waits.web_run_slot_give()
    response = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "Ada"}'}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"


def test_a_run_thread_that_cannot_start_gives_its_slot_back_and_leaves_the_run_to_the_workers(run_client, flow, settings, monkeypatch):
    # A process out of threads: the slot taken for the run must not stay taken, or after a few such requests no run
    # of /run would ever execute in this process again.
    from flows.services import waits

    settings.LANGRUN_SYNC_RUN_TIMEOUT = 0.3
    settings.LANGRUN_WEB_RUNS_PER_PROCESS = 1

    def no_thread(self):
        if self.name.startswith("run-"):
            raise RuntimeError("can't start new thread")
        return real_start(self)

    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    response = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "Ada"}'}, format="json")
    assert response.status_code == 202  # a worker runs it
    assert FlowRun.objects.get(pk=response.json()["run_id"]).status == "queued"
    streamed = run_client.post("/api/v1/run/greet?stream=true", {"input_value": '{"name": "Ada"}'}, format="json")
    assert streamed.status_code == 200
    assert waits.web_run_slot_take()  # both slots were given back
    waits.web_run_slot_give()
    monkeypatch.setattr(threading.Thread, "start", real_start)
    response = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "Ada"}'}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"


def test_a_caller_past_its_share_of_waits_gets_the_202_at_once(run_client, flow, user, settings):
    from langrun.waits import wait_slot

    settings.LANGRUN_WAITS_PER_USER = 1
    with wait_slot(owner=str(user.pk)):  # another synchronous run of this account is waiting
        response = run_client.post("/api/v1/run/greet", {"input_value": '{"name": "Ada"}'}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "in progress" and response["Location"] == body["status_url"]
    assert FlowRun.objects.get(pk=body["run_id"]).status == "queued"  # enqueued: a worker runs it


@pytest.mark.parametrize("input_value", ["[1e999]", '{"x": -1e400}', "[" * 150 + "]" * 150, '{"a": "\\u0000"}'])
def test_an_input_value_whose_json_cannot_be_stored_is_422(run_client, flow, input_value):
    response = run_client.post("/api/v1/run/greet", {"input_value": input_value}, format="json")
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "input_value"] and error["type"]
    assert not FlowRun.objects.exists()


@pytest.mark.usefixtures("execute_path")
def test_run_detail_shows_every_attempt(key_client, flow, user, enqueued):
    flow.max_attempts = 2
    flow.save()
    run = new_run(flow, user)
    flow_run_claim(run_id=run.id)
    flow_runs_recover_interrupted(lease=timedelta(0))
    flow_run_execute(run_id=run.id)
    log = key_client.get(f"/api/v1/runs/{run.id}/attempts").json()
    assert [(a["number"], a["outcome"]) for a in log] == [(1, "interrupted"), (2, "succeeded")]
    assert "interrupted" in log[0]["error"] and log[1]["finished_at"]


def test_global_variable_headers_set_variables_for_the_run_only(run_client, user, server, settings):
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    variable_create(user=user, name="OPENAI_API_KEY", value="sk-wrong")
    data = json.loads(json.dumps(MODEL_FLOW))
    data["nodes"][2]["params"]["base_url"] = server.url + "/v1"
    flow_create(user=user, name="model", endpoint_name="model", data=data)
    # X-LANGFLOW-GLOBAL-VAR-openai-api-key: Langflow upper-cases the name; WSGI gives it as META does.
    response = run_client.post(
        "/api/v1/run/model", {"input_value": '{"text": "hi"}'}, format="json", HTTP_X_LANGFLOW_GLOBAL_VAR_OPENAI_API_KEY="sk-test-secret"
    )
    assert response.status_code == 200, response.content
    assert response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "echo: Summarise: hi"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-secret"
    assert variable_value(variable=Variable.objects.get(name="OPENAI_API_KEY")) == "sk-wrong"
    assert "sk-test-secret" not in FlowRun.objects.get().request_variables
