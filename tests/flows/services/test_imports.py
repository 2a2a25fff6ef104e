"""flows.services.imports and flows.importers: Langflow import (API upload and management command) and native export."""

import copy
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from flows import engine
from flows.importers import ImportProblem, langflow_to_native
from flows.models import Flow, FlowRun
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_create
from flows.services.imports import flow_import
from flows.services.runs import flow_run_create
from flows.services.variables import variable_create
from tests.helpers import GREETING_FLOW

FIXTURES = Path(__file__).parents[1] / "fixtures"
PAYLOAD = {"id": 42, "customer": "Ada", "status": "paid"}


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def test_webhook_parser_chat_output_converts_keeping_node_ids():
    native = langflow_to_native(fixture("webhook_parser_chat_output.json"))
    assert native["name"] == "Order notice" and native["endpoint_name"] == "order-notice"
    assert native["data"] == {
        "nodes": [
            {"id": "Webhook-ab12c", "type": "Webhook"},
            {
                "id": "ParserComponent-x9y8z",
                "type": "Template",
                "params": {"template": "Order {id} for {customer}"},
                "aliases": {"pattern": "template"},
            },
            {"id": "ChatOutput-q1w2e", "type": "Output"},
        ],
        "edges": [
            {"source": "Webhook-ab12c", "source_output": "data", "target": "ParserComponent-x9y8z", "target_input": "data"},
            {"source": "ParserComponent-x9y8z", "source_output": "text", "target": "ChatOutput-q1w2e", "target_input": "value"},
        ],
    }


def test_edges_from_the_encoded_handle_strings_alone():
    doc = fixture("webhook_parser_chat_output.json")
    for edge in doc["data"]["edges"]:
        del edge["data"]
    assert len(langflow_to_native(doc)["data"]["edges"]) == 2


def test_upload_then_webhook_gives_what_langflow_gives(key_client, user):
    """The done-check: Webhook -> Parser(`Order {id} for {customer}`) -> Chat Output, run from its webhook."""
    response = key_client.post("/api/v1/flows/upload/", fixture("webhook_parser_chat_output.json"), format="json")
    assert response.status_code == 201, response.json()
    [created] = response.json()
    assert created["endpoint_name"] == "order-notice" and created["webhook"] is True
    hook = key_client.post("/api/v1/webhook/order-notice", PAYLOAD, format="json")
    assert hook.status_code == 202
    run = FlowRun.objects.get(pk=hook.json()["run_id"])
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.outputs == {"ChatOutput-q1w2e": "Order 42 for Ada"}


def test_upload_as_multipart_file_and_endpoint_name_clash_gets_a_suffix(key_client):
    raw = (FIXTURES / "webhook_parser_chat_output.json").read_bytes()
    from django.core.files.uploadedfile import SimpleUploadedFile

    first = key_client.post("/api/v1/flows/upload/", {"file": SimpleUploadedFile("flow.json", raw, "application/json")}, format="multipart")
    second = key_client.post(
        "/api/v1/flows/upload/", {"file": SimpleUploadedFile("flow.json", raw, "application/json")}, format="multipart"
    )
    assert first.status_code == second.status_code == 201
    assert [first.json()[0]["endpoint_name"], second.json()[0]["endpoint_name"]] == ["order-notice", "order-notice-1"]


def test_many_flows_wanting_one_endpoint_name_cost_queries_in_proportion_not_in_its_square(user, make_flow, django_assert_max_num_queries):
    """Each suffix was looked up by a query of its own, from `-1` on: an upload of a few thousand flows wanting one
    name held a web process and a transaction for many minutes."""
    make_flow(user, endpoint_name="dup-1", name="Taken before")
    document = {
        "flows": [{"name": "Mine", "endpoint_name": "dup", "data": GREETING_FLOW}] * 60
        + [{"name": "Mine", "endpoint_name": "dup-62", "data": GREETING_FLOW}]
    }
    with django_assert_max_num_queries(61 * 15):  # a flow's own queries, not one per name tried
        flows = flow_import(user=user, document=document)
    names = [f.endpoint_name for f in flows]
    assert names[:3] == ["dup", "dup-2", "dup-3"] and names[59] == "dup-60" and names[60] == "dup-62"
    assert len(set(names)) == 61


