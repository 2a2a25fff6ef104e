"""Variables: the API, encryption at rest, references checked at save and run time, masking in run records."""

import json

import pytest

from flows import engine
from flows.exceptions import VariableUndecryptable
from flows.models import FlowRun, Variable
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from flows.services.variables import variable_create, variable_value

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")

SECRET = "sk-test-secret"


def test_create_list_and_mask_credentials(key_client, user):
    created = key_client.post("/api/v1/variables/", {"name": "OPENAI_API_KEY", "value": SECRET}, format="json")
    assert created.status_code == 201
    assert created.json()["value"] == "********" and created.json()["kind"] == "credential"
    generic = key_client.post("/api/v1/variables/", {"name": "REGION", "value": "eu", "kind": "generic"}, format="json")
    assert generic.json()["value"] == "eu"
    listed = key_client.get("/api/v1/variables/").json()["results"]
    assert [(v["name"], v["value"]) for v in listed] == [("OPENAI_API_KEY", "********"), ("REGION", "eu")]
    assert SECRET not in json.dumps(key_client.get(f"/api/v1/variables/{created.json()['id']}").json())
    stored = Variable.objects.get(name="OPENAI_API_KEY")
    assert SECRET not in stored.value and variable_value(variable=stored) == SECRET


def test_update_rename_and_kind_change(key_client, user):
    var = variable_create(user=user, name="TOKEN", value="abc", kind="generic")
    response = key_client.patch(f"/api/v1/variables/{var.id}", {"kind": "credential"}, format="json")
    assert response.status_code == 200 and response.json()["value"] == "********"
    var.refresh_from_db()
    assert var.value != "abc" and variable_value(variable=var) == "abc"
    key_client.patch(f"/api/v1/variables/{var.id}", {"value": "def", "name": "TOKEN2"}, format="json")
    var.refresh_from_db()
    assert var.name == "TOKEN2" and variable_value(variable=var) == "def"


def test_bad_names_duplicates_and_other_users(key_client, user, make_user):
    assert key_client.post("/api/v1/variables/", {"name": "1bad name", "value": "x"}, format="json").status_code == 422
    key_client.post("/api/v1/variables/", {"name": "A", "value": "x"}, format="json")
    dup = key_client.post("/api/v1/variables/", {"name": "A", "value": "y"}, format="json")
    assert dup.status_code == 422 and dup.json()["detail"][0]["loc"] == ["body", "name"]
    theirs = variable_create(user=make_user("bob"), name="A", value="bob's")
    assert key_client.get(f"/api/v1/variables/{theirs.id}").status_code == 404
    assert key_client.delete(f"/api/v1/variables/{theirs.id}").status_code == 404
    assert Variable.objects.filter(pk=theirs.pk).exists()


def test_a_name_taken_is_422_on_the_name(key_client, user):
    key_client.post("/api/v1/variables/", {"name": "A", "value": "x"}, format="json")
    dup = key_client.post("/api/v1/variables/", {"name": "A", "value": "y"}, format="json")
    assert dup.status_code == 422
    assert dup.json() == {"detail": [{"loc": ["body", "name"], "msg": "You already have a variable named A.", "type": "unique"}]}


def test_a_kind_change_the_current_key_cannot_decrypt_is_422_on_the_value(key_client, user, settings):
    settings.LANGRUN_VARIABLES_KEY = "B" * 43 + "="
    var = variable_create(user=user, name="K", value="v")
    settings.LANGRUN_VARIABLES_KEY = "A" * 43 + "="
    response = key_client.patch(f"/api/v1/variables/{var.id}", {"kind": "generic"}, format="json")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "value"],
                "msg": "Variable 'K' cannot be decrypted with the current key; set its value again.",
                "type": "variable_key",
            }
        ]
    }


def test_variables_need_authentication(client):
    assert client.get("/api/v1/variables/").status_code == 403


