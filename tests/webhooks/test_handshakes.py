"""Handshakes (issue 21, item 5): answered before anything is stored, only for a flow whose `handshakes` list them."""

import json
import time

from slack_sdk.signature import SignatureVerifier

from flows.models import FlowRun
from flows.services.flows import flow_update
from tests.helpers import post
from webhooks.signatures import webhook_signing_secret_set

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHALLENGE = b'{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}'


def slack_signed(body):
    ts = str(int(time.time()))
    return {
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": ts,
        "HTTP_X_SLACK_SIGNATURE": SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=body),
    }


def test_slack_url_verification_is_answered_and_nothing_stored(client, flow):
    webhook_signing_secret_set(flow=flow, secret=SLACK_SECRET)
    flow_update(flow=flow, verification={"provider": "slack"}, handshakes=["slack"])
    response = post(client, flow.endpoint_name, CHALLENGE, **slack_signed(CHALLENGE))
    assert response.status_code == 200, response.content
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert not FlowRun.objects.exists()
    # Unsigned, it is refused as any request is.
    assert post(client, flow.endpoint_name, CHALLENGE).status_code == 403 and not FlowRun.objects.exists()


def test_slack_url_verification_without_the_handshake_is_an_ordinary_request(client, flow):
    webhook_signing_secret_set(flow=flow, secret=SLACK_SECRET)
    flow_update(flow=flow, verification={"provider": "slack"})
    response = post(client, flow.endpoint_name, CHALLENGE, **slack_signed(CHALLENGE))
    assert response.status_code == 202 and FlowRun.objects.count() == 1


def test_meta_hub_challenge_with_the_flows_secret(client, flow):
    webhook_signing_secret_set(flow=flow, secret="meta-verify-token")
    flow_update(flow=flow, handshakes=["meta"])
    query = "hub.mode=subscribe&hub.verify_token=meta-verify-token&hub.challenge=1158201444"
    response = client.get(f"/api/v1/webhook/{flow.endpoint_name}?{query}")
    assert response.status_code == 200 and response.content == b"1158201444"
    assert response["Content-Type"].startswith("text/plain")
    wrong = client.get(f"/api/v1/webhook/{flow.endpoint_name}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1")
    assert wrong.status_code == 403
    assert not FlowRun.objects.exists()


def test_meta_hub_challenge_without_the_handshake_is_an_ordinary_get(key_client, flow):
    response = key_client.get(f"/api/v1/webhook/{flow.endpoint_name}?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1")
    assert response.status_code == 405  # the flow takes POST only


def test_graph_validation_token_is_echoed_as_text_after_authentication(key_client, client, flow):
    flow_update(flow=flow, handshakes=["graph"])
    response = key_client.post(f"/api/v1/webhook/{flow.endpoint_name}?validationToken=Validation%3A%20Testing", content_type="text/plain")
    assert response.status_code == 200 and response.content == b"Validation: Testing"
    assert response["Content-Type"].startswith("text/plain")
    assert client.post(f"/api/v1/webhook/{flow.endpoint_name}?validationToken=x").status_code == 403
    assert not FlowRun.objects.exists()


def test_graph_validation_without_the_handshake_is_an_ordinary_request(key_client, flow):
    response = key_client.post(f"/api/v1/webhook/{flow.endpoint_name}?validationToken=x", content_type="text/plain")
    assert response.status_code == 400  # an empty body, as ever


def test_handshakes_are_checked_when_saved(key_client, flow):
    url = f"/api/v1/flows/{flow.id}"
    response = key_client.patch(url, {"handshakes": ["telegram"]}, format="json")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:2] == ["body", "handshakes"]
    response = key_client.patch(url, {"handshakes": ["meta"]}, format="json")  # Meta's token is the flow's secret
    assert response.status_code == 422 and "secret" in response.json()["detail"][0]["msg"]
    response = key_client.patch(url, {"handshakes": ["graph", "slack"]}, format="json")
    assert response.status_code == 200 and response.json()["handshakes"] == ["slack", "graph"]
    exported = key_client.get(f"{url}/export").json()
    assert exported["handshakes"] == ["slack", "graph"]
    assert json.dumps(key_client.post("/api/v1/flows/upload/", exported, format="json").json()[0]["handshakes"]) == '["slack", "graph"]'


def test_a_signed_body_naming_url_verification_nested_too_deep_for_json_is_a_422_not_a_500(client, flow):
    webhook_signing_secret_set(flow=flow, secret=SLACK_SECRET)
    flow_update(flow=flow, verification={"provider": "slack"}, handshakes=["slack"])
    body = b'{"type": "url_verification", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = post(client, flow.endpoint_name, body, **slack_signed(body))
    assert response.status_code == 422, response.content
    assert not FlowRun.objects.exists()