def test_an_upload_of_more_flows_than_an_import_takes_is_a_located_422_and_saves_nothing(key_client, monkeypatch):
    """Each flow costs its validation and inserts in the request's one transaction: ten megabytes of small flows
    held a web process for many minutes."""
    from flows.services import imports

    monkeypatch.setattr(imports, "MAX_FLOWS", 2)
    flow = {"name": "Mine", "data": GREETING_FLOW}
    assert key_client.post("/api/v1/flows/upload/", {"flows": [flow] * 2}, format="json").status_code == 201
    response = key_client.post("/api/v1/flows/upload/", {"flows": [flow] * 3}, format="json")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "flows"] and error["type"] == "too_long" and "at most 2 flows" in error["msg"]
    assert Flow.objects.count() == 2


def test_a_langflow_endpoint_name_ending_in_a_line_break_is_not_kept(key_client):
    """`$` matches before a final line break: the name was stored with it, a name no webhook URL could reach."""
    document = fixture("webhook_parser_chat_output.json")
    document["endpoint_name"] = "order-notice\n"
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code == 201 and response.json()[0]["endpoint_name"] is None


@pytest.mark.parametrize(("field", "value"), [("name", {"a": 1}), ("name", ["x"]), ("description", 123), ("description", {"x": 1})])
def test_a_native_flows_name_or_description_that_is_not_text_is_a_located_422(key_client, field, value):
    """They were stored as Python's rendering of the value (`{'a': 1}`)."""
    document = {"flows": [{"name": "Fine", "data": GREETING_FLOW}, {"name": "Mine", "data": GREETING_FLOW, field: value}]}
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", "flows", 1, field], "string_type")]
    assert not Flow.objects.exists()


def test_an_endpoint_name_taken_during_the_upload_is_422_and_saves_nothing(key_client, user):
    from django.db.models.signals import pre_save

    export = {"name": "Mine", "endpoint_name": "mine", "data": GREETING_FLOW}

    def take(sender, instance, **kwargs):  # another request takes the name after the check, before the insert
        if instance.name != "Racer":
            Flow.objects.create(user=user, name="Racer", endpoint_name="mine", data=GREETING_FLOW)

    pre_save.connect(take, sender=Flow, dispatch_uid="taken_during_upload")
    try:
        response = key_client.post("/api/v1/flows/upload/", export, format="json")
    finally:
        pre_save.disconnect(sender=Flow, dispatch_uid="taken_during_upload")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "endpoint_name"], "msg": "You already have a flow with endpoint name mine.", "type": "unique"}]
    }
    assert list(Flow.objects.values_list("name", flat=True)) == []


def test_upload_of_a_file_that_is_not_json_is_422(key_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = key_client.post(
        "/api/v1/flows/upload/", {"file": SimpleUploadedFile("f.json", b"{nope", "application/json")}, format="multipart"
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "file"]


def test_prompt_with_variables(user):
    [flow] = flow_import(user=user, document=fixture("prompt_with_variables.json"))
    prompt = next(n for n in flow.data["nodes"] if n["id"] == "Prompt-Lk3m9")
    assert prompt == {
        "id": "Prompt-Lk3m9",
        "type": "Template",
        "params": {"template": "Summarise for {audience}: {text}", "audience": "finance"},
    }
    run = flow_run_create(flow=flow, user=user, trigger="api", payload=PAYLOAD)
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.outputs == {"ChatOutput-Zx81p": "Summarise for finance: Order 42 for Ada"}


@pytest.mark.parametrize(
    ("status", "chosen", "skipped"), [("paid", "ChatOutput-Tru3e", "ChatOutput-Fa1se"), ("open", "ChatOutput-Fa1se", "ChatOutput-Tru3e")]
)
def test_if_else_branches(user, status, chosen, skipped):
    [flow] = flow_import(user=user, document=fixture("if_else_branches.json"))
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={**PAYLOAD, "status": status})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.outputs == {chosen: status}
    assert run.node_results.get(node_id=skipped).status == "skipped"


@pytest.mark.parametrize("field", ["pattern", "template"])
def test_a_langflow_tweak_keyed_by_node_id_applies(user, field):
    """Langflow's field name (`pattern`) and the native param name (`template`) both work."""
    [flow] = flow_import(user=user, document=fixture("webhook_parser_chat_output.json"))
    run = flow_run_create(flow=flow, user=user, trigger="api", payload=PAYLOAD, tweaks={"ParserComponent-x9y8z": {field: "#{id}"}})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.outputs == {"ChatOutput-q1w2e": "#42"}


