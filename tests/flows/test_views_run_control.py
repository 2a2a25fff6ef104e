"""Run control by key in the API: a flow's `concurrency` and `throttle`, the key a webhook records, a waiting run's status."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services.execution import flow_run_claim, flow_run_execute
from flows.services.runs import flow_run_create
from tests.helpers import GREETING_FLOW, post


def create(client, **fields):
    return client.post("/api/v1/flows/", {"name": "F", "endpoint_name": "f", "data": GREETING_FLOW, **fields}, format="json")


def test_concurrency_and_throttle_are_set_read_and_cleared(key_client):
    response = create(key_client, concurrency={"limit": 1, "key": "payload.customer"}, throttle={"limit": 10, "period": 60})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["concurrency"] == {"limit": 1, "key": "payload.customer"} and body["max_concurrent_runs"] == 1
    assert body["throttle"] == {"limit": 10, "period": 60, "key": None}
    flow = Flow.objects.get(pk=body["id"])
    assert (flow.max_concurrent_runs, flow.concurrency_key, flow.throttle_limit, flow.throttle_period, flow.throttle_key) == (
        1,
        "payload.customer",
        10,
        60,
        "",
    )
    response = key_client.patch(f"/api/v1/flows/{flow.pk}", {"concurrency": None, "throttle": None}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["concurrency"], response.json()["throttle"], response.json()["max_concurrent_runs"]) == (None, None, None)


def test_max_concurrent_runs_is_the_keyless_concurrency(key_client):
    flow_id = create(key_client, max_concurrent_runs=3).json()["id"]
    assert key_client.get(f"/api/v1/flows/{flow_id}").json()["concurrency"] == {"limit": 3, "key": None}
    key_client.patch(f"/api/v1/flows/{flow_id}", {"concurrency": {"limit": 2, "key": "payload.a"}}, format="json")
    response = key_client.patch(f"/api/v1/flows/{flow_id}", {"max_concurrent_runs": None}, format="json")
    assert response.json()["concurrency"] is None
    assert Flow.objects.get(pk=flow_id).concurrency_key == ""  # the key goes with its limit


@pytest.mark.parametrize(
    ("fields", "loc", "type_"),
    [
        ({"concurrency": {"limit": 1, "key": "payload.["}}, ["body", "concurrency", "key"], "jmespath"),
        ({"throttle": {"limit": 1, "period": 5, "key": "a..b"}}, ["body", "throttle", "key"], "jmespath"),
        ({"concurrency": {"key": "payload.a"}}, ["body", "concurrency"], "missing"),
        ({"concurrency": {"limit": 0}}, ["body", "concurrency", "limit"], "greater_than_equal"),
        ({"concurrency": {"limit": 1, "scope": "x"}}, ["body", "concurrency"], "extra_forbidden"),
        ({"throttle": {"limit": 1}}, ["body", "throttle"], "missing"),
        ({"throttle": {"limit": 1, "period": "soon"}}, ["body", "throttle", "period"], "greater_than_equal"),
        ({"throttle": [1, 60]}, ["body", "throttle"], "dict_type"),
        ({"throttle": {"limit": 2**40, "period": 1}}, ["body", "throttle", "limit"], "less_than_equal"),
    ],
)
def test_bad_run_control_is_422_naming_the_field(key_client, fields, loc, type_):
    response = create(key_client, **fields)
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"] == loc and error["type"] == type_, error
    assert not Flow.objects.exists()


def test_a_bad_key_on_update_is_422_and_changes_nothing(key_client, flow):
    response = key_client.patch(f"/api/v1/flows/{flow.pk}", {"concurrency": {"limit": 1, "key": "payload.["}}, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "concurrency", "key"]
    assert Flow.objects.get(pk=flow.pk).max_concurrent_runs is None


def test_a_webhook_records_its_key_and_a_waiting_run_says_what_it_waits_for(key_client, flow, api_key, enqueued):
    key_client.patch(f"/api/v1/flows/{flow.pk}", {"concurrency": {"limit": 1, "key": 'headers."x-tenant"'}}, format="json")
    first = post(key_client, "greet", HTTP_X_TENANT="acme").json()["run_id"]
    second = post(key_client, "greet", HTTP_X_TENANT="acme").json()["run_id"]
    assert FlowRun.objects.get(pk=second).concurrency_key == "acme"
    assert flow_run_claim(run_id=first)
    assert flow_run_execute(run_id=second) is None
    run = key_client.get(f"/api/v1/runs/{second}").json()
    assert run["status"] == "queued" and run["waiting_for"] == "concurrency"
    assert run["waiting"] == {"reason": "concurrency", "key": "acme", "limit": 1, "running": 1, "behind_older_run": False}
    listed = {r["id"]: r for r in key_client.get("/api/v1/runs/").json()["results"]}
    assert listed[second]["waiting_for"] == "concurrency" and listed[first]["waiting"] is None


def test_a_throttled_run_says_when_it_may_start(key_client, flow, enqueued, monkeypatch):
    monkeypatch.setattr("flows.services.queue.flow_run_enqueue_later", lambda **kw: None)
    key_client.patch(f"/api/v1/flows/{flow.pk}", {"throttle": {"limit": 1, "period": 30, "key": "payload.name"}}, format="json")
    first = post(key_client, "greet").json()["run_id"]
    second = post(key_client, "greet").json()["run_id"]
    assert flow_run_execute(run_id=first).status == "succeeded"
    assert flow_run_execute(run_id=second) is None
    waiting = key_client.get(f"/api/v1/runs/{second}").json()["waiting"]
    started = FlowRun.objects.get(pk=first).started_at.timestamp()
    from datetime import datetime

    assert waiting["reason"] == "throttle" and (waiting["key"], waiting["limit"], waiting["period"]) == ("Ada", 1, 30)
    assert abs(datetime.fromisoformat(waiting["next_start_at"].replace("Z", "+00:00")).timestamp() - (started + 30)) < 0.01


def test_a_flow_with_its_key_changed_since_a_remembered_webhook_records_the_new_key(key_client, flow, enqueued):
    post(key_client, "greet")  # the process remembers the flow as it was
    Flow.objects.filter(pk=flow.pk).update(max_concurrent_runs=1, concurrency_key="payload.name")
    run_id = post(key_client, "greet").json()["run_id"]
    assert FlowRun.objects.get(pk=run_id).concurrency_key == "Ada"


def _limited_backlog(user, make_flow, runs: int) -> None:
    """`runs` queued runs of three flows, limited per key, per flow and by a throttle per key, with a run of each key
    running or started: every queued run waits for something queries answer."""
    limits = {
        "keyed": {"max_concurrent_runs": 1, "concurrency_key": "payload.name"},
        "keyless": {"max_concurrent_runs": 1},
        "throttled": {"throttle_limit": 1, "throttle_period": 60, "throttle_key": "payload.name"},
    }
    flows = []
    for name, fields in limits.items():
        Flow.objects.filter(pk=make_flow(user, endpoint_name=name).pk).update(**fields)
        flows.append(Flow.objects.get(endpoint_name=name))
    for i in range(runs):
        flow_run_create(flow=flows[i % 3], user=user, trigger="webhook", payload={"name": f"n{i % 4}"})
    oldest = FlowRun.objects.order_by("received_at", "id")
    started = {oldest.filter(flow=flow, payload__name=f"n{i}").first().pk for flow in flows for i in range(4)}
    FlowRun.objects.filter(pk__in=started).update(status=FlowRun.Status.RUNNING, started_at=timezone.now())


def _page_queries(client, limit: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"/api/v1/runs/?limit={limit}").json()
    assert len(page["results"]) == limit
    assert {run["waiting_for"] for run in page["results"]} == {"concurrency", "throttle"}
    return len(queries)


def test_a_page_of_waiting_runs_costs_the_same_queries_whatever_its_size(key_client, user, make_flow, enqueued):
    _limited_backlog(user, make_flow, 75)
    assert _page_queries(key_client, 50) == _page_queries(key_client, 5)
