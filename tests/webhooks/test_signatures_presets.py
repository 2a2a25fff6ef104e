"""Verification presets (issue 21, item 4): each provider's signature scheme, checked against its SDK or published example."""

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from slack_sdk.signature import SignatureVerifier

from flows.models import FlowRun
from flows.services.flows import flow_update
from tests.helpers import post
from webhooks import signatures
from webhooks.signatures import webhook_signing_secret_set

BODY = b'{"id": "evt_1", "name": "Ada"}'
STRIPE_SECRET = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SHOPIFY_SECRET = "shpss_5f1c0f1f2d0e4f7a9b8c"


def preset(flow, secret, **verification):
    webhook_signing_secret_set(flow=flow, secret=secret)
    flow_update(flow=flow, verification=verification)


def stripe_headers(body=BODY, secret=STRIPE_SECRET, timestamp=None):
    return {"HTTP_STRIPE_SIGNATURE": stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)}


def slack_headers(body=BODY, secret=SLACK_SECRET, timestamp=None):
    ts = str(int(timestamp if timestamp is not None else time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": ts, "HTTP_X_SLACK_SIGNATURE": signature}


def shopify_headers(body=BODY, secret=SHOPIFY_SECRET):
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"HTTP_X_SHOPIFY_HMAC_SHA256": digest}


def assert_refused(response):
    assert response.status_code in (401, 403), response.content
    assert not FlowRun.objects.exists()


# --- Stripe --------------------------------------------------------------------------


def test_stripe_signed_by_the_sdk_is_accepted_and_masked(client, flow):
    preset(flow, STRIPE_SECRET, provider="stripe")
    response = post(client, flow.endpoint_name, BODY, **stripe_headers())
    assert response.status_code == 202, response.content
    assert FlowRun.objects.get().request["headers"]["stripe-signature"] == "***"


def test_stripe_wrong_secret_old_timestamp_or_other_schemes_are_refused(client, flow):
    preset(flow, STRIPE_SECRET, provider="stripe")
    assert_refused(post(client, flow.endpoint_name, BODY, **stripe_headers(secret="whsec_other")))
    assert_refused(post(client, flow.endpoint_name, BODY, **stripe_headers(timestamp=int(time.time()) - 301)))
    assert_refused(post(client, flow.endpoint_name, b'{"id": "evt_2"}', **stripe_headers()))  # the body changed
    github = {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + hmac.new(STRIPE_SECRET.encode(), BODY, hashlib.sha256).hexdigest()}
    assert_refused(post(client, flow.endpoint_name, BODY, **github))  # only the preset's scheme counts


def test_stripe_header_with_several_v1_entries_matches_any(client, flow):
    preset(flow, STRIPE_SECRET, provider="stripe")
    header = stripe_headers()["HTTP_STRIPE_SIGNATURE"]
    t, v1 = header.split(",")
    response = post(client, flow.endpoint_name, BODY, HTTP_STRIPE_SIGNATURE=f"{t},v1={'0' * 64},{v1},v0=abc")
    assert response.status_code == 202


# --- Slack ---------------------------------------------------------------------------


def test_slacks_published_example_verifies():
    # https://api.slack.com/authentication/verifying-requests-from-slack (the documented example request).
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": "1531420618",
        "HTTP_X_SLACK_SIGNATURE": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    assert signatures.slack_verify(secrets=[SLACK_SECRET], body=body, headers=headers, now=1531420618 + 10)
    assert not signatures.slack_verify(secrets=[SLACK_SECRET], body=body, headers=headers, now=1531420618 + 301)
    assert not signatures.slack_verify(secrets=["other"], body=body, headers=headers, now=1531420618)


def test_slack_signed_by_the_sdk_is_accepted_and_a_wrong_one_refused(client, flow):
    preset(flow, SLACK_SECRET, provider="slack")
    assert post(client, flow.endpoint_name, BODY, **slack_headers()).status_code == 202
    assert FlowRun.objects.get().request["headers"]["x-slack-signature"] == "***"
    FlowRun.objects.all().delete()
    assert_refused(post(client, flow.endpoint_name, BODY, **slack_headers(secret="nope")))
    assert_refused(post(client, flow.endpoint_name, BODY, **slack_headers(timestamp=time.time() - 400)))


# --- Shopify -------------------------------------------------------------------------


def test_shopify_base64_hmac_is_accepted_and_a_wrong_one_refused(client, flow):
    preset(flow, SHOPIFY_SECRET, provider="shopify")
    assert post(client, flow.endpoint_name, BODY, **shopify_headers()).status_code == 202
    assert FlowRun.objects.get().request["headers"]["x-shopify-hmac-sha256"] == "***"
    FlowRun.objects.all().delete()
    assert_refused(post(client, flow.endpoint_name, BODY, **shopify_headers(secret="other")))
    assert_refused(post(client, flow.endpoint_name, BODY, HTTP_X_SHOPIFY_HMAC_SHA256="not base64!"))


# --- Standard Webhooks and GitHub, alone ------------------------------------------------


def test_standard_preset_takes_only_standard_webhooks(client, flow):
    secret = signatures.webhook_signing_secret_rotate(flow=flow)
    flow_update(flow=flow, verification={"provider": "standard"})
    ts = int(time.time())
    signature = standardwebhooks.Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, UTC), BODY.decode())
    ok = post(client, flow.endpoint_name, BODY, HTTP_WEBHOOK_ID="msg_1", HTTP_WEBHOOK_TIMESTAMP=str(ts), HTTP_WEBHOOK_SIGNATURE=signature)
    assert ok.status_code == 202, ok.content
    FlowRun.objects.all().delete()
    github = {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()}
    assert_refused(post(client, flow.endpoint_name, BODY, **github))