def test_every_unsupported_node_is_listed_and_nothing_is_saved(key_client):
    response = key_client.post("/api/v1/flows/upload/", fixture("unsupported_component.json"), format="json")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [
        (["body", "data", "nodes", 2], "unsupported_component"),
        (["body", "data", "nodes", 3], "unsupported_component"),
        (["body", "data", "nodes", 4], "unsupported_component"),
    ]
    assert "'Agent' (node Agent-k8J2m)" in detail[0]["msg"]
    assert "'CustomComponent' (node CustomComponent-9hT1x)" in detail[1]["msg"]
    assert "Stringify" in detail[2]["msg"]
    assert Flow.objects.count() == 0


def test_model_and_api_request_mapping_and_missing_variable(user):
    doc = fixture("chat_model_and_api.json")
    with pytest.raises(engine.GraphValidationError) as exc:
        flow_import(user=user, document=doc)
    assert [(i.loc, i.type) for i in exc.value.issues] == [(("data", "nodes", 2, "params", "api_key"), "variable_missing")]
    variable_create(user=user, name="OPENAI_API_KEY", value="sk-test-secret")
    [flow] = flow_import(user=user, document=doc)
    nodes = {n["id"]: n for n in flow.data["nodes"]}
    assert nodes["ChatInput-c1h2t"]["params"] == {"text": "Hello there"}
    assert nodes["OpenAIModel-o9p8q"]["params"] == {
        "model": "gpt-4o-mini",
        "api_key": {"variable": "OPENAI_API_KEY"},
        "system_prompt": "Be brief.",
        "temperature": 0.1,
    }
    assert nodes["APIRequest-r5t6y"]["params"] == {
        "url": "https://api.example.com/orders",
        "method": "POST",
        "headers": {"X-Source": "langflow"},
        "body": {"kind": "order"},
        "timeout": 5,
    }


def test_unmapped_handles_and_malformed_documents_are_reported():
    doc = fixture("webhook_parser_chat_output.json")
    doc["data"]["edges"][0]["data"]["targetHandle"]["fieldName"] = "sep"
    with pytest.raises(ImportProblem) as exc:
        langflow_to_native(doc)
    assert [(i.loc, i.type) for i in exc.value.issues] == [(("data", "edges", 0), "unsupported_handle")]
    with pytest.raises(ImportProblem):
        langflow_to_native({"name": "x", "data": {"edges": []}})


def _set_at(document, path, value):
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("webhook_parser_chat_output.json", ("data", "nodes", 0, "type"), []),
        ("webhook_parser_chat_output.json", ("data", "nodes", 0, "data"), 1),
        ("webhook_parser_chat_output.json", ("data", "nodes", 0, "data", "node"), 1),
        ("webhook_parser_chat_output.json", ("data", "nodes", 1, "data", "node", "template"), 1),
        ("webhook_parser_chat_output.json", ("data", "edges", 0, "source"), []),
        ("webhook_parser_chat_output.json", ("data", "edges", 0, "data"), 1),
        ("webhook_parser_chat_output.json", ("data", "edges", 0, "data", "sourceHandle", "name"), []),
        ("webhook_parser_chat_output.json", ("data", "edges", 0, "data", "targetHandle", "fieldName"), []),
        ("prompt_with_variables.json", ("data", "nodes", 2, "data", "node", "custom_fields"), 1),
        ("prompt_with_variables.json", ("data", "nodes", 2, "data", "node", "template", "template", "value"), 1),
        ("chat_model_and_api.json", ("data", "nodes", 4, "data", "node", "template", "method", "value"), 1),
        ("if_else_branches.json", ("data", "nodes", 2, "data", "node", "template", "operator", "value"), [None]),
    ],
)
def test_a_malformed_langflow_export_is_converted_as_far_as_it_can_be_or_a_located_422_never_a_500(key_client, name, path, value):
    document = fixture(name)
    _set_at(document, path, value)
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code in (201, 422), response.content
    if response.status_code == 422:
        assert response.json()["detail"][0]["loc"][0] == "body"
        assert not Flow.objects.exists()


def test_a_langflow_export_whose_text_holds_json_nested_too_deep_is_converted_or_a_422_never_a_500(key_client):
    deep = "[" * 100_000 + "]" * 100_000
    document = fixture("chat_model_and_api.json")
    del document["data"]["edges"][0]["data"]  # the handles as Langflow's encoded strings alone
    document["data"]["edges"][0]["sourceHandle"] = deep
    document["data"]["nodes"][4]["data"]["node"]["template"]["headers"]["value"] = deep
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code in (201, 422), response.content


