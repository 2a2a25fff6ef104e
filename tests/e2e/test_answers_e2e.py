"""A flow's `response` through a real gunicorn and a real qcluster (issue 21, item 8): the caller waits for the run
and gets what its Respond node produced; a static answer; the 202 when the run takes longer than the timeout."""

import time

import pytest
import requests

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.helpers import RESPOND_FLOW

pytestmark = pytest.mark.e2e


@pytest.fixture
def owner(transactional_db):
    user = User.objects.create_user("e2e-answers")
    return user, api_key_create(user=user).key


def test_flow_mode_answers_what_the_respond_node_produced(service, owner):
    user, key = owner
    flow_create(user=user, name="Orders", endpoint_name="orders", data=RESPOND_FLOW, response={"mode": "flow", "timeout": 15})
    service.start_cluster()
    url = f"{service.url}/api/v1/webhook/orders"
    answer = requests.post(url, json={"order": 42}, headers={"x-api-key": key, "Idempotency-Key": "o-42"}, timeout=30)
    assert answer.status_code == 201, (answer.text, service.log("cluster"))
    assert answer.json() == {"received": 42, "text": "order 42"} and answer.headers["X-Order"] == "42"
    assert answer.headers["Content-Type"] == "application/json"
    assert FlowRun.objects.get().status == "succeeded"
    again = requests.post(url, json={"order": 43}, headers={"x-api-key": key, "Idempotency-Key": "o-42"}, timeout=30)
    assert (again.status_code, again.json(), again.headers["Idempotent-Replayed"]) == (201, answer.json(), "true")
    assert FlowRun.objects.count() == 1


def test_static_answers_at_once_and_flow_mode_without_a_worker_is_the_202(service, owner):
    user, key = owner
    flow_create(
        user=user,
        name="Ack",
        endpoint_name="ack",
        data=RESPOND_FLOW,
        response={"mode": "flow", "timeout": 1},
    )
    flow_create(
        user=user,
        name="Static",
        endpoint_name="static",
        data={"nodes": [{"id": "hook", "type": "Webhook"}], "edges": []},
        response={"mode": "static", "status": 200, "headers": {"X-Handled-By": "langrun"}, "body": "ok"},
    )
    # No cluster yet: nothing executes, so the flow-mode caller gets the 202 once its timeout has passed.
    started = time.monotonic()
    late = requests.post(f"{service.url}/api/v1/webhook/ack", json={"order": 1}, headers={"x-api-key": key}, timeout=30)
    assert late.status_code == 202 and 1 <= time.monotonic() - started < 10, late.text
    assert late.json()["run_id"] and late.headers["Location"] == late.json()["status_url"]
    static = requests.post(f"{service.url}/api/v1/webhook/static", json={}, headers={"x-api-key": key}, timeout=30)
    assert (static.status_code, static.text, static.headers["X-Handled-By"]) == (200, "ok", "langrun")
    assert static.headers["Content-Type"] == "text/plain; charset=utf-8"
    service.start_cluster()  # the runs were recorded: a worker runs them now
    deadline = time.monotonic() + 60
    while set(FlowRun.objects.values_list("status", flat=True)) != {"succeeded"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert FlowRun.objects.count() == 2 and set(FlowRun.objects.values_list("status", flat=True)) == {"succeeded"}
