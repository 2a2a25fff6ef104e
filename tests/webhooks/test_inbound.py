"""The request, whole: a Webhook node's headers, query and method; what the run records; the methods a flow accepts."""

import pytest
from django.test import RequestFactory

from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_update
from flows.services.runs import flow_run_replay
from tests.helpers import REQUEST_FLOW, github_headers, post
from webhooks.inbound import MASK, webhook_request_record
from webhooks.signatures import webhook_signing_secret_rotate


@pytest.fixture
def request_flow(make_flow, user):
    return make_flow(user, data=REQUEST_FLOW, endpoint_name="whole")


# --- webhook_request_record -------------------------------------------------------


def test_headers_are_lower_cased_and_secrets_masked(request_flow):
    request = RequestFactory().post(
        "/api/v1/webhook/whole?a=1&a=2&b=x&x-api-key=sk-secret",
        b"{}",
        content_type="application/json",
        HTTP_X_API_KEY="sk-secret",
        HTTP_AUTHORIZATION="Bearer t",
        HTTP_COOKIE="sid=1",
        HTTP_X_GITHUB_EVENT="push",
        HTTP_X_HUB_SIGNATURE_256="sha256=abc",
    )
    record = webhook_request_record(request=request, flow=request_flow)
    assert record["method"] == "POST"
    headers = record["headers"]
    assert headers["x-github-event"] == "push" and headers["content-type"] == "application/json"
    assert headers["x-api-key"] == headers["authorization"] == headers["cookie"] == MASK
    # No verification in use: the flow may read a signature header it checks itself.
    assert headers["x-hub-signature-256"] == "sha256=abc"
    assert record["query"] == {"a": ["1", "2"], "b": "x"}


def test_the_signature_headers_of_the_verification_in_use_are_masked(request_flow):
    webhook_signing_secret_rotate(flow=request_flow)
    request = RequestFactory().post(
        "/x", b"{}", content_type="application/json", HTTP_X_HUB_SIGNATURE_256="sha256=abc", HTTP_WEBHOOK_SIGNATURE="v1,abc"
    )
    headers = webhook_request_record(request=request, flow=request_flow)["headers"]
    assert headers["x-hub-signature-256"] == headers["webhook-signature"] == MASK


# --- through the webhook ---------------------------------------------------------


def test_the_flow_sees_headers_query_and_method_and_the_run_records_them(key_client, request_flow, user):
    response = post(key_client, "whole?event=push&tag=a&tag=b", HTTP_X_GITHUB_EVENT="push", HTTP_COOKIE="sid=1")
    assert response.status_code == 202
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.request["method"] == "POST"
    assert run.request["query"] == {"event": "push", "tag": ["a", "b"]}
    assert run.request["headers"]["x-github-event"] == "push"
    assert run.request["headers"]["x-api-key"] == run.request["headers"]["cookie"] == MASK
    done = flow_run_execute(run_id=run.id)
    assert done.status == "succeeded", done.error
    assert done.outputs["method"] == "POST" and done.outputs["query"] == {"event": "push", "tag": ["a", "b"]}
    assert done.outputs["headers"]["x-github-event"] == "push" and done.outputs["headers"]["x-api-key"] == MASK
    assert done.outputs["data"] == {"name": "Ada"}
    # The run's status body shows the request, masked.
    status = key_client.get(f"/api/v1/runs/{run.id}").json()
    assert status["request"]["headers"]["x-api-key"] == MASK and status["request"]["query"]["event"] == "push"
    assert "sk-" not in str(status)


def test_the_key_in_the_query_is_dropped(client, request_flow, api_key):
    response = post(client, f"whole?x-api-key={api_key}&n=1")
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.request["query"] == {"n": "1"}
    assert api_key not in str(run.request)


def test_a_replay_gives_the_flow_the_same_request(key_client, request_flow, user):
    response = post(key_client, "whole?event=push", HTTP_X_GITHUB_EVENT="push")
    original = flow_run_execute(run_id=response.json()["run_id"])
    replay = flow_run_replay(run=original, user=user)
    assert replay.request == original.request
    done = flow_run_execute(run_id=replay.id)
    assert done.outputs == original.outputs


