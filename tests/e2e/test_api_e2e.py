"""The API against real processes: webhook ?wait= with a real worker, and a synchronous run under gunicorn."""

import pytest
import requests

from flows.models import FlowRun

pytestmark = pytest.mark.e2e


def test_webhook_wait_answers_200_with_the_finished_run(service, setup_flow):
    flow, key = setup_flow
    service.start_cluster()
    response = requests.post(f"{service.url}/api/v1/webhook/greet?wait=20", json={"name": "Ada"}, headers={"x-api-key": key}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["outputs"] == {"greeting": "Hello Ada!"}
    assert [n["id"] for n in body["nodes"]] == ["hook", "greet", "out"]
    assert response.headers["Location"].endswith(f"/api/v1/runs/{body['id']}")


def test_synchronous_run_under_gunicorn(service, setup_flow):
    flow, key = setup_flow
    response = requests.post(
        f"{service.url}/api/v1/run/greet", json={"input_value": '{"name": "Ada"}'}, headers={"x-api-key": key}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "Hello Ada!"
    assert FlowRun.objects.get().trigger == "api"
