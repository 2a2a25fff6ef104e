"""The Langflow done-check with real processes: upload a Langflow export over HTTP, call its webhook, read the run."""

import time
from pathlib import Path

import pytest
import requests

from langrun.models import User
from langrun.services import api_key_create

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "flows" / "fixtures" / "webhook_parser_chat_output.json"


def test_langflow_export_imports_and_runs_from_its_webhook(service, transactional_db):
    key = api_key_create(user=User.objects.create_user("e2e-import")).key
    headers = {"x-api-key": key}
    service.start_cluster()
    with FIXTURE.open("rb") as f:
        upload = requests.post(f"{service.url}/api/v1/flows/upload/", files={"file": f}, headers=headers, timeout=10)
    assert upload.status_code == 201, upload.text
    hook = requests.post(
        f"{service.url}/api/v1/webhook/order-notice", json={"id": 42, "customer": "Ada", "status": "paid"}, headers=headers, timeout=10
    )
    assert hook.status_code == 202, hook.text
    deadline, body = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        body = requests.get(hook.json()["status_url"], headers=headers, timeout=10).json()
        if body["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert body["status"] == "succeeded", body
    assert body["outputs"] == {"ChatOutput-q1w2e": "Order 42 for Ada"}
    assert [n["id"] for n in body["nodes"]] == ["Webhook-ab12c", "ParserComponent-x9y8z", "ChatOutput-q1w2e"]
