"""Sending a delivery: signed with Standard Webhooks, each attempt recorded, retried with backoff, then failed."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from flows.models import Flow, FlowRun
from flows.services.execution import flow_run_execute
from tests.helpers import AlertReceiver, at_once, run_of
from webhooks.alerts.exceptions import DeliveryBeingSent
from webhooks.alerts.models import CallbackSecret, Delivery, RunCallback
from webhooks.alerts.services import sending
from webhooks.alerts.services.sending import delivery_retry_now, delivery_send
from webhooks.alerts.services.subscriptions import subscription_create
from webhooks.alerts.services.sweep import deliveries_send_due

_ring_later = sending._ring_later  # as it is, before the fixture below replaces it


@pytest.fixture(autouse=True)
def no_timers(monkeypatch):
    """The prompt re-send after a backoff is a timer of the worker's; here the tests send when they choose."""
    rung = []
    monkeypatch.setattr(sending, "_ring_later", lambda delivery_id, seconds: rung.append((delivery_id, seconds)))
    return rung


def test_backoff_timers_of_many_deliveries_share_one_thread(monkeypatch):
    """A receiver that fails every delivery gives each a backoff timer: thousands of them must not each hold a
    thread of the worker process, which every account's runs share."""
    import threading

    rung = threading.Event()
    monkeypatch.setattr(sending, "deliveries_enqueue", lambda *, delivery_ids: delivery_ids == ["soon"] and rung.set())
    before = threading.active_count()
    for number in range(300):
        _ring_later(f"far-{number}", 3600)
    _ring_later("soon", 0.05)
    assert threading.active_count() <= before + 1
    assert rung.wait(5)


def _delivery_of_a_run(flow, user, url, events=("run.succeeded",)):
    sub = subscription_create(user=user, url=url, events=list(events))
    run = run_of(flow, user)
    flow_run_execute(run_id=run.id)
    return sub, run, Delivery.objects.get(run=run)


def test_a_delivery_is_posted_signed_with_its_subscriptions_secret(flow, user, receiver):
    sub, run, delivery = _delivery_of_a_run(flow, user, receiver.url + "/hook")
    sent = delivery_send(delivery_id=delivery.pk)
    assert sent.status == "delivered" and sent.attempt_count == 1
    [body] = receiver.verified(sub.secret)
    assert body["type"] == "run.succeeded" and body["data"]["run_id"] == str(run.id)
    [request] = receiver.requests
    assert request["headers"]["webhook-id"] == delivery.webhook_id and request["path"] == "/hook"
    delivery.refresh_from_db()
    [attempt] = delivery.attempts
    assert attempt["status_code"] == 204 and attempt["error"] == "" and attempt["duration_ms"] >= 0
    assert delivery_send(delivery_id=delivery.pk) is None  # delivered: never sent again
    assert len(receiver.requests) == 1


def test_failures_retry_with_backoff_under_the_same_webhook_id_then_succeed(flow, user, local_allowed, no_timers, settings):
    settings.LANGRUN_ALERTS_BACKOFF = 10
    with AlertReceiver(fail_first=2) as receiver:
        sub, run, delivery = _delivery_of_a_run(flow, user, receiver.url)
        first = delivery_send(delivery_id=delivery.pk)
        assert first.status == "pending" and first.attempts[0]["status_code"] == 500 and first.attempts[0]["error"] == "HTTP 500"
        assert timedelta(seconds=9) < first.next_attempt_at - timezone.now() <= timedelta(seconds=10)
        assert delivery_send(delivery_id=delivery.pk) is None  # not due yet
        assert no_timers[0][0] == str(delivery.pk) and 9 < no_timers[0][1] <= 10
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        second = delivery_send(delivery_id=delivery.pk)
        assert second.status == "pending" and 19 < (second.next_attempt_at - timezone.now()).total_seconds() <= 20
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        assert delivery_send(delivery_id=delivery.pk).status == "delivered"
        assert len(receiver.requests) == 3 and len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
        assert [b["data"]["run_id"] for b in receiver.verified(sub.secret)] == [str(run.id)] * 3
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_an_endpoint_that_never_answers_times_out_and_fails_after_the_last_attempt(flow, user, local_allowed, settings):
    settings.LANGRUN_ALERTS_TIMEOUT = 0.3
    settings.LANGRUN_ALERTS_MAX_ATTEMPTS = 2
    with AlertReceiver() as receiver:
        _, run, delivery = _delivery_of_a_run(flow, user, receiver.url + "/hang")
        first = delivery_send(delivery_id=delivery.pk)
        assert first.status == "pending" and "Timeout" in first.attempts[0]["error"] and first.attempts[0]["duration_ms"] < 2000
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        last = delivery_send(delivery_id=delivery.pk)
    assert last.status == "failed" and last.finished_at and len(last.attempts) == 2 and last.next_attempt_at is None
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_the_send_refuses_a_private_address_the_guard_no_longer_allows(flow, user, receiver, settings):
    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = []
    sent = delivery_send(delivery_id=delivery.pk)
    assert sent.status == "pending" and "not a public address" in sent.attempts[0]["error"] and not receiver.requests


