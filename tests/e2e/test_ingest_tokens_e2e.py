"""Ingest tokens on real processes: gunicorn as `langrun web` starts it (its access log on) and a qcluster. A token's
own URL runs its flow, and the token is written neither to the access log nor to Django's log of a refusal."""

import time

import pytest
import requests

from langrun.processes import web_command
from tests.e2e.helpers import Service, wait_for_runs
from webhooks.tokens import ingest_token_create, ingest_token_revoke

pytestmark = pytest.mark.e2e


@pytest.fixture
def logged_service(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.start_web(web_command(host="127.0.0.1", port=svc.port, workers=1)[1:])
    yield svc
    svc.stop()


def test_a_token_url_runs_its_flow_and_never_reaches_the_logs(logged_service, setup_flow):
    service = logged_service
    flow, key = setup_flow
    new = ingest_token_create(flow=flow, name="e2e")
    token = new.token
    service.start_cluster()

    accepted = requests.post(f"{service.url}/api/v1/webhook/t/{token}", json={"name": "Ada"}, timeout=10)
    assert accepted.status_code == 202, accepted.text
    by_header = requests.post(f"{service.url}/api/v1/webhook/greet", json={"name": "Bo"}, headers={"x-api-key": token}, timeout=10)
    assert by_header.status_code == 202, by_header.text
    assert requests.get(f"{service.url}/api/v1/flows/", headers={"x-api-key": token}, timeout=10).status_code == 403
    assert requests.get(f"{service.url}/api/v1/flows/", headers={"x-api-key": key}, timeout=10).status_code == 200
    ids = [accepted.json()["run_id"], by_header.json()["run_id"]]
    assert wait_for_runs(ids) == {"succeeded": 2}, service.log("cluster")
    status = requests.get(accepted.json()["status_url"], headers={"x-api-key": key}, timeout=10).json()
    assert status["outputs"] == {"greeting": "Hello Ada!"}

    ingest_token_revoke(ingest_token=new.ingest_token)
    refused = requests.post(f"{service.url}/api/v1/webhook/t/{token}/?wait=1", json={"name": "Cy"}, timeout=10)
    assert refused.status_code == 403 and token not in refused.text

    deadline = time.monotonic() + 10  # the access log line is written after the answer
    while "/api/v1/webhook/t/***/ " not in service.log("web") and time.monotonic() < deadline:
        time.sleep(0.1)
    log = service.log("web")
    assert '"POST /api/v1/webhook/t/*** HTTP/1.1" 202' in log, log
    assert '"POST /api/v1/webhook/t/***/ HTTP/1.1" 403' in log, log
    assert "Forbidden: /api/v1/webhook/t/***/" in log, log  # Django's own line for the refusal
    assert token not in log and token[3:20] not in log