@pytest.mark.parametrize("nodes", [1, True, "x", {"a": 1}])
def test_a_native_upload_whose_nodes_are_no_list_is_a_located_422(key_client, nodes):
    response = key_client.post("/api/v1/flows/upload/", {"name": "x", "data": {"nodes": nodes, "edges": []}}, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"][:3] == ["body", "data", "nodes"]
    assert not Flow.objects.exists()


def test_router_with_case_messages_or_unknown_operator_is_unsupported():
    doc = fixture("if_else_branches.json")
    router = doc["data"]["nodes"][2]["data"]["node"]["template"]
    router["true_case_message"]["value"] = "yes!"
    with pytest.raises(ImportProblem, match="case messages"):
        langflow_to_native(doc)
    router["true_case_message"]["value"] = ""
    router["operator"]["value"] = "is one of"
    with pytest.raises(ImportProblem, match="operator"):
        langflow_to_native(doc)


def test_export_is_native_and_imports_back(key_client, user, make_user, make_flow):
    [flow] = flow_import(user=user, document=fixture("if_else_branches.json"))
    response = key_client.get(f"/api/v1/flows/{flow.id}/export")
    assert response.status_code == 200
    exported = response.json()
    assert exported == {
        "name": "Paid router",
        "description": "",
        "endpoint_name": "paid-router",
        "timeout": None,
        "max_attempts": 1,
        "concurrency": None,
        "throttle": None,
        "methods": ["POST"],
        "dedupe_key": None,
        "accept_if": None,
        "handshakes": [],
        "verification": None,
        "response": {"mode": "accepted"},
        "data": flow.data,
    }
    again = key_client.post("/api/v1/flows/upload/", exported, format="json")
    assert again.status_code == 201 and again.json()[0]["endpoint_name"] == "paid-router-1"
    assert again.json()[0]["data"] == flow.data
    other = make_flow(make_user("bob"))
    assert key_client.get(f"/api/v1/flows/{other.id}/export").status_code == 404
    assert key_client.get("/api/v1/flows/not-a-uuid/export").status_code == 404


def test_an_exported_flows_run_control_imports_back(key_client, user):
    """Retries, a concurrency limit and a throttle travel with the flow: an import elsewhere runs it the same way."""
    flow = flow_create(
        user=user,
        name="Limited",
        data=GREETING_FLOW,
        max_attempts=3,
        concurrency={"limit": 2, "key": "payload.customer"},
        throttle={"limit": 10, "period": 60, "key": None},
    )
    exported = key_client.get(f"/api/v1/flows/{flow.id}/export").json()
    assert exported["max_attempts"] == 3
    assert exported["concurrency"] == {"limit": 2, "key": "payload.customer"}
    assert exported["throttle"] == {"limit": 10, "period": 60, "key": None}
    again = key_client.post("/api/v1/flows/upload/", exported, format="json")
    assert again.status_code == 201, again.content
    imported = Flow.objects.get(pk=again.json()[0]["id"])
    assert (imported.max_attempts, imported.concurrency, imported.throttle) == (3, flow.concurrency, flow.throttle)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"max_attempts": 0}, ["body", "flows", 1, "max_attempts"]),
        ({"concurrency": {"limit": 0}}, ["body", "flows", 1, "concurrency", "limit"]),
        ({"throttle": {"limit": 1}}, ["body", "flows", 1, "throttle"]),
        ({"concurrency": {"limit": 1, "key": "payload.["}}, ["body", "flows", 1, "concurrency", "key"]),
        ({"concurrency": "two"}, ["body", "flows", 1, "concurrency"]),
        ({"throttle": [10, 60]}, ["body", "flows", 1, "throttle"]),
    ],
)
def test_bad_run_control_in_an_upload_is_located_and_saves_nothing(key_client, fields, loc):
    ok = {"name": "ok", "data": GREETING_FLOW}
    response = key_client.post("/api/v1/flows/upload/", {"flows": [ok, {**ok, **fields}]}, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == loc
    assert Flow.objects.count() == 0


def test_invalid_native_upload_is_located(key_client):
    response = key_client.post(
        "/api/v1/flows/upload/", {"name": "x", "data": {"nodes": [{"id": "a", "type": "Nope"}], "edges": []}}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "data", "nodes", 0, "type"]
    several = key_client.post("/api/v1/flows/upload/", {"flows": [{"name": "ok", "data": {"nodes": [], "edges": []}}, "x"]}, format="json")
    assert several.status_code == 422 and several.json()["detail"][0]["loc"] == ["body", "flows", 1]
    assert Flow.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timeout": 2**40}, "timeout"),
        ({"timeout": 2**63}, "timeout"),
        ({"timeout": "x"}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"endpoint_name": "a/b"}, "endpoint_name"),
        ({"endpoint_name": 5}, "endpoint_name"),
        ({"endpoint_name": "x" * 101}, "endpoint_name"),
        ({"methods": "x"}, "methods"),
        ({"methods": ["FETCH"]}, "methods"),
    ],
)
def test_an_upload_checks_its_settings_as_flow_create_does(key_client, fields, field):
    response = key_client.post("/api/v1/flows/upload/", {"name": "x", "data": GREETING_FLOW, **fields}, format="json")
    assert response.status_code == 422, response.content
    created = key_client.post("/api/v1/flows/", {"name": "x", "data": GREETING_FLOW, **fields}, format="json")
    assert response.json() == created.json()
    assert [e["loc"] for e in response.json()["detail"]] == [["body", field]]
    several = key_client.post(
        "/api/v1/flows/upload/", {"flows": [{"name": "ok", "data": GREETING_FLOW}, {"data": GREETING_FLOW, **fields}]}, format="json"
    )
    assert several.status_code == 422 and [e["loc"] for e in several.json()["detail"]] == [["body", "flows", 1, field]]
    assert not Flow.objects.exists()


