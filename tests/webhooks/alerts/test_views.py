"""/api/v1/subscriptions, /api/v1/deliveries and /api/v1/callback-secret: owner-scoped, secrets shown once."""

import pytest
from rest_framework.test import APIClient

from langrun.services import api_key_create
from tests.helpers import deleted_after_lookup
from webhooks.alerts.models import CallbackSecret, Delivery, Subscription

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def other_client(other):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key_create(user=other, name="other").key)
    return c


def _create(client, **body):
    return client.post("/api/v1/subscriptions", {"url": URL, "events": ["run.failed"], **body}, format="json")


def test_create_shows_the_secret_once(key_client, flow, local_allowed):
    created = _create(key_client, flow=str(flow.id), events=["run.failed", "run.retries_exhausted"])
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["flow"] == str(flow.id) and created["Cache-Control"] == "no-store"
    assert Subscription.objects.get(pk=body["id"]).secret == body["secret"]
    listed = key_client.get("/api/v1/subscriptions").json()
    assert "secret" not in str(listed) and [item["id"] for item in listed["results"]] == [body["id"]]
    shown = key_client.get(f"/api/v1/subscriptions/{body['id']}").json()
    assert "secret" not in shown and shown["events"] == ["run.failed", "run.retries_exhausted"]


def test_a_subscription_created_inactive_stays_paused(key_client, local_allowed):
    created = _create(key_client, is_active=False)
    assert created.status_code == 201, created.json()
    assert created.json()["is_active"] is False
    assert Subscription.objects.get(pk=created.json()["id"]).is_active is False


def test_an_unknown_event_is_a_422_naming_the_field(key_client, local_allowed):
    answer = _create(key_client, events=["run.exploded"])
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"][:2] == ["body", "events"] and "run.exploded" in error["msg"]


def test_a_url_the_guard_refuses_is_a_422_naming_the_field(key_client):
    answer = _create(key_client)  # loopback, not allowed here
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "url"] and "not a public address" in error["msg"] and error["type"] == "url_blocked"
    assert _create(key_client, url="ftp://example.com/").json()["detail"][0]["loc"] == ["body", "url"]
    assert not Subscription.objects.exists()


def test_a_url_or_an_email_and_backlog_thresholds(key_client, local_allowed):
    both = _create(key_client, email="ops@example.com")
    assert both.status_code == 422 and both.json()["detail"][0]["loc"] == ["body", "url"]
    mailed = key_client.post("/api/v1/subscriptions", {"email": "ops@example.com", "events": ["run.failed"]}, format="json")
    assert mailed.status_code == 201
    backlog = _create(key_client, events=["flow.backlog"])
    assert backlog.status_code == 422 and backlog.json()["detail"][0]["loc"] == ["body", "backlog_threshold"]
    assert _create(key_client, events=["flow.backlog"], backlog_threshold=10).status_code == 201


def test_another_users_subscription_flow_and_deliveries_are_404(key_client, other_client, make_flow, other, local_allowed):
    mine = _create(key_client).json()
    for path in (f"/api/v1/subscriptions/{mine['id']}", f"/api/v1/subscriptions/{mine['id']}/deliveries"):
        assert other_client.get(path).status_code == 404
    assert other_client.post(f"/api/v1/subscriptions/{mine['id']}/rotate-secret").status_code == 404
    assert other_client.patch(f"/api/v1/subscriptions/{mine['id']}", {"url": "http://127.0.0.1:1/"}, format="json").status_code == 404
    assert other_client.delete(f"/api/v1/subscriptions/{mine['id']}").status_code == 404
    theirs = make_flow(other, name="Theirs")
    assert _create(key_client, flow=str(theirs.id)).status_code == 404
    delivery = Delivery.objects.create(user=other, event="run.failed", url=URL, payload={})
    assert key_client.get(f"/api/v1/deliveries/{delivery.pk}").status_code == 404
    assert key_client.post(f"/api/v1/deliveries/{delivery.pk}/retry").status_code == 404
    assert key_client.get("/api/v1/deliveries").json()["count"] == 0
    assert key_client.get("/api/v1/subscriptions/not-a-uuid").status_code == 404


