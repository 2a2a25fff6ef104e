"""Run control on real processes: a paused flow holds its runs and releases them in order; bulk replay with progress."""

import time

import pytest
import requests

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import Service, wait_for_runs
from tests.helpers import GREETING_FLOW

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.env["LANGRUN_WORKERS"] = "1"  # one worker: the order runs start in is the order they are released in
    svc.start_web()
    svc.start_cluster()
    yield svc
    svc.stop()


def test_a_paused_flow_holds_100_runs_then_releases_them_in_order(service):
    user = User.objects.create_user("operator")
    flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    headers = {"x-api-key": api_key_create(user=user).key}
    api = f"{service.url}/api/v1"
    assert requests.post(f"{api}/flows/{flow.pk}/pause", headers=headers, timeout=10).json()["paused"] is True

    ids = []
    for i in range(100):
        response = requests.post(f"{api}/webhook/greet", json={"name": f"n{i}"}, headers=headers, timeout=30)
        assert response.status_code == 202, response.text
        ids.append(response.json()["run_id"])
    time.sleep(2)  # long enough for a worker that ignored the pause to start some
    assert set(FlowRun.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"queued"}
    assert FlowRun.objects.filter(pk__in=ids, started_at__isnull=False).count() == 0
    assert requests.get(f"{api}/runs/{ids[-1]}", headers=headers, timeout=10).json()["waiting_for"] == "flow_paused"

    resumed = requests.post(f"{api}/flows/{flow.pk}/resume", headers=headers, timeout=30).json()
    assert resumed["paused"] is False and resumed["released"] == 100
    assert wait_for_runs(ids, timeout=120) == {"succeeded": 100}, service.log("cluster")
    started = dict(FlowRun.objects.filter(pk__in=ids).values_list("id", "started_at"))
    in_received_order = [started[FlowRun._meta.pk.to_python(i)] for i in ids]
    assert in_received_order == sorted(in_received_order)
