"""Integrations through a real gunicorn and a real qcluster: the whole request reaches the flow, masked."""

import pytest
import requests

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import wait_for_runs
from tests.helpers import REQUEST_FLOW, provider_signed_headers

pytestmark = pytest.mark.e2e


@pytest.fixture
def request_flow(transactional_db):
    user = User.objects.create_user("e2e-integrations")
    flow = flow_create(user=user, name="Whole request", endpoint_name="whole", data=REQUEST_FLOW, methods=["GET", "POST"])
    return flow, api_key_create(user=user).key


def test_headers_query_and_method_reach_the_flow_masked(service, request_flow):
    flow, key = request_flow
    service.start_cluster()
    url = f"{service.url}/api/v1/webhook/whole"
    posted = requests.post(f"{url}?tag=a&tag=b", json={"n": 1}, headers={"x-api-key": key, "X-GitHub-Event": "push"}, timeout=10)
    got = requests.get(f"{url}?x-api-key={key}&hub=1", timeout=10)
    refused = requests.put(url, json={}, headers={"x-api-key": key}, timeout=10)
    assert (posted.status_code, got.status_code) == (202, 202), (posted.text, got.text)
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET, POST, OPTIONS"
    ids = [posted.json()["run_id"], got.json()["run_id"]]
    assert wait_for_runs(ids) == {"succeeded": 2}, service.log("cluster")
    post_run = requests.get(posted.json()["status_url"], headers={"x-api-key": key}, timeout=10).json()
    assert post_run["outputs"]["method"] == "POST" and post_run["outputs"]["query"] == {"tag": ["a", "b"]}
    assert post_run["outputs"]["headers"]["x-github-event"] == "push" and post_run["outputs"]["headers"]["x-api-key"] == "***"
    assert post_run["request"]["headers"]["x-api-key"] == "***" and key not in str(post_run)
    get_run = requests.get(got.json()["status_url"], headers={"x-api-key": key}, timeout=10).json()
    assert get_run["outputs"]["data"] == {"hub": "1"} and get_run["outputs"]["method"] == "GET"
    assert key not in str(get_run)


PRESETS = {
    "standard": ("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", {}),
    "github": ("gh-secret-e2e", {}),
    "stripe": ("whsec_e2e_stripe_secret_0123456789", {}),
    "slack": ("8f742231b10e8888abcd99yyyzzz85a5", {}),
    "shopify": ("shpss_e2e_shopify_secret", {}),
    "token": ("tok-e2e-0123456789", {"header": "X-Hook-Token"}),
}


@pytest.mark.parametrize("provider", list(PRESETS))
def test_each_preset_accepts_its_providers_signature_and_refuses_another(service, setup_flow, provider):
    flow, key = setup_flow
    secret, extra = PRESETS[provider]
    answer = requests.post(
        f"{service.url}/api/v1/flows/{flow.id}/signing-secret", json={"secret": secret}, headers={"x-api-key": key}, timeout=10
    )
    assert answer.status_code == 201 and secret not in answer.text
    patched = requests.patch(
        f"{service.url}/api/v1/flows/{flow.id}",
        json={"verification": {"provider": provider, **extra}},
        headers={"x-api-key": key},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    body = b'{"id": "evt_e2e", "name": "Ada"}'
    url = f"{service.url}/api/v1/webhook/greet"
    signed = {"Content-Type": "application/json", **provider_signed_headers(provider, secret, body, **extra)}
    accepted = requests.post(url, data=body, headers=signed, timeout=10)  # no API key: the signature stands in for it
    assert accepted.status_code == 202, accepted.text
    forged = {
        "Content-Type": "application/json",
        **provider_signed_headers(provider, "whsec_" + "A" * 32 if provider == "standard" else secret + "x", body, **extra),
    }
    assert requests.post(url, data=body, headers=forged, timeout=10).status_code == 403  # no key, no valid signature
    assert requests.post(url, data=body, headers={**forged, "x-api-key": key}, timeout=10).status_code == 401
    run = FlowRun.objects.get()
    assert run.request["headers"] and secret not in str(run.request)


def test_handshakes_are_answered_by_the_live_server_and_store_nothing(service, setup_flow):
    flow, key = setup_flow
    auth = {"x-api-key": key}
    secret = PRESETS["slack"][0]
    requests.post(f"{service.url}/api/v1/flows/{flow.id}/signing-secret", json={"secret": secret}, headers=auth, timeout=10)
    patched = requests.patch(
        f"{service.url}/api/v1/flows/{flow.id}",
        json={"verification": {"provider": "slack"}, "handshakes": ["slack", "meta"]},
        headers=auth,
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    url = f"{service.url}/api/v1/webhook/greet"
    body = b'{"type": "url_verification", "challenge": "c-123", "token": "t"}'
    signed = {"Content-Type": "application/json", **provider_signed_headers("slack", secret, body)}
    answer = requests.post(url, data=body, headers=signed, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"challenge": "c-123"}
    meta = requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": secret, "hub.challenge": "42"}, timeout=10)
    assert meta.status_code == 200 and meta.text == "42"
    assert not FlowRun.objects.exists()