def test_a_run_not_started_by_a_request_gives_only_data(request_flow, user):
    from flows.services.runs import flow_run_create

    run = flow_run_create(flow=request_flow, user=user, trigger="api", payload={"x": 1})
    done = flow_run_execute(run_id=run.id)
    assert done.status == "succeeded" and done.outputs == {"data": {"x": 1}}
    skipped = {r.node_id for r in done.node_results.all() if r.status == "skipped"}
    assert skipped == {"h", "q", "m"}


def test_a_signed_request_keeps_working_and_its_signature_is_masked(client, request_flow):
    secret = webhook_signing_secret_rotate(flow=request_flow)
    body = b'{"name": "Ada"}'
    response = post(client, "whole", body, **github_headers(secret, body))
    assert response.status_code == 202, response.content
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.request["headers"]["x-hub-signature-256"] == MASK


# --- methods ---------------------------------------------------------------------


def test_default_is_post_only_and_another_method_is_405_with_allow(key_client, request_flow):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = key_client.generic(method, "/api/v1/webhook/whole")
        assert response.status_code == 405, method
        assert response["Allow"] == "POST, OPTIONS"
        assert "detail" in response.json()
    assert not FlowRun.objects.exists()


def test_a_get_is_accepted_when_allowed_and_its_payload_is_the_query(key_client, request_flow):
    flow_update(flow=request_flow, methods=["GET", "POST"])
    response = key_client.get("/api/v1/webhook/whole?hub=1&x=a&x=b")
    assert response.status_code == 202, response.content
    assert response["Allow"] == "GET, POST, OPTIONS"  # the flow's, once the caller is known
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.payload == {"hub": "1", "x": ["a", "b"]} and run.request["method"] == "GET"
    done = flow_run_execute(run_id=run.id)
    assert done.outputs["method"] == "GET" and done.outputs["data"] == {"hub": "1", "x": ["a", "b"]}
    response = key_client.put("/api/v1/webhook/whole", b"{}", content_type="application/json")
    assert response.status_code == 405 and response["Allow"] == "GET, POST, OPTIONS"


def test_a_flow_may_refuse_post(key_client, request_flow):
    flow_update(flow=request_flow, methods=["PUT"])
    assert post(key_client, "whole").status_code == 405
    response = key_client.put("/api/v1/webhook/whole", b'{"a": 1}', content_type="application/json")
    assert response.status_code == 202
    assert FlowRun.objects.get().request["method"] == "PUT"


def test_method_not_allowed_needs_credentials_first(client, request_flow):
    # Until the caller is known, a 405 would tell whether the flow exists.
    assert client.get("/api/v1/webhook/whole").status_code == 403


def test_a_remembered_target_sees_changed_methods(key_client, request_flow):
    assert post(key_client, "whole").status_code == 202  # the process now remembers key and flow
    flow_update(flow=request_flow, methods=["GET"])
    assert post(key_client, "whole").status_code == 405


def test_a_remembered_target_sees_an_added_method(key_client, request_flow):
    # The refusal is decided again on the flow read now, not on what the process remembered.
    assert post(key_client, "whole").status_code == 202  # the process now remembers key and flow
    flow_update(flow=request_flow, methods=["GET", "POST"])
    response = key_client.get("/api/v1/webhook/whole?name=Ada")
    assert response.status_code == 202, response.content
    assert FlowRun.objects.get(pk=response.json()["run_id"]).request["method"] == "GET"


def test_options_lists_every_method_a_flow_may_take(key_client, request_flow):
    response = key_client.options("/api/v1/webhook/whole")
    assert response.status_code == 200 and response["Allow"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"


def test_methods_in_a_form_and_a_string_instead_of_a_list(key_client, request_flow):
    url = f"/api/v1/flows/{request_flow.id}"
    response = key_client.patch(url, "methods=GET&methods=POST", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and response.json()["methods"] == ["GET", "POST"]
    response = key_client.patch(url, {"methods": "GET"}, format="json")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "methods"]


def test_langflows_variable_headers_are_masked(key_client, request_flow):
    response = post(key_client, "whole", HTTP_X_LANGFLOW_GLOBAL_VAR_OPENAI_API_KEY="sk-openai-secret")
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.request["headers"]["x-langflow-global-var-openai-api-key"] == MASK
    assert "sk-openai-secret" not in str(run.request)
