"""The admin of alerts: a subscription's secret is shown once, deliveries list their attempts and can be retried."""

from tests.helpers import login
from webhooks.alerts.models import Delivery, Subscription
from webhooks.alerts.services.subscriptions import subscription_create

URL = "http://127.0.0.1:9/hook"


def test_adding_a_subscription_shows_its_secret_once(staff, make_flow, local_allowed):
    flow = make_flow(staff)
    c = login(staff)
    answer = c.post(
        "/admin/webhooks/subscription/add/",
        {"user": staff.pk, "flow": flow.pk, "url": URL, "events": ["run.failed", "run.succeeded"], "is_active": "on"},
        follow=True,
    )
    sub = Subscription.objects.get()
    assert sub.user == staff and sub.flow == flow and sub.events == ["run.failed", "run.succeeded"]
    assert sub.secret in answer.content.decode()
    page = c.get(f"/admin/webhooks/subscription/{sub.pk}/change/").content.decode()
    assert sub.secret not in page


def test_a_subscription_added_unticked_active_stays_paused(staff, local_allowed):
    login(staff).post("/admin/webhooks/subscription/add/", {"user": staff.pk, "url": URL, "events": ["run.failed"]})
    assert Subscription.objects.get().is_active is False


def test_a_url_the_guard_refuses_is_a_form_error(staff):
    answer = login(staff).post("/admin/webhooks/subscription/add/", {"user": staff.pk, "url": URL, "events": ["run.failed"]})
    assert answer.status_code == 200 and "not a public address" in answer.content.decode() and not Subscription.objects.exists()