def test_rotate_patch_and_delete(key_client, local_allowed):
    sub = _create(key_client).json()
    rotated = key_client.post(f"/api/v1/subscriptions/{sub['id']}/rotate-secret")
    assert rotated.status_code == 201 and rotated.json()["secret"] != sub["secret"]
    assert Subscription.objects.get(pk=sub["id"]).secret == rotated.json()["secret"]
    patched = key_client.patch(f"/api/v1/subscriptions/{sub['id']}", {"events": ["run.succeeded"], "is_active": False}, format="json")
    assert patched.status_code == 200 and patched.json()["events"] == ["run.succeeded"] and patched.json()["is_active"] is False
    refused = key_client.patch(f"/api/v1/subscriptions/{sub['id']}", {"events": ["nope"]}, format="json")
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][:2] == ["body", "events"]
    assert key_client.delete(f"/api/v1/subscriptions/{sub['id']}").status_code == 204
    assert not Subscription.objects.exists()


def test_rotating_a_subscription_deleted_after_its_lookup_is_404(key_client, local_allowed, monkeypatch):
    from webhooks.alerts.views import SubscriptionViewSet

    sub = _create(key_client).json()
    deleted_after_lookup(monkeypatch, SubscriptionViewSet)  # a concurrent DELETE of the same object
    response = key_client.post(f"/api/v1/subscriptions/{sub['id']}/rotate-secret")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Subscription matches the given query."}
    assert not Subscription.objects.exists()  # not saved again


@pytest.mark.django_db(transaction=True)  # the subscription's foreign key to its flow is checked at the commit
@pytest.mark.parametrize("change", ["create", "update"])
def test_subscribing_to_a_flow_deleted_after_its_lookup_is_a_404(key_client, flow, monkeypatch, local_allowed, change):
    from flows.models import Flow
    from webhooks.alerts.views import SubscriptionViewSet

    existing = _create(key_client).json() if change == "update" else None
    lookup = SubscriptionViewSet._flow

    def deleted_after_lookup(view, data):
        found = lookup(view, data)
        Flow.objects.filter(pk=found.pk).delete()
        return found

    monkeypatch.setattr(SubscriptionViewSet, "_flow", deleted_after_lookup)
    if change == "create":
        response = _create(key_client, flow=str(flow.id), events=["flow.backlog"], backlog_threshold=10)
    else:
        response = key_client.patch(f"/api/v1/subscriptions/{existing['id']}", {"flow": str(flow.id)}, format="json")
    assert response.status_code == 404 and response.json() == {"detail": "Flow not found"}
    assert list(Subscription.objects.values_list("flow_id", flat=True)) == ([None] if existing else [])


def test_deliveries_are_listed_with_their_attempts_and_filtered(key_client, user, local_allowed):
    sub = Subscription.objects.get(pk=_create(key_client).json()["id"])
    failed = Delivery.objects.create(
        user=user, subscription=sub, event="run.failed", url=URL, payload={"type": "run.failed"}, status="failed",
        attempt_count=1, attempts=[{"number": 1, "at": "2026-01-01T00:00:00Z", "status_code": 500, "error": "HTTP 500", "duration_ms": 3.0}],
    )  # fmt: skip
    Delivery.objects.create(user=user, subscription=sub, event="run.succeeded", url=URL, payload={}, status="delivered")
    listed = key_client.get("/api/v1/deliveries", {"status": "failed"}).json()
    [item] = listed["results"]
    assert item["id"] == str(failed.pk) and item["webhook_id"] == failed.webhook_id and item["attempts"][0]["status_code"] == 500
    of_sub = key_client.get(f"/api/v1/subscriptions/{sub.pk}/deliveries").json()
    assert of_sub["count"] == 2 and {d["event"] for d in of_sub["results"]} == {"run.failed", "run.succeeded"}
    assert key_client.get("/api/v1/deliveries", {"status": "exploded"}).status_code == 422


