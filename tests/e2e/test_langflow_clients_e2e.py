"""Langflow's own client snippets, pointed at a live langrun: only the server's address changes."""

import json
import subprocess
from pathlib import Path

import pytest
import requests

from flows.services.flows import flow_create
from flows.services.variables import variable_create
from langrun.models import User
from langrun.services import api_key_create

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "flows" / "fixtures" / "webhook_parser_chat_output.json"
INPUT = json.dumps({"id": 42, "customer": "Ada", "status": "paid"})


@pytest.fixture
def langflow_flow(service, transactional_db):
    """A Langflow export (Webhook → Parser → Chat Output) uploaded over HTTP; its id and an API key."""
    key = api_key_create(user=User.objects.create_user("e2e-clients")).key
    with FIXTURE.open("rb") as f:
        upload = requests.post(f"{service.url}/api/v1/flows/upload/", files={"file": f}, headers={"x-api-key": key}, timeout=10)
    assert upload.status_code == 201, upload.text
    return upload.json()[0]["id"], key


def test_the_python_requests_snippet(service, langflow_flow):
    flow_id, api_key = langflow_flow
    # As Langflow's API access pane writes it.
    url = f"{service.url}/api/v1/run/{flow_id}"
    payload = {"output_type": "chat", "input_type": "chat", "input_value": INPUT, "session_id": "user_1"}
    headers = {"Content-Type": "application/json", "x-api-key": api_key}
    response = requests.request("POST", url, json=payload, headers=headers, timeout=30)
    response.raise_for_status()
    data = response.json()
    assert data["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Order 42 for Ada"
    assert data["session_id"] == "user_1"
    assert data["outputs"][0]["outputs"][0]["outputs"]["message"] == {"message": "Order 42 for Ada", "type": "text"}


def test_the_curl_snippet(service, langflow_flow):
    flow_id, api_key = langflow_flow
    body = json.dumps(
        {
            "input_value": INPUT,
            "session_id": "chat-123",
            "input_type": "chat",
            "output_type": "chat",
            "output_component": "",
            "tweaks": None,
        }
    )
    result = subprocess.run(
        [
            "curl", "-sS", "--fail-with-body", "-X", "POST", f"{service.url}/api/v1/run/{flow_id}?stream=false",
            "-H", "Content-Type: application/json", "-H", f"x-api-key: {api_key}", "-d", body,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    message = json.loads(result.stdout)["outputs"][0]["outputs"][0]["results"]["message"]
    assert message["text"] == "Order 42 for Ada" and message["session_id"] == "chat-123" and message["sender"] == "Machine"


def test_a_failing_run_is_an_http_error_for_the_snippet(service, langflow_flow):
    flow_id, api_key = langflow_flow
    headers = {"Content-Type": "application/json", "x-api-key": api_key}
    response = requests.post(f"{service.url}/api/v1/run/{flow_id}", json={"input_value": '{"nothing": 1}'}, headers=headers, timeout=30)
    with pytest.raises(requests.HTTPError):
        response.raise_for_status()
    assert response.status_code == 500
    assert json.loads(response.json()["detail"])["message"]


def test_global_variable_headers_through_the_web_server(service, transactional_db):
    user = User.objects.create_user("e2e-vars")
    key = api_key_create(user=user).key
    variable_create(user=user, name="MY_GREETING", value="Hi {name}", kind="generic")
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "greet", "type": "Template", "params": {"template": {"variable": "MY_GREETING"}}},
            {"id": "out", "type": "Output"},
        ],
        "edges": [{"source": "hook", "target": "greet", "target_input": "data"}, {"source": "greet", "target": "out"}],
    }
    flow_create(user=user, name="vars", endpoint_name="vars", data=data)
    headers = {"x-api-key": key, "X-LANGFLOW-GLOBAL-VAR-my-greeting": "Yo {name}"}  # Langflow upper-cases the name
    response = requests.post(f"{service.url}/api/v1/run/vars", json={"input_value": '{"name": "Ada"}'}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Yo Ada"
    plain = requests.post(f"{service.url}/api/v1/run/vars", json={"input_value": '{"name": "Ada"}'}, headers={"x-api-key": key}, timeout=30)
    assert plain.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Hi Ada"
