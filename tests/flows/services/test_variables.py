"""flows.services.variables: encryption at rest and key rotation, variables resolved at run time and masked in run records."""

import json

import pytest

from flows import engine
from flows.exceptions import VariableUndecryptable
from flows.models import FlowRun, Variable
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from flows.services.variables import variable_create, variable_value, variables_from_headers
from tests.helpers import MODEL_FLOW

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")

SECRET = "sk-test-secret"


def _model_flow(user, base_url):
    data = json.loads(json.dumps(MODEL_FLOW))
    data["nodes"][2]["params"]["base_url"] = base_url
    return flow_create(user=user, name="model", data=data)


def test_changed_key_is_a_clear_error(user, settings):
    settings.LANGRUN_VARIABLES_KEY = "B" * 43 + "="
    var = variable_create(user=user, name="K", value="v")
    settings.LANGRUN_VARIABLES_KEY = "A" * 43 + "="
    with pytest.raises(VariableUndecryptable, match="'K'"):
        variable_value(variable=var)


def test_an_update_of_a_variable_deleted_since_it_was_read_does_not_bring_it_back(user):
    # The save found no row and inserted one: a credential deleted (204) while a PATCH of it was in flight was
    # back, with the value the PATCH gave it.
    from django.http import Http404

    from flows.services.variables import variable_update

    variable = variable_create(user=user, name="K", value="v")
    read = Variable.objects.get(pk=variable.pk)
    variable.delete()
    with pytest.raises(Http404):
        variable_update(variable=read, value="new")
    assert not Variable.objects.exists()


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


# --- Variables sent with a request (Langflow's X-LANGFLOW-GLOBAL-VAR-* headers) ----------------------------------


def test_header_names_map_to_variable_names_as_langflows_do():
    meta = {
        "HTTP_X_LANGFLOW_GLOBAL_VAR_OPENAI_API_KEY": "sk-1",  # X-LANGFLOW-GLOBAL-VAR-openai-api-key (or …OPENAI_API_KEY)
        "HTTP_X_LANGFLOW_GLOBAL_VAR_ENVIRONMENT": "production",
        "HTTP_X_LANGFLOW_GLOBAL_VAR_": "no name",
        "HTTP_X_LANGFLOW_GLOBAL_VAR_9LIVES": "not a variable name",
        "HTTP_X_API_KEY": "sk-key",
        "CONTENT_TYPE": "application/json",
    }
    assert variables_from_headers(meta=meta) == {"OPENAI_API_KEY": "sk-1", "ENVIRONMENT": "production"}
    assert variables_from_headers(meta={"HTTP_X_API_KEY": "k"}) == {}


def test_a_request_variable_overrides_the_stored_one_for_its_run_only(user, server, settings):  # noqa: F811
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    stored = variable_create(user=user, name="OPENAI_API_KEY", value="sk-wrong")
    flow = _model_flow(user, server.url + "/v1")
    run = flow_run_create(
        flow=flow, user=user, trigger="api", payload={"text": f"my key is {SECRET}"}, request_variables={"OPENAI_API_KEY": SECRET}
    )
    assert SECRET not in (FlowRun.objects.values_list("request_variables", flat=True).get(pk=run.pk) or "")
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert run.outputs == {"answer": "echo: Summarise: my key is ********"}  # masked, like a credential
    records = json.dumps(list(run.node_results.values("output", "error", "traceback"))) + json.dumps(run.outputs) + run.error
    assert SECRET not in records
    # Never stored as a variable; the next run without the header uses the stored one again.
    assert variable_value(variable=Variable.objects.get()) == "sk-wrong" and Variable.objects.get().pk == stored.pk
    again = flow_run_create(flow=flow, user=user, trigger="api", payload={"text": "x"})
    flow_run_execute(run_id=again.id)
    again.refresh_from_db()
    assert again.status == "failed" and "Incorrect API key" in again.error


def test_a_request_variable_supplies_one_deleted_since_the_flow_was_saved(user, server, settings):  # noqa: F811
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    variable = variable_create(user=user, name="OPENAI_API_KEY", value=SECRET)
    flow = _model_flow(user, server.url + "/v1")
    variable.delete()
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"text": "hi"}, request_variables={"OPENAI_API_KEY": SECRET})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert not Variable.objects.exists()


def test_a_request_variable_standing_in_for_a_generic_one_is_shown(user):
    variable_create(user=user, name="GREETING", value="Hi {name}", kind="generic")
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "greet", "type": "Template", "params": {"template": {"variable": "GREETING"}}},
            {"id": "out", "type": "Output", "params": {"name": "greeting"}},
        ],
        "edges": [{"source": "hook", "target": "greet", "target_input": "data"}, {"source": "greet", "target": "out"}],
    }
    flow = flow_create(user=user, name="g", data=data)
    run = flow_run_create(flow=flow, user=user, trigger="api", payload={"name": "Ada"}, request_variables={"GREETING": "Yo {name}"})
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.outputs == {"greeting": "Yo Ada"}


def test_an_update_of_a_variable_deleted_since_it_was_read_is_a_404_and_brings_nothing_back(user):
    from django.http import Http404

    from flows.services.variables import variable_update

    variable = variable_create(user=user, name="TOKEN", value="old")
    read = Variable.objects.get(pk=variable.pk)  # as a PATCH reads it, before a DELETE commits
    Variable.objects.filter(pk=variable.pk).delete()
    with pytest.raises(Http404):
        variable_update(variable=read, value="new")
    assert not Variable.objects.exists()  # a deleted credential stays deleted