def test_the_sweep_rings_for_due_deliveries_only(flow, user, receiver, pushed_tasks):
    _, _, due = _delivery_of_a_run(flow, user, receiver.url)
    later = Delivery.objects.create(
        user=user, event="run.succeeded", url=receiver.url, payload={}, next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    pushed_tasks.clear()
    assert deliveries_send_due() == 1
    assert [t["args"] for t in pushed_tasks] == [(str(due.pk),)] and later.pk


def test_a_claimed_delivery_is_not_sent_twice_until_its_lease_ends(flow, user, receiver):
    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    assert sending.delivery_claim(delivery_id=delivery.pk) is not None
    assert sending.delivery_claim(delivery_id=delivery.pk) is None
    assert not Delivery.objects.due(now=timezone.now()).exists()
    assert Delivery.objects.due(now=timezone.now() + timedelta(seconds=60)).exists()  # its sender died: due again


def test_retry_now_sends_a_failed_delivery_again(flow, user, receiver, pushed_tasks, django_capture_on_commit_callbacks):
    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    Delivery.objects.filter(pk=delivery.pk).update(status="failed", attempt_count=5)
    pushed_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        again = delivery_retry_now(delivery=delivery)
    assert again.status == "pending" and [t["args"] for t in pushed_tasks] == [(str(delivery.pk),)]
    assert delivery_send(delivery_id=delivery.pk).status == "delivered"


def _failed(delivery, attempts=5):
    """The delivery as its last attempt left it: failed, every attempt recorded."""
    recorded = [
        {"number": n, "at": "2026-01-01T00:00:00Z", "status_code": 503, "error": "HTTP 503", "duration_ms": 1.0}
        for n in range(1, attempts + 1)
    ]
    Delivery.objects.filter(pk=delivery.pk).update(status="failed", attempt_count=attempts, attempts=recorded, next_attempt_at=None)


def test_a_retry_while_the_last_is_due_or_being_sent_is_refused_and_the_delivery_is_sent_once(
    flow, user, receiver, pushed_tasks, django_capture_on_commit_callbacks
):
    # A second "Retry now" (a double click, a second admin) reset the delivery while the first retry's send was under
    # way: a second sender took it and the receiver got it twice.
    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    _failed(delivery)
    pushed_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        delivery_retry_now(delivery=delivery)
        with pytest.raises(DeliveryBeingSent, match="already being sent"):  # its send is rung, not yet taken
            delivery_retry_now(delivery=delivery)
        assert sending.delivery_claim(delivery_id=delivery.pk) is not None  # the first retry's send, under way
        with pytest.raises(DeliveryBeingSent):
            delivery_retry_now(delivery=delivery)
    assert delivery_send(delivery_id=delivery.pk) is None  # nobody else may send it
    assert len(pushed_tasks) == 1 and receiver.requests == []


def test_a_retry_of_a_delivery_whose_sender_stopped_waits_out_its_lease_only(
    flow, user, receiver, pushed_tasks, django_capture_on_commit_callbacks, monkeypatch, settings
):
    # A sender that died mid-send leaves its claim unrecorded. Within the claim's lease it may still be sending, so a
    # retry is refused; past it nobody is, yet "Retry now" still answered 409 "already being sent" until the sweep came.
    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    assert sending.delivery_claim(delivery_id=delivery.pk) is not None  # ... and its sender stopped
    with pytest.raises(DeliveryBeingSent):
        delivery_retry_now(delivery=delivery)
    lease_over = timezone.now() + timedelta(seconds=settings.LANGRUN_ALERTS_TIMEOUT + sending.LEASE_MARGIN + 1)
    monkeypatch.setattr(timezone, "now", lambda: lease_over)
    pushed_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        again = delivery_retry_now(delivery=delivery)
        with pytest.raises(DeliveryBeingSent):  # a second click: the first retry's send is rung
            delivery_retry_now(delivery=delivery)
    assert again.status == "pending" and [t["args"] for t in pushed_tasks] == [(str(delivery.pk),)]
    assert again.attempts[-1]["number"] == 1 and "stopped" in again.attempts[-1]["error"]
    sent = delivery_send(delivery_id=delivery.pk)
    assert sent.status == "delivered" and [a["number"] for a in sent.attempts] == [1, 2] and len(receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_two_retries_at_once_send_the_delivery_once(flow, user, receiver, pushed_tasks):
    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    _failed(delivery)
    pushed_tasks.clear()
    seen = [Delivery.objects.get(pk=delivery.pk) for _ in range(2)]  # each request looked the delivery up, failed
    outcomes = at_once(*(lambda d=d: delivery_retry_now(delivery=d) for d in seen))
    assert sorted(type(o).__name__ for o in outcomes) == ["Delivery", "DeliveryBeingSent"] and len(pushed_tasks) == 1


def test_a_retried_failed_delivery_gets_a_new_round_of_attempts_numbered_on(flow, user, local_allowed, settings, pushed_tasks):
    settings.LANGRUN_ALERTS_MAX_ATTEMPTS = 2
    with AlertReceiver(fail_first=3) as receiver:
        _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
        assert delivery_send(delivery_id=delivery.pk).status == "pending"
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        assert delivery_send(delivery_id=delivery.pk).status == "failed"
        assert delivery_retry_now(delivery=delivery).status == "pending"
        third = delivery_send(delivery_id=delivery.pk)
        assert third.status == "pending" and third.next_attempt_at > timezone.now()  # the new round's first failure
        assert delivery_retry_now(delivery=delivery).next_attempt_at <= timezone.now()  # no waiting out its backoff
        last = delivery_send(delivery_id=delivery.pk)
    assert last.status == "delivered" and [a["number"] for a in last.attempts] == [1, 2, 3, 4] and len(receiver.requests) == 4


def test_retrying_a_delivery_deleted_meanwhile_is_not_found(flow, user, receiver):
    from django.http import Http404

    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    Delivery.objects.filter(pk=delivery.pk).delete()  # retention, or its run deleted, between the lookup and the retry
    with pytest.raises(Http404):
        delivery_retry_now(delivery=delivery)


def test_a_callback_is_signed_with_its_callers_callback_secret(flow, user, receiver):
    run = run_of(flow, user)
    FlowRun.objects.filter(pk=run.pk).update(request={"method": "POST", "headers": {}, "query": {"callback_url": "***"}})
    RunCallback.objects.create(run=run, url=receiver.url + "/cb?token=t")
    secret = CallbackSecret.objects.create(user=user, secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").secret
    flow_run_execute(run_id=run.id)
    delivery = Delivery.objects.get(run=run)
    assert delivery_send(delivery_id=delivery.pk).status == "delivered"
    [body] = receiver.verified(secret)
    assert body["data"]["status"] == "succeeded" and receiver.requests[0]["path"] == "/cb?token=t"


def test_an_email_subscription_is_mailed(flow, user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    subscription_create(user=user, email="ops@example.com", events=["run.succeeded"])
    run = run_of(flow, user)
    flow_run_execute(run_id=run.id)
    assert delivery_send(delivery_id=Delivery.objects.get().pk).status == "delivered"
    [message] = mail.outbox
    assert message.to == ["ops@example.com"] and "run.succeeded" in message.subject and str(run.id) in message.body


def test_an_email_alert_of_a_flow_whose_name_has_line_breaks_is_mailed_on_one_subject_line(flow, user, settings):
    """A flow's name may hold line breaks (the API and the admin store it as given): mail refuses them in a header, so
    every e-mail alert of such a flow failed, attempt after attempt."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Flow.objects.filter(pk=flow.pk).update(name="Orders\r\nBcc: someone@example.com\tnow")
    flow.refresh_from_db()
    subscription_create(user=user, email="ops@example.com", events=["run.succeeded"])
    run = run_of(flow, user)
    flow_run_execute(run_id=run.id)
    assert delivery_send(delivery_id=Delivery.objects.get().pk).status == "delivered"
    [message] = mail.outbox
    assert message.subject == "[langrun] run.succeeded: Orders Bcc: someone@example.com now"
    assert message.to == ["ops@example.com"] and not message.bcc


def test_a_delivery_whose_subscription_was_deleted_fails_at_once_without_a_request(flow, user, receiver):
    sub, _, delivery = _delivery_of_a_run(flow, user, receiver.url)
    sub.delete()
    sent = delivery_send(delivery_id=delivery.pk)
    assert sent.status == "failed" and sent.attempts[0]["error"] == "Its subscription was deleted." and not receiver.requests
    # As recorded, not only as returned: the record looked for the claim under a raised attempt count and wrote
    # nothing, so the sweep took it again each lease until its count reached the last attempt.
    stored = Delivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempt_count, stored.next_attempt_at) == ("failed", 1, None)
    assert [(a["number"], a["error"]) for a in stored.attempts] == [(1, "Its subscription was deleted.")]


@pytest.mark.django_db(transaction=True)
def test_in_a_worker_a_slow_receivers_delivery_is_sent_aside_and_its_task_returns_at_once(flow, user, local_allowed, monkeypatch):
    # The task sent the delivery itself: a receiver answering in 2 s held the worker 2 s per delivery, and one
    # account's slow receiver held every account's runs queued behind its deliveries.
    import time

    from flows.services import inflight
    from tests.helpers import SlowAPI
    from webhooks.alerts import tasks

    monkeypatch.setattr(inflight, "_in_worker", True)
    monkeypatch.setattr(sending, "_senders", None)  # this process's own senders, made on first use
    with SlowAPI(delay=1.0) as api:
        _, _, delivery = _delivery_of_a_run(flow, user, api.url + "/hook")
        started = time.monotonic()
        assert tasks.deliver(str(delivery.pk)) == "sending"
        assert time.monotonic() - started < 0.5
        assert Delivery.objects.get(pk=delivery.pk).status == "pending"
        deadline = time.monotonic() + 10
        while Delivery.objects.get(pk=delivery.pk).status == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
        delivery.refresh_from_db()
        assert delivery.status == "delivered" and api.answered == 1 and delivery.attempts[0]["duration_ms"] >= 1000
    sending._senders.shutdown(wait=True)


@pytest.mark.django_db(transaction=True)
def test_with_every_sender_busy_a_delivery_is_left_due_for_the_sweep(flow, user, local_allowed, monkeypatch, pushed_tasks):
    from flows.services import inflight
    from webhooks.alerts import tasks

    monkeypatch.setattr(inflight, "_in_worker", True)
    monkeypatch.setattr(sending, "_sends", sending.SENDERS + sending.WAITING_SENDS)
    with AlertReceiver() as receiver:
        _, _, delivery = _delivery_of_a_run(flow, user, receiver.url + "/hook")
        assert tasks.deliver(str(delivery.pk)) == "sending"
        delivery.refresh_from_db()
        assert delivery.status == "pending" and delivery.attempt_count == 0 and receiver.requests == []
        pushed_tasks.clear()
        assert deliveries_send_due() == 1 and [t["args"] for t in pushed_tasks] == [(str(delivery.pk),)]


def test_outside_a_worker_the_task_sends_the_delivery_itself(flow, user, receiver):
    from webhooks.alerts import tasks

    _, _, delivery = _delivery_of_a_run(flow, user, receiver.url + "/hook")
    assert tasks.deliver(str(delivery.pk)) == "delivered" and len(receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_a_delivery_no_sender_thread_can_take_is_left_due_for_the_sweep(flow, user, local_allowed, monkeypatch, pushed_tasks):
    from flows.services import inflight
    from webhooks.alerts import tasks

    class Stopping:  # a worker process that is stopping (or has no thread left) refuses new work
        def submit(self, *args):
            raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(inflight, "_in_worker", True)
    monkeypatch.setattr(sending, "_senders", Stopping())
    with AlertReceiver() as receiver:
        _, _, delivery = _delivery_of_a_run(flow, user, receiver.url + "/hook")
        assert tasks.deliver(str(delivery.pk)) == "sending"
        assert sending._sends == 0  # its place among the sends is given back
        delivery.refresh_from_db()
        assert delivery.status == "pending" and delivery.attempt_count == 0 and receiver.requests == []
        pushed_tasks.clear()
        assert deliveries_send_due() == 1 and [t["args"] for t in pushed_tasks] == [(str(delivery.pk),)]