def test_deliveries_with_attempts_filtered_by_status_and_retried(staff, other, local_allowed, monkeypatch):
    from webhooks.alerts.services import sending

    monkeypatch.setattr(sending, "deliveries_enqueue", lambda *, delivery_ids: len(delivery_ids))
    sub = subscription_create(user=staff, url=URL, events=["run.failed"])
    failed = Delivery.objects.create(
        user=staff, subscription=sub, event="run.failed", url=URL, payload={"type": "run.failed"}, status="failed", attempt_count=5,
        attempts=[{"number": 1, "at": "2026-01-01T00:00:00Z", "status_code": 503, "error": "HTTP 503", "duration_ms": 4.2}],
    )  # fmt: skip
    theirs = Delivery.objects.create(user=other, event="run.failed", url=URL, payload={}, status="failed")
    c = login(staff)
    listed = c.get("/admin/webhooks/delivery/", {"status__exact": "failed"}).content.decode()
    assert str(failed.pk) in listed and str(theirs.pk) not in listed
    detail = c.get(f"/admin/webhooks/delivery/{failed.pk}/change/").content.decode()
    assert "HTTP 503" in detail and failed.webhook_id in detail
    assert c.get(f"/admin/webhooks/delivery/{theirs.pk}/change/").status_code == 404
    c.post("/admin/webhooks/delivery/", {"action": "retry_now", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == "pending" and failed.next_attempt_at is not None


def test_retry_now_twice_sends_once_and_says_so(staff, local_allowed, monkeypatch, django_capture_on_commit_callbacks):
    from webhooks.alerts.services import sending

    rung = []
    monkeypatch.setattr(sending, "deliveries_enqueue", lambda *, delivery_ids: rung.extend(delivery_ids))
    failed = Delivery.objects.create(user=staff, event="run.failed", url=URL, payload={}, status="failed", attempt_count=5)
    gone = Delivery.objects.create(user=staff, event="run.failed", url=URL, payload={}, status="failed", attempt_count=5)
    c = login(staff)
    with django_capture_on_commit_callbacks(execute=True):
        first = c.post("/admin/webhooks/delivery/", {"action": "retry_now", "_selected_action": [failed.pk]}, follow=True)
    assert "1 delivery will be sent again now." in first.content.decode()
    from webhooks.alerts import admin

    def deleted_meanwhile(*, delivery):  # the action read the selection, then retention deleted one of them
        Delivery.objects.filter(pk=gone.pk).delete()
        return sending.delivery_retry_now(delivery=delivery)

    monkeypatch.setattr(admin, "delivery_retry_now", deleted_meanwhile)
    with django_capture_on_commit_callbacks(execute=True):
        second = c.post("/admin/webhooks/delivery/", {"action": "retry_now", "_selected_action": [failed.pk, gone.pk]}, follow=True)
    page = second.content.decode()
    assert second.status_code == 200 and "1 delivery is already being sent; not sent again." in page
    assert "1 delivery was deleted meanwhile." in page
    assert rung == [str(failed.pk)]


def test_flow_builders_manage_their_own_subscriptions(bare_staff, local_allowed):
    from django.contrib.auth.models import Group

    bare_staff.groups.add(Group.objects.get(name="Flow builders"))
    c = login(bare_staff)
    assert c.get("/admin/webhooks/subscription/add/").status_code == 200
    assert c.get("/admin/webhooks/delivery/").status_code == 200


def test_the_rotate_action_shows_the_new_secret_once(staff, local_allowed):
    sub = subscription_create(user=staff, url=URL, events=["run.failed"])
    answer = login(staff).post("/admin/webhooks/subscription/", {"action": "rotate_secret", "_selected_action": [sub.pk]}, follow=True)
    sub.refresh_from_db()
    assert sub.secret in answer.content.decode()


def test_a_subscription_to_another_users_flow_is_a_form_error(superuser, other, make_flow, local_allowed):
    # A superuser chooses both: the subscription's user must own its flow (else that user sees another's flow id).
    alices = make_flow(superuser)
    answer = login(superuser).post(
        "/admin/webhooks/subscription/add/",
        {"user": other.pk, "flow": alices.pk, "url": URL, "events": ["run.failed"], "is_active": "on"},
    )
    assert answer.status_code == 200 and "one of its user" in answer.content.decode()
    assert not Subscription.objects.exists()


def _in_message_cookie(client) -> str:
    from django.contrib.messages.storage.cookie import CookieStorage

    cookie = client.cookies.get("messages")
    return str(CookieStorage(None)._decode(cookie.value)) if cookie is not None and cookie.value else ""


def test_a_subscriptions_secret_is_shown_on_its_page_never_put_in_a_message_cookie(staff, local_allowed):
    # A message travels in a cookie, signed, not encrypted: the secret was readable by whatever saw the Set-Cookie
    # (a proxy's log, the browser's cookie store), as the API key's and the ingest token's never are.
    c = login(staff)
    added = c.post("/admin/webhooks/subscription/add/", {"user": staff.pk, "url": URL, "events": ["run.failed"], "is_active": "on"})
    sub = Subscription.objects.get()
    assert added.status_code == 200 and sub.secret in added.content.decode() and "no-store" in added["Cache-Control"]
    assert sub.secret not in _in_message_cookie(c)
    rotated = c.post("/admin/webhooks/subscription/", {"action": "rotate_secret", "_selected_action": [sub.pk]})
    sub.refresh_from_db()
    assert rotated.status_code == 200 and sub.secret in rotated.content.decode() and "no-store" in rotated["Cache-Control"]
    assert sub.secret not in _in_message_cookie(c)


def test_deleting_selected_subscriptions_deletes_each_and_keeps_their_deliveries_records(staff, other, local_allowed):
    mine = [subscription_create(user=staff, url=URL, events=["run.failed"]) for _ in range(2)]
    theirs = subscription_create(user=other, url=URL, events=["run.failed"])
    delivery = Delivery.objects.create(user=staff, subscription=mine[0], event="run.failed", url=URL, payload={})
    c = login(staff)
    selected = [str(s.pk) for s in (*mine, theirs)]
    c.post("/admin/webhooks/subscription/", {"action": "delete_selected", "_selected_action": selected, "post": "yes"})
    assert list(Subscription.objects.values_list("pk", flat=True)) == [theirs.pk]  # another user's is not for the taking
    delivery.refresh_from_db()
    assert delivery.subscription_id is None


def test_the_delivery_list_reads_no_body_payload_or_outputs_of_the_runs(staff, make_flow, local_allowed):
    # A run's body, payload and outputs may be megabytes each: a page of deliveries read them with each delivery.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from flows.services.runs import flow_run_create

    run = flow_run_create(flow=make_flow(staff), user=staff, trigger="webhook", payload={"name": "Ada"})
    sub = subscription_create(user=staff, url=URL, events=["run.failed"])
    Delivery.objects.create(user=staff, subscription=sub, run=run, event="run.failed", url=URL, payload={}, status="failed")
    with CaptureQueriesContext(connection) as queries:
        listed = login(staff).get("/admin/webhooks/delivery/")
    assert listed.status_code == 200 and str(run.pk) in listed.content.decode()
    q = connection.ops.quote_name
    for column in ("body", "payload", "outputs", "request", "tweaks"):
        assert not [x["sql"] for x in queries if f"{q('flows_flowrun')}.{q(column)}" in x["sql"]], column