def test_github_preset_takes_only_github(client, flow):
    secret = signatures.webhook_signing_secret_rotate(flow=flow)
    flow_update(flow=flow, verification={"provider": "github"})
    github = {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()}
    assert post(client, flow.endpoint_name, BODY, **github).status_code == 202


# --- token -----------------------------------------------------------------------------


def test_token_in_a_header_the_flow_names(client, flow):
    preset(flow, "tok-123456", provider="token", header="X-Hook-Token")
    assert post(client, flow.endpoint_name, BODY, HTTP_X_HOOK_TOKEN="tok-123456").status_code == 202
    assert FlowRun.objects.get().request["headers"]["x-hook-token"] == "***"
    FlowRun.objects.all().delete()
    assert_refused(post(client, flow.endpoint_name, BODY, HTTP_X_HOOK_TOKEN="tok-wrong"))
    assert_refused(post(client, flow.endpoint_name, BODY))


def test_token_in_a_query_parameter_the_flow_names(client, flow):
    preset(flow, "tok-123456", provider="token", query="token")
    assert post(client, f"{flow.endpoint_name}?token=tok-123456&a=1").status_code == 202
    assert FlowRun.objects.get().request["query"] == {"token": "***", "a": "1"}
    FlowRun.objects.all().delete()
    assert_refused(post(client, f"{flow.endpoint_name}?token=nope"))


def test_an_api_key_does_not_excuse_a_wrong_signature(key_client, flow):
    preset(flow, SHOPIFY_SECRET, provider="shopify")
    response = post(key_client, flow.endpoint_name, BODY, **shopify_headers(secret="other"))
    assert response.status_code == 401 and not FlowRun.objects.exists()


def test_rotation_grace_holds_for_a_preset(client, flow):
    preset(flow, SHOPIFY_SECRET, provider="shopify")
    webhook_signing_secret_set(flow=flow, secret="shpss_new_secret_000")
    assert post(client, flow.endpoint_name, BODY, **shopify_headers()).status_code == 202  # the previous one, in its grace
    assert post(client, flow.endpoint_name, BODY, **shopify_headers(secret="shpss_new_secret_000")).status_code == 202


# --- settings: 422 naming the field ------------------------------------------------------


@pytest.mark.parametrize(
    ("verification", "fragment"),
    [
        ({"provider": "paypal"}, "paypal"),
        ({"provider": "token"}, "header"),
        ({"provider": "token", "header": "X-A", "query": "b"}, "header"),
        ({"provider": "stripe", "extra": 1}, "extra"),
        ("stripe", "object"),
        # Web servers drop header names with an underscore (gunicorn, nginx): the token would never arrive.
        ({"provider": "token", "header": "X_Hook_Token"}, "underscore"),
    ],
)
def test_a_bad_verification_is_422_naming_the_field(key_client, flow, verification, fragment):
    webhook_signing_secret_set(flow=flow, secret=STRIPE_SECRET)
    response = key_client.patch(f"/api/v1/flows/{flow.id}", {"verification": verification}, format="json")
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", "verification"] and fragment in error["msg"]


def test_a_preset_without_a_secret_is_422(key_client, flow):
    response = key_client.patch(f"/api/v1/flows/{flow.id}", {"verification": {"provider": "slack"}}, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "verification"] and "secret" in response.json()["detail"][0]["msg"]


