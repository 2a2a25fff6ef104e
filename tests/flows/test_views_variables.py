"""The variables API (flows.views): create, list, mask, rename, and its 422s."""

import json

import pytest

from flows.models import Variable
from flows.services.variables import variable_create, variable_value
from tests.helpers import MODEL_FLOW

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


def test_a_credential_made_generic_needs_its_new_value_and_is_never_shown(key_client, user):
    # The API never returns a credential: turning one generic would show its value, so the value must come along.
    var = variable_create(user=user, name="K", value="s3cret")
    response = key_client.patch(f"/api/v1/variables/{var.id}", {"kind": "generic"}, format="json")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "value"],
                "msg": "Variable 'K' is a credential, whose value is never shown; send the value it should have as a generic variable.",
                "type": "missing",
            }
        ]
    }
    assert "s3cret" not in json.dumps(key_client.get(f"/api/v1/variables/{var.id}").json())
    var.refresh_from_db()
    assert var.kind == "credential" and variable_value(variable=var) == "s3cret"
    response = key_client.patch(f"/api/v1/variables/{var.id}", {"kind": "generic", "value": "plain"}, format="json")
    assert response.status_code == 200 and response.json()["value"] == "plain"


def test_variables_need_authentication(client):
    assert client.get("/api/v1/variables/").status_code == 403


def test_missing_variable_is_a_validation_error_naming_it(key_client):
    response = key_client.post("/api/v1/flows/", {"name": "m", "data": MODEL_FLOW}, format="json")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "data", "nodes", 2, "params", "api_key"] and "'OPENAI_API_KEY'" in error["msg"]
    assert error["type"] == "variable_missing"