def test_a_second_retry_of_a_delivery_already_being_sent_is_a_409(key_client, user, monkeypatch):
    from webhooks.alerts.services import sending

    monkeypatch.setattr(sending, "deliveries_enqueue", lambda *, delivery_ids: len(delivery_ids))
    failed = Delivery.objects.create(user=user, event="run.failed", url=URL, payload={}, status="failed", attempt_count=5)
    first = key_client.post(f"/api/v1/deliveries/{failed.pk}/retry")
    assert first.status_code == 202 and first.json()["status"] == "pending"
    second = key_client.post(f"/api/v1/deliveries/{failed.pk}/retry")
    assert second.status_code == 409
    assert second.json() == {"detail": f"Delivery {failed.pk} is already being sent; it is not sent again until this attempt ends."}


def test_retrying_a_delivery_deleted_after_its_lookup_is_a_404(key_client, user, monkeypatch):
    from webhooks.alerts.views import DeliveryViewSet

    failed = Delivery.objects.create(user=user, event="run.failed", url=URL, payload={}, status="failed", attempt_count=5)
    deleted_after_lookup(monkeypatch, DeliveryViewSet)
    response = key_client.post(f"/api/v1/deliveries/{failed.pk}/retry")
    assert response.status_code == 404 and not Delivery.objects.exists()


def test_the_callback_secret_is_shown_once_per_rotation(key_client, user):
    first = key_client.post("/api/v1/callback-secret")
    assert first.status_code == 201 and first.json()["secret"].startswith("whsec_")
    second = key_client.post("/api/v1/callback-secret").json()["secret"]
    assert second != first.json()["secret"] and CallbackSecret.objects.get(user=user).secret == second


def test_the_schema_describes_subscriptions_and_deliveries(client, db):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    paths = set(schema["paths"])
    assert {"/api/v1/subscriptions/", "/api/v1/deliveries/", "/api/v1/deliveries/{id}/retry", "/api/v1/callback-secret/"} <= paths
    assert {"/api/v1/subscriptions/{id}/rotate-secret", "/api/v1/subscriptions/{id}/deliveries"} <= paths
    created = schema["paths"]["/api/v1/subscriptions/"]["post"]["responses"]
    assert "422" in created and "secret" in str(schema["components"]["schemas"]["SubscriptionCreated"])
    webhook = schema["paths"]["/api/v1/webhook/{flow_id_or_name}"]["post"]
    assert "callback_url" in [p["name"] for p in webhook["parameters"]]


def test_a_host_that_does_not_resolve_or_a_malformed_url_is_a_422(key_client):
    for url in ("http://no-such-host.invalid/hook", "http://[::1/", "http://example.com:99999/", "http://exa mple.com/"):
        answer = _create(key_client, url=url)
        assert answer.status_code == 422, (url, answer.content)
        assert answer.json()["detail"][0]["loc"] == ["body", "url"]


def test_a_malformed_email_is_a_422_and_forms_are_not_taken(key_client):
    answer = key_client.post("/api/v1/subscriptions", {"email": "not-an-address", "events": ["run.failed"]}, format="json")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "email"]
    form = key_client.post("/api/v1/subscriptions", {"email": "ops@example.com", "events": "run.failed", "flow": ""})
    assert form.status_code == 415


def test_the_deliveries_url_follows_the_prefix_the_service_is_mounted_under(key_client, local_allowed):
    from django.test.utils import override_script_prefix

    with override_script_prefix("/langrun/"):
        body = _create(key_client).json()
    assert body["deliveries_url"] == f"http://testserver/langrun/api/v1/deliveries?subscription={body['id']}"
