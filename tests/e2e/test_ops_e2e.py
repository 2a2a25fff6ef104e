"""Operating a running instance: a Prometheus scrape after a burst of webhooks matches the ledger; worker logs are JSON."""

import json
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import Service, wait_for_runs
from tests.helpers import GREETING_FLOW

pytestmark = pytest.mark.e2e
TOKEN = "scrape-token-for-tests"


@pytest.fixture
def ops_service(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.env.update({"LANGRUN_METRICS": TOKEN, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"})
    svc.start_web()
    yield svc
    svc.stop()


def _command(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def scrape(service) -> dict:
    response = requests.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_scrape_after_a_burst_matches_the_runs_in_the_database(ops_service):
    service = ops_service
    user = User.objects.create_user("ops")
    flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    key = api_key_create(user=user).key
    assert requests.get(f"{service.url}/metrics", timeout=10).status_code == 401

    def call(i: int) -> requests.Response:
        headers = {"x-api-key": key if i % 10 else "sk-wrong"}  # every tenth call is refused
        payload = {"name": f"n{i}"} if i % 7 else {"other": i}  # every seventh run fails (missing key)
        return requests.post(f"{service.url}/api/v1/webhook/greet", json=payload, headers=headers, timeout=30)

    service.start_cluster()
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(call, range(60)))
    codes = [r.status_code for r in responses]
    assert codes.count(202) == 54 and codes.count(403) == 6, codes
    ids = [r.json()["run_id"] for r in responses if r.status_code == 202]
    counts = wait_for_runs(ids)
    assert sum(counts.values()) == 54 and set(counts) <= {"succeeded", "failed"}, (counts, service.log("cluster"))

    db = {s: FlowRun.objects.filter(flow=flow, status=s).count() for s in ("succeeded", "failed")}
    assert db["failed"] > 0
    f = str(flow.id)
    for _ in range(4):  # each scrape may be answered by another gunicorn worker: all agree
        m = scrape(service)
        assert m[("langrun_runs_accepted_total", (("flow", f),))] == FlowRun.objects.filter(flow=flow).count() == 54
        assert m[("langrun_runs_finished_total", (("flow", f), ("status", "succeeded")))] == db["succeeded"]
        assert m[("langrun_runs_finished_total", (("flow", f), ("status", "failed")))] == db["failed"]
        assert m[("langrun_webhooks_received_total", (("code", "202"),))] == 54
        assert m[("langrun_webhooks_received_total", (("code", "403"),))] == 6
        assert m[("langrun_run_duration_seconds_count", ())] == 54
        assert m[("langrun_node_duration_seconds_count", (("component", "Webhook"),))] == 54
        assert m[("langrun_queue_depth", ())] == 0

    status = json.loads(_command("langrun_status", "--json"))
    assert status["queue_depth"] == 0 and status["last_hour"]["succeeded"] == db["succeeded"]
    # Every cluster publishes its stats (to Redis, or to the shared cache on the embedded profile). Clusters
    # stopped by earlier tests of this session (same cluster name) may linger until their stats expire.
    assert any(c["workers"] >= 1 for c in status["clusters"]), status

    # The worker's log: JSON lines, and the line about each run carries its ids and not its payload.
    lines = [json.loads(line) for line in service.log("cluster").splitlines() if line.startswith("{")]
    finished = {e["run_id"]: e for e in lines if e.get("logger") == "flows.tasks" and e["message"].startswith("Run ")}
    assert set(finished) == set(ids)
    assert {e["flow_id"] for e in finished.values()} == {f}
    assert "n13" not in service.log("cluster") and "n13" not in service.log("web")
    web = [json.loads(line) for line in service.log("web").splitlines() if line.startswith('{"time"')]
    accepted = [e for e in web if e["message"].startswith("Run accepted")]
    assert {e["run_id"] for e in accepted} == set(ids)
