"""A flow's webhook settings through the API and the native flow JSON: `methods`, `response`."""

import pytest

from flows.models import Flow
from tests.helpers import GREETING_FLOW


def create(client, **fields):
    return client.post("/api/v1/flows/", {"name": "F", "data": GREETING_FLOW, **fields}, format="json")


def test_methods_default_to_post_and_can_be_set(key_client):
    response = create(key_client)
    assert response.status_code == 201 and response.json()["methods"] == ["POST"]
    flow_id = response.json()["id"]
    response = key_client.patch(f"/api/v1/flows/{flow_id}", {"methods": ["get", "POST", "GET"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["methods"] == ["GET", "POST"]
    assert Flow.objects.get(pk=flow_id).allowed_methods == ("GET", "POST")


def test_an_unknown_method_or_none_is_422_naming_the_field(key_client):
    response = create(key_client, methods=["POST", "TRACE"])
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", "methods"] and "TRACE" in error["msg"]
    response = create(key_client, methods=[])
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:2] == ["body", "methods"]
    assert not Flow.objects.exists()


def test_methods_travel_in_the_native_export_and_import(key_client):
    flow_id = create(key_client, methods=["GET", "PUT"]).json()["id"]
    exported = key_client.get(f"/api/v1/flows/{flow_id}/export").json()
    assert exported["methods"] == ["GET", "PUT"]
    response = key_client.post("/api/v1/flows/upload/", exported, format="json")
    assert response.status_code == 201, response.content
    assert response.json()[0]["methods"] == ["GET", "PUT"]


def test_an_import_with_a_bad_method_is_422_naming_the_field(key_client):
    document = {"name": "F", "data": GREETING_FLOW, "methods": ["FETCH"]}
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1:] == ["methods"] or "methods" in response.json()["detail"][0]["loc"]
    assert not Flow.objects.exists()


def test_the_schema_documents_methods_and_the_runs_request(key_client):
    schema = key_client.get("/api/schema/?format=json").json()
    flow = schema["components"]["schemas"]["Flow"]["properties"]
    enum = flow["methods"]["items"]["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][enum]["enum"] == ["GET", "POST", "PUT", "PATCH", "DELETE"]
    run = schema["components"]["schemas"]["FlowRun"]["properties"]
    assert "request" in run
    webhook = next(v for k, v in schema["paths"].items() if k.startswith("/api/v1/webhook/{"))
    assert {"get", "post", "put", "patch", "delete"} <= set(webhook)
    assert "405" in webhook["get"]["responses"]


# --- response (issue 21, item 8) -------------------------------------------------------


def test_response_defaults_to_accepted_and_can_be_set(key_client):
    response = create(key_client)
    assert response.status_code == 201 and response.json()["response"] == {"mode": "accepted"}
    flow_id = response.json()["id"]
    static = {"mode": "static", "headers": {"X-Handled-By": "langrun"}, "body": {"ok": True}}
    response = key_client.patch(f"/api/v1/flows/{flow_id}", {"response": static}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["response"] == {**static, "status": 200}
    response = key_client.patch(f"/api/v1/flows/{flow_id}", {"response": {"mode": "flow"}}, format="json")
    assert response.json()["response"] == {"mode": "flow", "timeout": 10}
    response = key_client.patch(f"/api/v1/flows/{flow_id}", {"response": None}, format="json")
    assert response.json()["response"] == {"mode": "accepted"} and Flow.objects.get(pk=flow_id).response == ""


@pytest.mark.parametrize(
    "value, words",
    [
        ("flow", "object"),
        ({"mode": "sync"}, "Unknown mode"),
        ({"mode": "static", "status": 500}, "200 to 499"),
        ({"mode": "static", "status": 101}, "200 to 499"),
        ({"mode": "static", "status": "200"}, "200 to 499"),
        ({"mode": "static", "headers": {"Content-Length": "2"}}, "Content-Length cannot be set"),
        ({"mode": "static", "headers": {"Transfer-Encoding": "chunked"}}, "cannot be set"),
        ({"mode": "static", "headers": {"Set-Cookie": "a=1"}}, "cannot be set"),
        ({"mode": "static", "headers": {"Connection": "close"}}, "cannot be set"),
        ({"mode": "static", "headers": {"X-A": "a\r\nb"}}, "one line"),
        ({"mode": "static", "headers": {"X-A": 1}}, "text"),
        ({"mode": "static", "status": 204, "body": "x"}, "no body"),
        ({"mode": "static", "body": "x" * 20000}, "at most"),
        ({"mode": "static", "timeout": 3}, "Unknown field timeout"),
        ({"mode": "flow", "timeout": 0}, "above 0"),
        ({"mode": "flow", "timeout": 21}, "at most 20"),
        ({"mode": "flow", "status": 200}, "Unknown field status"),
    ],
)
def test_a_bad_response_is_422_naming_the_field(key_client, value, words):
    response = create(key_client, response=value)
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "response"] and words in error["msg"], error
    assert not Flow.objects.exists()


RESPOND = {
    "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "answer", "type": "Respond", "params": {"body": "ok"}}],
    "edges": [{"source": "hook", "target": "answer", "target_input": "data"}],
}


def test_a_respond_node_needs_flow_mode(key_client):
    response = key_client.post("/api/v1/flows/", {"name": "F", "data": RESPOND}, format="json")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "response"] and "'answer'" in error["msg"] and error["type"] == "respond_needs_flow_mode"
    flow_id = create(key_client).json()["id"]
    assert key_client.patch(f"/api/v1/flows/{flow_id}", {"data": RESPOND}, format="json").status_code == 422
    both = {"data": RESPOND, "response": {"mode": "flow"}}
    assert key_client.patch(f"/api/v1/flows/{flow_id}", both, format="json").status_code == 200
    leaving = key_client.patch(f"/api/v1/flows/{flow_id}", {"response": {"mode": "static"}}, format="json")
    assert leaving.status_code == 422 and leaving.json()["detail"][0]["loc"] == ["body", "response"]
    assert Flow.objects.get(pk=flow_id).response_settings == {"mode": "flow", "timeout": 10}


def test_response_travels_in_the_native_export_and_import(key_client):
    flow_id = create(key_client, data=RESPOND, response={"mode": "flow", "timeout": 5}).json()["id"]
    exported = key_client.get(f"/api/v1/flows/{flow_id}/export").json()
    assert exported["response"] == {"mode": "flow", "timeout": 5}
    response = key_client.post("/api/v1/flows/upload/", exported, format="json")
    assert response.status_code == 201, response.content
    assert response.json()[0]["response"] == {"mode": "flow", "timeout": 5}
    # A document without `response` (an older export) keeps the default.
    response = key_client.post("/api/v1/flows/upload/", {"name": "Old", "data": GREETING_FLOW}, format="json")
    assert response.json()[0]["response"] == {"mode": "accepted"}


def test_an_import_with_a_respond_node_and_another_mode_is_422_naming_the_field(key_client):
    document = {"flows": [{"name": "F", "data": RESPOND, "response": {"mode": "static"}}]}
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "flows", 0, "response"]
    assert not Flow.objects.exists()


def test_the_schema_documents_response(key_client):
    schema = key_client.get("/api/schema/?format=json").json()
    flow = schema["components"]["schemas"]["Flow"]["properties"]["response"]
    assert flow["properties"]["mode"]["enum"] == ["accepted", "static", "flow"]
    assert "response" in schema["components"]["schemas"]["FlowExport"]["properties"]
    webhook = next(v for k, v in schema["paths"].items() if k.startswith("/api/v1/webhook/{"))
    assert "502" in webhook["post"]["responses"] and "response" in webhook["post"]["description"]
