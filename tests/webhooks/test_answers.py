"""A flow's `response` (issue 21, item 8): the 202 by default, a static answer, or what the run's Respond node produced."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.models import FlowRun
from flows.services.flows import flow_update
from tests.helpers import GREETING_FLOW, RESPOND_FLOW, post

ORDER = b'{"order": 42}'


def test_the_default_is_todays_202(key_client, flow):
    response = post(key_client, "greet")
    assert response.status_code == 202 and response.json()["message"] == "Task started in the background"
    assert key_client.get(f"/api/v1/flows/{flow.id}").json()["response"] == {"mode": "accepted"}


def test_a_static_answer_once_the_run_is_recorded(key_client, flow, django_capture_on_commit_callbacks):
    flow_update(flow=flow, response={"mode": "static", "status": 200, "headers": {"X-Handled-By": "langrun"}, "body": "ok"})
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(key_client, "greet")
    assert response.status_code == 200 and response.content == b"ok"
    assert response["Content-Type"] == "text/plain; charset=utf-8" and response["X-Handled-By"] == "langrun"
    assert FlowRun.objects.get().status == "queued" and len(callbacks) == 1  # recorded and rung for, as ever


def test_a_static_json_body_and_a_repeat_gets_the_same_answer(key_client, flow):
    flow_update(flow=flow, response={"mode": "static", "status": 202, "body": {"ok": True}})
    first = post(key_client, "greet", HTTP_IDEMPOTENCY_KEY="d-1")
    again = post(key_client, "greet", HTTP_IDEMPOTENCY_KEY="d-1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"ok": True} and first["Content-Type"] == "application/json"
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert FlowRun.objects.count() == 1


def test_a_static_html_answer_runs_no_script_on_the_services_origin(key_client, flow):
    # An answer is the flow owner's content served from this server's address: a browser must treat it as a page
    # of no origin (no script, no cookies, no same-origin requests), whatever type or policy the flow gives it.
    page = "<script>fetch('/api/v1/api_key/', {method: 'POST'})</script>"
    headers = {"Content-Type": "text/html", "content-security-policy": "script-src *", "X-Content-Type-Options": "sniff"}
    flow_update(flow=flow, response={"mode": "static", "status": 200, "headers": headers, "body": page})
    response = post(key_client, "greet")
    assert response.status_code == 200 and response.content == page.encode() and response["Content-Type"] == "text/html"
    assert response["Content-Security-Policy"] == "sandbox" and response["X-Content-Type-Options"] == "nosniff"
    assert [name for name, _ in response.items() if name.lower() == "content-security-policy"] == ["Content-Security-Policy"]


def test_a_respond_nodes_answer_is_sandboxed_too(key_client, respond_flow, runs_during_the_wait):
    response = post(key_client, "greet", ORDER)
    assert response.status_code == 201 and response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_static_mode_ignores_wait(key_client, flow):
    flow_update(flow=flow, response={"mode": "static", "status": 204})
    started = time.monotonic()
    response = post(key_client, "greet?wait=5")
    assert response.status_code == 204 and response.content == b"" and time.monotonic() - started < 2


@pytest.fixture
def respond_flow(flow):
    return flow_update(flow=flow, data=RESPOND_FLOW, response={"mode": "flow", "timeout": 3})


def test_flow_mode_answers_what_respond_produced(key_client, respond_flow, runs_during_the_wait):
    response = post(key_client, "greet", ORDER)
    assert response.status_code == 201, response.content
    assert response.json() == {"received": 42, "text": "order 42"} and response["X-Order"] == "42"
    assert runs_during_the_wait == [3]  # the flow's timeout is the wait
    run = FlowRun.objects.get()
    assert run.status == "succeeded" and run.node_results.get(node_id="answer").output["response"]["status"] == 201


def test_flow_mode_without_a_respond_node_answers_the_outputs(key_client, flow, runs_during_the_wait):
    flow_update(flow=flow, response={"mode": "flow"})
    response = post(key_client, "greet?wait=0", b'{"name": "Ada"}')
    assert response.status_code == 200 and response.json() == FlowRun.objects.get().outputs
    assert runs_during_the_wait == [10]  # the default timeout; ?wait= is the accepted mode's


def test_flow_mode_answers_the_original_run_to_a_repeat(key_client, respond_flow, runs_during_the_wait):
    first = post(key_client, "greet", ORDER, HTTP_IDEMPOTENCY_KEY="o-42")
    again = post(key_client, "greet", b'{"order": 43}', HTTP_IDEMPOTENCY_KEY="o-42")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"


def test_a_run_that_failed_before_answering_is_a_502(key_client, flow, runs_during_the_wait):
    failing = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "t", "type": "Template", "params": {"template": "{missing}"}},
            {"id": "answer", "type": "Respond", "params": {"body": "{text}"}},
        ],
        "edges": [
            {"source": "hook", "target": "t", "target_input": "data"},
            {"source": "t", "source_output": "text", "target": "answer", "target_input": "text"},
        ],
    }
    flow_update(flow=flow, data=failing, response={"mode": "flow"})
    response = post(key_client, "greet")
    run = FlowRun.objects.get()
    assert response.status_code == 502 and run.status == "failed"
    assert response.json() == {
        "detail": "The flow's run ended before a Respond node answered.",
        "status": "failed",
        "run_id": str(run.id),
        "status_url": f"http://testserver/api/v1/runs/{run.id}",
    }
    assert "missing" not in response.content.decode()  # the run's error is not the caller's to read


def test_an_answer_given_before_a_later_node_failed_stands(key_client, flow, runs_during_the_wait):
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "answer", "type": "Respond", "params": {"status": 202, "body": "got it"}},
            {"id": "later", "type": "Template", "params": {"template": "{missing}"}},
        ],
        "edges": [
            {"source": "hook", "target": "answer", "target_input": "data"},
            {"source": "answer", "source_output": "response", "target": "later", "target_input": "data"},
        ],
    }
    flow_update(flow=flow, data=data, response={"mode": "flow"})
    response = post(key_client, "greet")
    assert (response.status_code, response.content) == (202, b"got it") and FlowRun.objects.get().status == "failed"


def test_two_respond_nodes_the_first_in_the_graphs_order_answers(key_client, flow, runs_during_the_wait):
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "second", "type": "Respond", "params": {"status": 200, "body": "second"}},
            {"id": "first", "type": "Respond", "params": {"status": 200, "body": "first"}},
        ],
        "edges": [
            {"source": "hook", "target": "first", "target_input": "data"},
            {"source": "first", "source_output": "response", "target": "second", "target_input": "data"},
        ],
    }
    flow_update(flow=flow, data=data, response={"mode": "flow"})
    assert post(key_client, "greet").content == b"first"


BRANCHES = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "big", "type": "Condition", "params": {"path": "amount", "operator": "gt", "value": 100}},
        {"id": "accept", "type": "Respond", "params": {"status": 200, "body": "accepted {amount}"}},
        {"id": "out", "type": "Output", "params": {"name": "small"}},
    ],
    "edges": [
        {"source": "hook", "target": "big", "target_input": "data"},
        {"source": "big", "source_output": "true", "target": "accept", "target_input": "data"},
        {"source": "big", "source_output": "false", "target": "out", "target_input": "value"},
    ],
}


def test_the_branch_taken_answers_and_a_skipped_respond_leaves_the_outputs(key_client, flow, runs_during_the_wait):
    flow_update(flow=flow, data=BRANCHES, response={"mode": "flow"})
    assert post(key_client, "greet", b'{"amount": 500}').content == b"accepted 500"
    skipped = post(key_client, "greet", b'{"amount": 5}')
    assert skipped.status_code == 200 and skipped.json() == {"small": {"amount": 5}}


def test_flow_mode_not_done_in_time_is_the_202(key_client, respond_flow):
    flow_update(flow=respond_flow, response={"mode": "flow", "timeout": 0.3})
    started = time.monotonic()
    response = post(key_client, "greet", ORDER)  # no worker runs here: the run stays queued
    assert 0.3 <= time.monotonic() - started < 3
    assert response.status_code == 202 and response.json()["status"] == "in progress"


def test_flow_mode_waits_under_the_same_caps(key_client, respond_flow, user, settings):
    from langrun.waits import wait_slot

    settings.LANGRUN_WAITS_PER_USER = 1
    with wait_slot(owner=str(user.pk)) as held:
        assert held
        started = time.monotonic()
        response = post(key_client, "greet", ORDER)
        assert time.monotonic() - started < 1
    assert response.status_code == 202 and FlowRun.objects.get().status == "queued"


def test_the_timeout_is_capped_by_the_setting(key_client, respond_flow, settings):
    settings.LANGRUN_WEBHOOK_MAX_WAIT = 0.2
    started = time.monotonic()
    assert post(key_client, "greet", ORDER).status_code == 202
    assert time.monotonic() - started < 2


def test_filtered_requests_are_answered_and_counted_as_ever(key_client, flow, settings):
    settings.LANGRUN_METRICS = "open"
    flow_update(flow=flow, response={"mode": "static", "body": "ok"}, accept_if="payload.go")
    response = post(key_client, "greet")
    assert response.status_code == 200 and response.json()["status"] == "filtered"
    assert post(key_client, "greet?wait=1").json()["status"] == "filtered"
    assert post(key_client, "greet", b'{"go": true}').content == b"ok"
    assert _webhook_counts(key_client) == {"200": 3}


def _webhook_counts(client) -> dict[str, float]:
    counts = {}
    for family in text_string_to_metric_families(client.get("/metrics").content.decode()):
        for sample in family.samples:
            if sample.name == "langrun_webhooks_received_total" and sample.value:
                counts[sample.labels["code"]] = sample.value
    return counts


def test_answers_are_counted_once_under_their_code(key_client, flow, settings, runs_during_the_wait):
    settings.LANGRUN_METRICS = "open"
    flow_update(flow=flow, response={"mode": "static", "status": 202, "body": "ok"})
    assert post(key_client, "greet").status_code == 202
    flow_update(flow=flow, data=RESPOND_FLOW, response={"mode": "flow"})
    assert post(key_client, "greet", ORDER).status_code == 201
    assert _webhook_counts(key_client) == {"202": 1, "201": 1}


def test_a_changed_response_answers_the_next_request(key_client, flow, runs_during_the_wait):
    assert post(key_client, "greet").status_code == 202  # the process now remembers the flow as it was
    flow_update(flow=flow, response={"mode": "static", "status": 200, "body": "changed"})
    assert post(key_client, "greet").content == b"changed"
    flow_update(flow=flow, data=RESPOND_FLOW, response={"mode": "flow"})
    assert post(key_client, "greet", ORDER).status_code == 201
    flow_update(flow=flow, data=GREETING_FLOW, response=None)
    assert post(key_client, "greet").status_code == 202


def test_a_header_a_placeholder_breaks_fails_the_node_and_is_a_502(key_client, flow, runs_during_the_wait):
    data = {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "answer", "type": "Respond", "params": {"headers": {"X-Order": "{order}"}, "body": "ok"}},
        ],
        "edges": [{"source": "hook", "target": "answer", "target_input": "data"}],
    }
    flow_update(flow=flow, data=data, response={"mode": "flow"})
    response = post(key_client, "greet", b'{"order": "1\\r\\nSet-Cookie: a=1"}')
    assert response.status_code == 502 and "Set-Cookie" not in response
    assert "one line" in FlowRun.objects.get().node_results.get(node_id="answer").error