def test_changed_key_is_a_clear_error(user, settings):
    settings.LANGRUN_VARIABLES_KEY = "B" * 43 + "="
    var = variable_create(user=user, name="K", value="v")
    settings.LANGRUN_VARIABLES_KEY = "A" * 43 + "="
    with pytest.raises(VariableUndecryptable, match="'K'"):
        variable_value(variable=var)


def test_a_list_of_keys_encrypts_with_the_first_and_decrypts_with_any(user, settings):
    from cryptography.fernet import Fernet, InvalidToken

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.LANGRUN_VARIABLES_KEY = old
    before = variable_create(user=user, name="OLD", value="made with the old key")
    settings.LANGRUN_VARIABLES_KEY = f"{new}, {old}"
    assert variable_value(variable=before) == "made with the old key"
    after = variable_create(user=user, name="NEW", value="made with the new key")
    assert Fernet(new).decrypt(after.value.encode()) == b"made with the new key"
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(after.value.encode())
    settings.LANGRUN_VARIABLES_KEY = new
    with pytest.raises(VariableUndecryptable, match="'OLD'"):
        variable_value(variable=before)


def test_a_key_set_for_the_first_time_still_opens_what_the_default_key_made(user, settings):
    from cryptography.fernet import Fernet

    settings.LANGRUN_VARIABLES_KEY = ""
    var = variable_create(user=user, name="K", value="v")
    settings.LANGRUN_VARIABLES_KEY = Fernet.generate_key().decode()
    assert variable_value(variable=var) == "v"


MODEL_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "prompt", "type": "Template", "params": {"template": "Summarise: {text}"}},
        {"id": "model", "type": "LanguageModel", "params": {"model": "tiny", "api_key": {"variable": "OPENAI_API_KEY"}}},
        {"id": "out", "type": "Output", "params": {"name": "answer"}},
    ],
    "edges": [
        {"source": "hook", "target": "prompt", "target_input": "data"},
        {"source": "prompt", "target": "model", "target_input": "prompt"},
        {"source": "model", "target": "out"},
    ],
}


def test_missing_variable_is_a_validation_error_naming_it(key_client):
    response = key_client.post("/api/v1/flows/", {"name": "m", "data": MODEL_FLOW}, format="json")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "data", "nodes", 2, "params", "api_key"] and "'OPENAI_API_KEY'" in error["msg"]
    assert error["type"] == "variable_missing"


def _model_flow(user, base_url):
    data = json.loads(json.dumps(MODEL_FLOW))
    data["nodes"][2]["params"]["base_url"] = base_url
    return flow_create(user=user, name="model", data=data)


def test_language_model_flow_runs_with_the_credential_and_never_records_it(user, server, settings):  # noqa: F811
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    variable_create(user=user, name="OPENAI_API_KEY", value=SECRET)
    flow = _model_flow(user, server.url + "/v1")
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"text": f"my key is {SECRET}"})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.outputs == {"answer": "echo: Summarise: my key is ********"}
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    records = json.dumps(list(run.node_results.values("output", "error", "traceback"))) + json.dumps(run.outputs) + run.error
    assert SECRET not in records


def test_run_fails_naming_a_variable_deleted_after_save(user, server, settings):  # noqa: F811
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    var = variable_create(user=user, name="OPENAI_API_KEY", value=SECRET)
    flow = _model_flow(user, server.url + "/v1")
    var.delete()
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"text": "x"})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "'OPENAI_API_KEY'" in run.error
    assert server.requests == []


def test_local_model_server_is_refused_without_the_allow_list(user, server):  # noqa: F811
    variable_create(user=user, name="OPENAI_API_KEY", value=SECRET)
    flow = _model_flow(user, server.url + "/v1")
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"text": "x"})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "failed" and "not a public address" in run.error
    assert server.requests == []


def test_tweaks_may_not_refer_to_missing_variables(user, make_flow):
    flow = make_flow(user)
    with pytest.raises(engine.GraphValidationError) as exc:
        flow_run_create(flow=flow, user=user, trigger="api", payload={}, tweaks={"greet": {"template": {"variable": "NOPE"}}})
    assert exc.value.issues[0].type == "variable_missing"
    assert FlowRun.objects.count() == 0
