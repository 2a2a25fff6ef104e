"""A flow's ingest tokens through the API: create (shown once), list (never the secret), one, revoke; owner-scoped."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from langrun.services import api_key_create
from tests.helpers import deleted_after_lookup
from webhooks.models import IngestToken
from webhooks.tokens import ingest_token_create, ingest_token_usage_flush


@pytest.fixture(autouse=True)
def _flush_uses():
    yield
    ingest_token_usage_flush()


def url(flow, token_id=None):
    return f"/api/v1/flows/{flow.pk}/ingest-tokens" + (f"/{token_id}" if token_id else "")


def test_create_answers_the_token_once_and_it_runs_the_flow(key_client, client, flow, user):
    expires = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    response = key_client.post(url(flow), {"name": "typeform", "expires_at": expires.isoformat()}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    token = body["token"]
    assert token.startswith("it-") and body["webhook_url"] == f"http://testserver/api/v1/webhook/t/{token}"
    assert (body["name"], body["state"], body["created_by"], body["revoked_at"]) == ("typeform", "active", str(user.pk), None)
    assert body["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))
    assert client.post(body["webhook_url"], {"name": "Ada"}, format="json").status_code == 202

    listed = key_client.get(url(flow)).json()
    assert listed["count"] == 1
    [entry] = listed["results"]
    assert token not in str(listed) and entry["token"] == token[:11] + "********"
    assert entry["use_count"] >= 1 and entry["last_used_at"] is not None
    one = key_client.get(url(flow, entry["id"])).json()
    assert one == entry


def test_create_without_a_body_makes_an_unnamed_token_that_never_expires(key_client, flow):
    body = key_client.post(url(flow), format="json").json()
    assert (body["name"], body["expires_at"]) == ("", None)
    form = key_client.post(url(flow), {"name": "x", "expires_at": ""})  # a form's empty field is no date-time
    assert form.status_code == 415 and IngestToken.objects.count() == 1


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"name": "x" * 101}, ["body", "name"]),
        ({"name": 5}, ["body", "name"]),
        ({"expires_at": "soon"}, ["body", "expires_at"]),
        ({"expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"]),
    ],
)
def test_create_refuses_bad_input_with_422(key_client, flow, payload, loc):
    response = key_client.post(url(flow), payload, format="json")
    assert response.status_code == 422
    assert [d["loc"] for d in response.json()["detail"]] == [loc]
    assert not IngestToken.objects.exists()


def test_revoke_refuses_the_token_from_then_on_and_keeps_it_listed(key_client, client, flow):
    new = ingest_token_create(flow=flow)
    revoke = url(flow, new.ingest_token.pk) + "/revoke"
    first = key_client.post(revoke)
    assert (first.status_code, first.json()["state"]) == (200, "revoked")
    again = key_client.post(revoke)  # again: nothing changes
    assert again.status_code == 200 and again.json()["revoked_at"] == first.json()["revoked_at"]
    assert key_client.get(url(flow)).json()["results"][0]["state"] == "revoked"
    response = client.post(f"/api/v1/webhook/t/{new.token}", {"name": "Ada"}, format="json")
    assert response.status_code == 403


def test_delete_refuses_the_token_and_forgets_it(key_client, client, flow):
    new = ingest_token_create(flow=flow)
    assert key_client.delete(url(flow, new.ingest_token.pk)).status_code == 204
    assert key_client.get(url(flow, new.ingest_token.pk)).status_code == 404
    assert key_client.delete(url(flow, new.ingest_token.pk)).status_code == 404
    assert key_client.get(url(flow)).json()["count"] == 0
    assert client.post(f"/api/v1/webhook/t/{new.token}", {"name": "Ada"}, format="json").status_code == 403


def test_an_expired_token_is_listed_as_expired(key_client, flow):
    new = ingest_token_create(flow=flow)
    IngestToken.objects.filter(pk=new.ingest_token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert key_client.get(url(flow)).json()["results"][0]["state"] == "expired"


def test_revoking_a_token_deleted_after_its_lookup_is_404(key_client, flow, monkeypatch):
    from webhooks.token_views import IngestTokenRevokeView

    token = ingest_token_create(flow=flow).ingest_token
    deleted_after_lookup(monkeypatch, IngestTokenRevokeView)  # a concurrent DELETE of the same object
    response = key_client.post(url(flow, token.pk) + "/revoke")
    assert response.status_code == 404
    assert response.json() == {"detail": "No IngestToken matches the given query."}  # as when it was gone before


def test_another_users_flow_and_tokens_are_404(flow, make_user, make_flow):
    bob = make_user("bob")
    theirs = make_flow(bob, endpoint_name="theirs")
    their_token = ingest_token_create(flow=theirs)
    mine = ingest_token_create(flow=flow)
    bob_client = APIClient()
    bob_client.credentials(HTTP_X_API_KEY=api_key_create(user=bob).key)
    assert bob_client.get(url(flow)).status_code == 404
    assert bob_client.post(url(flow), {"name": "x"}, format="json").status_code == 404
    assert bob_client.get(url(flow, mine.ingest_token.pk)).status_code == 404
    assert bob_client.delete(url(flow, mine.ingest_token.pk)).status_code == 404
    assert bob_client.post(url(flow, mine.ingest_token.pk) + "/revoke").status_code == 404
    assert bob_client.get(url(theirs, mine.ingest_token.pk)).status_code == 404  # a token of another flow
    assert IngestToken.objects.get(pk=mine.ingest_token.pk).revoked_at is None
    assert bob_client.get(url(theirs)).json()["count"] == 1 and their_token.token not in str(bob_client.get(url(theirs)).json())


def test_tokens_need_an_authenticated_caller(client, flow):
    assert client.get(url(flow)).status_code == 403
    assert client.post(url(flow)).status_code == 403


def test_the_schema_lists_the_token_endpoints(key_client):
    schema = key_client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert set(paths["/api/v1/flows/{flow_id}/ingest-tokens"]) == {"get", "post"}
    assert set(paths["/api/v1/flows/{flow_id}/ingest-tokens/{token_id}"]) == {"get", "delete"}
    assert set(paths["/api/v1/flows/{flow_id}/ingest-tokens/{token_id}/revoke"]) == {"post"}
    token_url = paths["/api/v1/webhook/t/{token}"]
    assert set(token_url) == {"get", "post", "put", "patch", "delete"}
    assert token_url["post"].get("security", []) == []  # no scheme: the token in the path is the credential
    assert [p["name"] for p in token_url["post"]["parameters"] if p["in"] == "path"] == ["token"]
    assert token_url["post"]["requestBody"]["required"] is True
    created = schema["components"]["schemas"]["IngestTokenCreated"]["properties"]
    assert {"token", "webhook_url", "expires_at", "state"} <= set(created)
