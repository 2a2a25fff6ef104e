"""A Webhook node's JSON Schema is enforced by the endpoint before a run is accepted."""

import pytest

from flows.models import FlowRun

SCHEMA = {
    "type": "object",
    "required": ["id", "customer"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "customer": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string", "format": "email"}}},
        "items": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


@pytest.fixture
def schema_flow(make_flow, user):
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook", "params": {"schema": SCHEMA}},
            {"id": "text", "type": "Template", "params": {"template": "Order {id} for {customer.email}"}},
            {"id": "out", "type": "Output", "params": {"name": "text"}},
        ],
        "edges": [{"source": "hook", "target": "text", "target_input": "data"}, {"source": "text", "target": "out"}],
    }
    return make_flow(user, data=data, endpoint_name="orders")


def test_valid_payload_is_accepted(key_client, schema_flow):
    response = key_client.post("/api/v1/webhook/orders", {"id": 1, "customer": {"email": "ada@example.com"}}, format="json")
    assert response.status_code == 202
    assert FlowRun.objects.count() == 1


def test_every_violation_is_listed_with_its_path_and_keyword(key_client, schema_flow):
    body = {"id": 0, "customer": {}, "items": ["a", 2], "extra": True}
    response = key_client.post("/api/v1/webhook/orders", body, format="json")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [
        (["body"], "additionalProperties"),
        (["body", "customer"], "required"),
        (["body", "id"], "minimum"),
        (["body", "items", 1], "type"),
    ]
    assert detail[1]["msg"] == "'email' is a required property"
    assert FlowRun.objects.count() == 0


def test_text_payload_against_an_object_schema_is_422(key_client, schema_flow):
    response = key_client.post("/api/v1/webhook/orders", "plain words", content_type="text/plain")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert all(d["loc"] == ["body"] for d in detail)
    assert sorted(d["type"] for d in detail) == ["additionalProperties", "required", "required"]
    assert FlowRun.objects.count() == 0


def test_format_is_checked(key_client, schema_flow):
    response = key_client.post("/api/v1/webhook/orders", {"id": 1, "customer": {"email": "not-an-email"}}, format="json")
    assert response.status_code == 422 and response.json()["detail"][0] == {
        "loc": ["body", "customer", "email"],
        "msg": "'not-an-email' is not a 'email'",
        "type": "format",
    }


def test_invalid_schema_is_refused_when_the_flow_is_saved(key_client):
    data = {"nodes": [{"id": "hook", "type": "Webhook", "params": {"schema": {"type": 12}}}], "edges": []}
    response = key_client.post("/api/v1/flows/", {"name": "x", "data": data}, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", "nodes", 0, "params", "schema"]
    assert response.json()["detail"][0]["type"] == "json_schema"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("http://127.0.0.1:9/schema.json", "points outside the schema"),
        ("other.json#/definitions/a", "points outside the schema"),
        ("#/definitions/nope", "does not point to a part of the schema"),
    ],
)
def test_a_schema_reference_that_leaves_the_schema_or_points_nowhere_is_refused_when_saved(key_client, ref, message):
    # Nothing is ever fetched: a remote $ref would make the web and the workers request any URL the flow names.
    schema = {"definitions": {"a": {"type": "string"}}, "properties": {"id": {"$ref": ref}}}
    data = {"nodes": [{"id": "hook", "type": "Webhook", "params": {"schema": schema}}], "edges": []}
    response = key_client.post("/api/v1/flows/", {"name": "x", "data": data}, format="json")
    assert response.status_code == 422, response.content
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "data", "nodes", 0, "params", "schema"] and message in problem["msg"]


def test_references_within_the_schema_are_followed(key_client, make_flow, user):
    schema = {"$defs": {"id": {"type": "integer"}}, "properties": {"id": {"$ref": "#/$defs/id"}}}
    make_flow(user, data={"nodes": [{"id": "hook", "type": "Webhook", "params": {"schema": schema}}], "edges": []}, endpoint_name="refs")
    assert key_client.post("/api/v1/webhook/refs", {"id": 1}, format="json").status_code == 202
    refused = key_client.post("/api/v1/webhook/refs", {"id": "one"}, format="json")
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "id"]


def test_a_stored_schema_with_a_remote_reference_fetches_nothing_and_is_a_422(key_client, make_flow, user, monkeypatch):
    # A flow saved before references were checked: its webhook refuses with a clear 422, never a 500, and fetches nothing.
    import urllib.request

    from flows.models import Flow, FlowVersion

    def no_fetch(*args, **kwargs):
        raise AssertionError("a schema reference was fetched")

    monkeypatch.setattr(urllib.request, "urlopen", no_fetch)
    flow = make_flow(user, endpoint_name="remote")
    schema = {"properties": {"id": {"$ref": "http://127.0.0.1:9/schema.json"}}}
    data = {"nodes": [{"id": "hook", "type": "Webhook", "params": {"schema": schema}}], "edges": []}
    Flow.objects.filter(pk=flow.pk).update(data=data)
    FlowVersion.objects.filter(pk=flow.current_version_id).update(data=data)
    response = key_client.post("/api/v1/webhook/remote", {"id": 1}, format="json")
    assert response.status_code == 422, response.content
    assert "cannot be resolved" in response.json()["detail"][0]["msg"]
    assert FlowRun.objects.count() == 0


def test_flows_without_schema_accept_anything(key_client, flow):
    assert key_client.post("/api/v1/webhook/greet", [1, 2], format="json").status_code == 202


def test_a_new_version_of_the_graph_brings_its_schema_at_once(key_client, schema_flow, user):
    from flows.services.flows import flow_update

    # The schemas are remembered per version: the first call fills that memory for version 1.
    assert key_client.post("/api/v1/webhook/orders", {"anything": 1}, format="json").status_code == 422
    loose = {**schema_flow.data}
    loose["nodes"] = [{"id": "hook", "type": "Webhook"}, *schema_flow.data["nodes"][1:]]
    flow_update(flow=schema_flow, data=loose)
    response = key_client.post("/api/v1/webhook/orders", {"anything": 1}, format="json")
    assert response.status_code == 202
    assert FlowRun.objects.get().version.number == 2
    flow_update(
        flow=schema_flow, data={**loose, "nodes": [{"id": "hook", "type": "Webhook", "params": {"schema": SCHEMA}}, *loose["nodes"][1:]]}
    )
    assert key_client.post("/api/v1/webhook/orders", {"anything": 1}, format="json").status_code == 422


@pytest.mark.parametrize("schema", [{"$ref": "#"}, {"not": {"$ref": "#"}}, {"properties": {"a": {"$ref": "#/properties/a"}}}])
def test_a_schema_that_refers_to_itself_without_end_is_a_422_and_stores_nothing(key_client, make_flow, user, schema):
    """A reference that leads back to itself without reading deeper into the payload never ends: Python's stack ran
    out, and every request to the flow was a 500."""
    data = {"nodes": [{"id": "hook", "type": "Webhook", "params": {"schema": schema}}], "edges": []}
    make_flow(user, data=data, endpoint_name="loops")
    response = key_client.post("/api/v1/webhook/loops", {"a": 1}, format="json")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"] and error["type"] == "$ref" and "refers to itself" in error["msg"]
    assert FlowRun.objects.count() == 0
