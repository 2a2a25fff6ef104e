"""Ingest tokens at the webhook (issue 21, item 9): a token authorises its own flow's webhook only, as `x-api-key` or
in a URL of its own, `/api/v1/webhook/t/{token}`; anything else is refused as a bad key is."""

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from flows.models import FlowRun
from flows.services.flows import flow_update
from langrun.services import api_key_create
from tests.helpers import github_headers, post
from webhooks import services, targets
from webhooks.models import IngestToken
from webhooks.signatures import webhook_signing_secret_set
from webhooks.tokens import (
    ingest_token_authenticate,
    ingest_token_create,
    ingest_token_prefix,
    ingest_token_revoke,
    ingest_token_usage_flush,
)

BODY = b'{"name": "Ada"}'
INVALID = {"detail": "Invalid API key"}
MISSING = {"detail": targets.MISSING_API_KEY}


@pytest.fixture
def token(flow, user):
    new = ingest_token_create(flow=flow, name="sender", created_by=user)
    yield new.token
    ingest_token_usage_flush()  # leave no counted use behind for the exit hook


def token_post(client, token, body=BODY, content_type="application/json", suffix="", **extra):
    return client.generic("POST", f"/api/v1/webhook/t/{token}{suffix}", body, content_type=content_type, **extra)


# --- the service -----------------------------------------------------------------------


def test_a_token_is_stored_hashed_with_a_visible_prefix(flow, user):
    new = ingest_token_create(flow=flow, name="crm", created_by=user)
    row = IngestToken.objects.get()
    assert new.token.startswith("it-") and len(new.token) > 40
    assert new.token.startswith(row.prefix) and row.prefix == ingest_token_prefix(new.token)
    assert new.token not in row.hashed_token and row.masked == row.prefix + "********"
    assert (row.flow_id, row.created_by_id, row.name, row.state) == (flow.pk, user.pk, "crm", "active")


@pytest.mark.parametrize("text", ["sk-abcdefghijklmnop", "it-short", "it-abcdefgh\x00ijk", "x" * 20, "it-" + "a" * 300])
def test_what_cannot_be_a_token_has_no_prefix(text):
    assert ingest_token_prefix(text) is None