def test_an_import_with_a_preset_and_no_secret_is_422(key_client):
    from tests.helpers import GREETING_FLOW

    document = {"name": "F", "data": GREETING_FLOW, "verification": {"provider": "stripe"}}
    response = key_client.post("/api/v1/flows/upload/", document, format="json")
    assert response.status_code == 422 and "verification" in response.json()["detail"][0]["loc"]
    response = key_client.post("/api/v1/flows/upload/", {**document, "signing_secret": STRIPE_SECRET}, format="json")
    assert response.status_code == 201 and response.json()[0]["verification"] == {"provider": "stripe"}
    assert STRIPE_SECRET not in response.content.decode()
    response = key_client.post("/api/v1/flows/upload/", {**document, "signing_secret": 5}, format="json")
    assert response.status_code == 422 and "signing_secret" in response.json()["detail"][0]["loc"]


def test_the_api_sets_a_given_secret_without_echoing_it(key_client, flow):
    response = key_client.post(f"/api/v1/flows/{flow.id}/signing-secret", {"secret": SLACK_SECRET}, format="json")
    assert response.status_code == 201 and SLACK_SECRET not in response.content.decode()
    assert response.json()["signing_secret"] is None and response["Cache-Control"] == "no-store"
    flow.refresh_from_db()
    assert flow.signing_secret == SLACK_SECRET
    response = key_client.patch(f"/api/v1/flows/{flow.id}", {"verification": {"provider": "slack"}}, format="json")
    assert response.status_code == 200 and response.json()["verification"] == {"provider": "slack"}
    for bad in ("", "x" * 101, 5):
        response = key_client.post(f"/api/v1/flows/{flow.id}/signing-secret", {"secret": bad}, format="json")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "secret"]


def test_a_generated_secret_is_still_shown_once(key_client, flow):
    response = key_client.post(f"/api/v1/flows/{flow.id}/signing-secret")
    assert response.status_code == 201 and response.json()["signing_secret"].startswith("whsec_")


def test_removing_the_secret_removes_the_preset(key_client, flow):
    preset(flow, STRIPE_SECRET, provider="stripe")
    assert key_client.delete(f"/api/v1/flows/{flow.id}/signing-secret").status_code == 204
    flow.refresh_from_db()
    assert flow.verification_settings is None and not flow.signing_secret


def test_removing_the_secret_removes_metas_handshake_and_keeps_the_others(key_client, flow):
    # Meta's handshake checks its verify token against the secret: without one it refused every subscription, a
    # setting the flow's own validation refuses.
    webhook_signing_secret_set(flow=flow, secret=STRIPE_SECRET)
    flow_update(flow=flow, handshakes=["meta", "slack"])
    assert key_client.delete(f"/api/v1/flows/{flow.id}/signing-secret").status_code == 204
    flow.refresh_from_db()
    assert flow.handshakes == "slack" and not flow.signing_secret


def test_a_signing_secret_body_that_is_not_a_json_object_is_422(key_client, flow):
    url = f"/api/v1/flows/{flow.id}/signing-secret"
    for body in (b"{", b"[1]"):
        response = key_client.generic("POST", url, body, content_type="application/json")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body"], body
    assert key_client.generic("POST", url, b"secret", content_type="text/plain").status_code == 415
    flow.refresh_from_db()
    assert not flow.signing_secret


# --- A name several users gave their flows -----------------------------------------------


def test_a_signed_request_without_a_key_finds_its_flow_among_namesakes(client, flow, make_user, make_flow):
    # One user's naming must not break another's signed webhook: of the flows with the name, the one whose secret
    # signed the request is meant (a namesake without a secret, or with a secret of its own, changes nothing).
    preset(flow, STRIPE_SECRET, provider="stripe")
    bob = make_user()
    namesake = make_flow(bob, endpoint_name=flow.endpoint_name)
    response = post(client, flow.endpoint_name, BODY, **stripe_headers())
    assert response.status_code == 202, response.content
    preset(namesake, "whsec_bobs_own_secret", provider="stripe")
    second = b'{"id": "evt_2"}'  # Stripe's event id is the delivery's: a new event for each
    assert post(client, flow.endpoint_name, second, **stripe_headers(second)).status_code == 202
    assert post(client, flow.endpoint_name, BODY, **stripe_headers(secret="whsec_bobs_own_secret")).status_code == 202
    owners = sorted(FlowRun.objects.values_list("flow__user__username", flat=True))
    assert owners == sorted([flow.user.username, flow.user.username, bob.username])
    unknown = post(client, flow.endpoint_name, b'{"id": "evt_3"}', **stripe_headers(b'{"id": "evt_3"}', secret="whsec_nobodys"))
    assert unknown.status_code == 403 and FlowRun.objects.count() == 3
