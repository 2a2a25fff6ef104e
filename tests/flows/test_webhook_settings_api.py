"""A flow's webhook settings through the API and the native flow JSON: `methods`."""

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