def test_an_upload_keeps_its_good_settings(key_client):
    document = {"name": "x", "data": GREETING_FLOW, "timeout": 30, "endpoint_name": "hook_1", "methods": ["get", "POST"]}
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code == 201, response.content
    [created] = response.json()
    assert (created["timeout"], created["endpoint_name"], created["methods"]) == (30, "hook_1", ["GET", "POST"])
    bare = key_client.post("/api/v1/flows/upload/", {"data": GREETING_FLOW, "timeout": None, "endpoint_name": None}, format="json")
    assert bare.status_code == 201 and (bare.json()[0]["timeout"], bare.json()[0]["endpoint_name"]) == (None, None)


def test_upload_needs_authentication(client):
    assert client.post("/api/v1/flows/upload/", fixture("webhook_parser_chat_output.json"), format="json").status_code == 403


def test_import_flow_command(user, capsys):
    call_command("import_flow", str(FIXTURES / "webhook_parser_chat_output.json"), "--user", "alice")
    assert "Imported flow 'Order notice'" in capsys.readouterr().out
    assert Flow.objects.filter(user=user, endpoint_name="order-notice").exists()
    with pytest.raises(CommandError, match="Agent-k8J2m"):
        call_command("import_flow", str(FIXTURES / "unsupported_component.json"), "--user", "alice")
    with pytest.raises(CommandError, match="No user"):
        call_command("import_flow", str(FIXTURES / "if_else_branches.json"), "--user", "nobody")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_flow", "/nonexistent.json", "--user", "alice")


def test_importer_does_not_modify_its_input():
    doc = fixture("prompt_with_variables.json")
    before = copy.deepcopy(doc)
    langflow_to_native(doc)
    assert doc == before


def test_upload_file_over_the_import_limit_is_413_and_imports_nothing(key_client, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from flows.models import Flow

    raw = fixture_bytes("webhook_parser_chat_output.json")
    settings.LANGRUN_MAX_IMPORT_BYTES = len(raw) - 1
    response = key_client.post(
        "/api/v1/flows/upload/", {"file": SimpleUploadedFile("flow.json", raw, "application/json")}, format="multipart"
    )
    assert response.status_code == 413 and "LANGRUN_MAX_IMPORT_BYTES" in response.json()["detail"]
    assert not Flow.objects.exists()
    settings.LANGRUN_MAX_IMPORT_BYTES = len(raw)
    accepted = key_client.post(
        "/api/v1/flows/upload/", {"file": SimpleUploadedFile("flow.json", raw, "application/json")}, format="multipart"
    )
    assert accepted.status_code == 201


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"name": "x\\ud800", "data": {"nodes": [], "edges": []}}', "surrogate"),
        (b'{"name": "x\\u0000", "data": {"nodes": [], "edges": []}}', "\\u0000"),
        (
            b'{"name": "x", "data": {"nodes": [{"id": "h", "type": "Webhook", "params": {"schema": {"maximum": 1e999}}}], "edges": []}}',
            "finite",
        ),
        (b'{"name": "x", "n": NaN, "data": {"nodes": [], "edges": []}}', "finite"),
    ],
)
def test_an_uploaded_file_no_database_can_store_is_422_and_saves_nothing(key_client, content, message):
    # The file was parsed by json.loads alone: deep nesting, a lone surrogate or 1e999 were a 500, a NUL was stored.
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = key_client.post(
        "/api/v1/flows/upload/", {"file": SimpleUploadedFile("f.json", content, "application/json")}, format="multipart"
    )
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"] and message in error["msg"]
    assert not Flow.objects.exists()