def test_authenticate_refuses_a_revoked_an_expired_a_wrong_token_and_an_inactive_owner(flow, user):
    good = ingest_token_create(flow=flow)
    assert ingest_token_authenticate(token=good.token).flow == flow
    assert ingest_token_authenticate(token=good.token[:-1] + ("A" if good.token[-1] != "A" else "B")) is None
    expired = ingest_token_create(flow=flow)
    IngestToken.objects.filter(pk=expired.ingest_token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert ingest_token_authenticate(token=expired.token) is None
    revoked = ingest_token_create(flow=flow)
    ingest_token_revoke(ingest_token=revoked.ingest_token)
    assert ingest_token_authenticate(token=revoked.token) is None
    user.is_active = False
    user.save()
    assert ingest_token_authenticate(token=good.token) is None
    ingest_token_usage_flush()


def test_revoking_twice_keeps_the_first_time(flow):
    new = ingest_token_create(flow=flow)
    first = ingest_token_revoke(ingest_token=new.ingest_token).revoked_at
    again = ingest_token_revoke(ingest_token=IngestToken.objects.get(pk=new.ingest_token.pk))
    assert again.revoked_at == first and again.state == "revoked"


def test_revoking_a_token_deleted_meanwhile_is_not_found(flow):
    from django.http import Http404

    token = ingest_token_create(flow=flow).ingest_token
    IngestToken.objects.filter(pk=token.pk).delete()  # a DELETE between the view's lookup and the revoke
    with pytest.raises(Http404):
        ingest_token_revoke(ingest_token=token)


def test_uses_are_recorded_in_batches(flow, settings):
    settings.LANGRUN_API_KEY_USAGE_INTERVAL = 3600
    new = ingest_token_create(flow=flow)
    for _ in range(3):
        assert ingest_token_authenticate(token=new.token) is not None
    row = IngestToken.objects.get()
    assert row.last_used_at is not None and row.use_count == 1  # the first use is written, the others wait
    assert ingest_token_usage_flush() == 1
    assert IngestToken.objects.get().use_count == 3


# --- as x-api-key --------------------------------------------------------------------


def test_a_token_in_x_api_key_runs_its_flow_by_name_or_id(client, flow, token):
    assert post(client, "greet", HTTP_X_API_KEY=token).status_code == 202
    assert post(client, str(flow.pk), HTTP_X_API_KEY=token).status_code == 202
    assert client.post(f"/api/v1/webhook/greet?x-api-key={token}", {"name": "Q"}, format="json").status_code == 202
    runs = FlowRun.objects.all()
    assert len(runs) == 3 and {r.user_id for r in runs} == {flow.user_id}
    assert all(r.request["headers"].get("x-api-key") in (None, "***") and "x-api-key" not in r.request["query"] for r in runs)


def test_a_token_on_another_flow_is_a_bad_key(client, flow, user, make_flow, make_user, token):
    mine = make_flow(user, endpoint_name="mine")
    theirs = make_flow(make_user("bob"), endpoint_name="theirs")
    for target in ("mine", str(mine.pk), "theirs", str(theirs.pk), "nope"):
        response = post(client, target, HTTP_X_API_KEY=token)
        assert (response.status_code, response.json()) == (403, INVALID), target
    response = client.post(f"/api/v1/webhook/greet?user_id={theirs.user_id}", BODY, content_type="application/json", HTTP_X_API_KEY=token)
    assert (response.status_code, response.json()) == (403, INVALID)
    assert not FlowRun.objects.exists()


def test_a_token_never_authenticates_the_rest_api(client, flow, token):
    for path in ("/api/v1/flows/", f"/api/v1/flows/{flow.pk}", "/api/v1/runs/", f"/api/v1/flows/{flow.pk}/ingest-tokens"):
        response = client.get(path, HTTP_X_API_KEY=token)
        assert (response.status_code, response.json()) == (403, INVALID), path
        assert client.get(f"{path}?x-api-key={token}").status_code == 403
    assert client.get("/api/v1/run/greet", HTTP_X_API_KEY=token).status_code == 403
    assert client.get("/admin/", HTTP_X_API_KEY=token).status_code == 302  # the login page, as without it


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_a_revoked_or_expired_token_is_a_bad_key(client, flow, token, state):
    row = IngestToken.objects.get()
    if state == "revoked":
        ingest_token_revoke(ingest_token=row)
    else:
        IngestToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert (post(client, "greet", HTTP_X_API_KEY=token).json(), post(client, "greet", HTTP_X_API_KEY=token).status_code) == (INVALID, 403)
    response = token_post(client, token)
    assert (response.status_code, response.json()) == (403, MISSING)
    assert not FlowRun.objects.exists()


def test_an_account_key_keeps_working(key_client, flow, token):
    assert post(key_client, "greet").status_code == 202
    assert key_client.get("/api/v1/flows/").status_code == 200


# --- its own URL ----------------------------------------------------------------------


def test_the_token_url_runs_the_flow_as_its_owner(client, flow, token):
    response = token_post(client, token)
    assert response.status_code == 202, response.content
    body = response.json()
    run = FlowRun.objects.get(pk=body["run_id"])
    assert (run.flow_id, run.user_id, run.trigger, run.payload) == (flow.pk, flow.user_id, "webhook", {"name": "Ada"})
    assert body["status_url"].endswith(f"/api/v1/runs/{run.pk}") and response["Location"] == body["status_url"]
    assert token_post(client, token, suffix="/").status_code == 202  # the trailing slash is optional
    assert IngestToken.objects.get().last_used_at is not None


@pytest.mark.parametrize("bad", ["it-unknownunknownunknownunknown", "sk-notatokenatall", "x", "it-%C3%A9abcdefghijk"])
def test_an_unknown_token_url_is_the_403_without_credentials(client, flow, bad):
    response = token_post(client, bad)
    assert (response.status_code, response.json()) == (403, MISSING)
    assert bad not in response.content.decode()


def test_an_account_key_is_no_token(client, flow, api_key):
    response = token_post(client, api_key)
    assert (response.status_code, response.json()) == (403, MISSING)


def test_the_token_url_follows_the_flows_methods(client, flow, token):
    response = client.get(f"/api/v1/webhook/t/{token}?a=1")
    assert (response.status_code, response["Allow"]) == (405, "POST, OPTIONS")
    flow_update(flow=flow, methods=["GET", "PUT"])
    assert client.get(f"/api/v1/webhook/t/{token}?a=1").status_code == 202
    assert client.put(f"/api/v1/webhook/t/{token}", BODY, content_type="application/json").status_code == 202
    refused = token_post(client, token)
    assert (refused.status_code, refused["Allow"]) == (405, "GET, PUT, OPTIONS")
    assert [r.payload for r in FlowRun.objects.order_by("received_at")] == [{"a": "1"}, {"name": "Ada"}]


def test_the_token_url_answers_json_to_a_browser_too(client, flow, token):
    response = client.get(f"/api/v1/webhook/t/{token}", HTTP_ACCEPT="text/html")
    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    assert token not in response.content.decode()


def test_the_token_url_verifies_the_flows_signature(client, flow, token):
    webhook_signing_secret_set(flow=flow, secret="s3cret")
    unsigned = token_post(client, token)
    assert unsigned.status_code == 401
    assert token_post(client, token, **github_headers("s3cret", BODY)).status_code == 202
    assert FlowRun.objects.count() == 1


def test_the_token_url_deduplicates_filters_and_waits_as_the_webhook(client, flow, token):
    flow_update(flow=flow, dedupe_key="payload.id", accept_if="payload.name != 'skip'")
    first = token_post(client, token, body=b'{"id": 1, "name": "Ada"}')
    again = token_post(client, token, body=b'{"id": 1, "name": "Ada"}')
    assert (first.status_code, again.status_code, again["Idempotent-Replayed"]) == (202, 202, "true")
    assert again.json()["run_id"] == first.json()["run_id"]
    filtered = token_post(client, token, body=b'{"id": 2, "name": "skip"}')
    assert (filtered.status_code, filtered.json()["status"]) == (200, "filtered")
    bad_wait = token_post(client, token, suffix="?wait=soon")
    assert bad_wait.status_code == 422 and bad_wait.json()["detail"][0]["loc"] == ["query", "wait"]


def test_the_token_counts_against_the_per_key_and_per_flow_limits(client, flow, token, settings, monkeypatch):
    start = (services.time.time() // 60 + 1) * 60 + 1
    monkeypatch.setattr(services.time, "time", lambda: start)
    settings.LANGRUN_RATE_LIMIT_KEY = 2
    assert [token_post(client, token).status_code for _ in range(3)] == [202, 202, 429]
    keyed = APIClient()
    keyed.credentials(HTTP_X_API_KEY=api_key_create(user=flow.user).key)
    assert post(keyed, "greet").status_code == 202  # the account key has its own budget
    assert post(client, "greet", HTTP_X_API_KEY=token).status_code == 429  # the token's, whichever way it is sent


def test_the_token_url_works_with_webhook_auth_off(client, flow, token, settings):
    settings.LANGRUN_WEBHOOK_AUTH = False
    assert token_post(client, token).status_code == 202
    assert token_post(client, "it-unknownunknownunknownunknown").status_code == 403


# --- no leaks -------------------------------------------------------------------------


def test_the_token_is_not_in_the_recorded_request_nor_the_answers(client, flow, token):
    response = token_post(client, token, suffix=f"?x-api-key={token}&wait=0", HTTP_X_API_KEY=token)
    assert response.status_code == 202
    run = FlowRun.objects.get()
    assert token not in json.dumps(run.request) + json.dumps(run.payload) + run.body
    assert token not in response.content.decode() + json.dumps(dict(response.headers))
    refused = token_post(client, token, body=b"")
    assert refused.status_code == 400 and token not in refused.content.decode()


def test_djangos_log_of_a_refused_token_url_masks_the_token(client, flow, caplog):
    from langrun.logs import SecretPathFilter

    bad = "it-unknownunknownunknownunknown"
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert token_post(client, bad).status_code == 403
    [record] = [r for r in caplog.records if r.name == "django.request"]
    SecretPathFilter().filter(record)
    assert bad not in record.getMessage() and record.getMessage() == "Forbidden: /api/v1/webhook/t/***"
