"""Alerts through real processes: gunicorn takes the subscription and the webhooks, a qcluster runs the flows and
sends the deliveries to a local receiver that fails twice before it answers."""

import time

import pytest
import requests

import tests.components  # noqa: F401 - registers the test components
from flows.models import FlowRun
from flows.services.flows import flow_create
from tests.e2e.helpers import wait_for_runs
from tests.helpers import AlertReceiver, flaky_flow
from webhooks.alerts.models import Delivery

pytestmark = pytest.mark.e2e


def test_each_event_is_delivered_once_signed_after_two_failures(service, setup_flow, tmp_path):
    flow, key = setup_flow
    flow_create(user=flow.user, name="Failing", endpoint_name="failing", data=flaky_flow(tmp_path / "calls", 1000, retryable=False))
    service.env.update(LANGRUN_HTTP_ALLOWED_HOSTS="127.0.0.1", LANGRUN_ALERTS_BACKOFF="0.5", LANGRUN_ALERTS_TIMEOUT="3")
    service.stop()
    service.start_web()  # again, with the settings above
    service.start_cluster()
    headers = {"x-api-key": key}
    with AlertReceiver(fail_first=2) as receiver:
        created = requests.post(
            f"{service.url}/api/v1/subscriptions",
            json={"url": f"{receiver.url}/hooks", "events": ["run.succeeded", "run.failed", "run.retries_exhausted"]},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        callback_secret = requests.post(f"{service.url}/api/v1/callback-secret", headers=headers, timeout=10).json()["secret"]
        refused = requests.post(
            f"{service.url}/api/v1/webhook/greet?callback_url=http://10.0.0.1/x", json={"name": "Ada"}, headers=headers, timeout=10
        )
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "callback_url"]
        ok = requests.post(
            f"{service.url}/api/v1/webhook/greet",
            params={"callback_url": f"{receiver.url}/callback"},
            json={"name": "Ada"},
            headers=headers,
            timeout=10,
        )
        bad = requests.post(f"{service.url}/api/v1/webhook/failing", json={"name": "Bob"}, headers=headers, timeout=10)
        assert (ok.status_code, bad.status_code) == (202, 202), (ok.text, bad.text)
        run_ids = [ok.json()["run_id"], bad.json()["run_id"]]
        assert wait_for_runs(run_ids) == {"succeeded": 1, "failed": 1}, service.log("cluster")

        # Three events: the subscription's run.succeeded and run.failed, and the callback's run.succeeded.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            Delivery.objects.count() == 3 and not Delivery.objects.exclude(status="delivered").exists()
        ):
            time.sleep(0.2)
        time.sleep(1.5)  # a duplicate would arrive by now
        deliveries = list(Delivery.objects.all())
        assert [d.status for d in deliveries] == ["delivered"] * 3, (
            list(Delivery.objects.values("status", "attempts")),
            service.log("cluster"),
        )
        assert all(d.attempt_count == 3 and [a["status_code"] for a in d.attempts] == [500, 500, 204] for d in deliveries)
        answered = [r for r in receiver.requests if receiver.seen[r["headers"]["webhook-id"]] >= 3]
        assert len(receiver.requests) == 9 and len(receiver.seen) == 3 and all(n == 3 for n in receiver.seen.values())
        hooks = [r for r in answered if r["path"] == "/hooks"]
        callbacks = [r for r in answered if r["path"] == "/callback"]
        import standardwebhooks

        events = sorted(
            (body["type"], body["data"]["run_id"])
            for body in (standardwebhooks.Webhook(secret).verify(r["body"], r["headers"]) for r in hooks)
        )
        assert sorted(set(events)) == sorted([("run.succeeded", run_ids[0]), ("run.failed", run_ids[1])])
        called = {standardwebhooks.Webhook(callback_secret).verify(r["body"], r["headers"])["data"]["run_id"] for r in callbacks}
        assert called == {run_ids[0]}
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(callbacks[0]["body"], callbacks[0]["headers"])
    assert sorted(FlowRun.objects.filter(pk__in=run_ids).values_list("status", flat=True)) == ["failed", "succeeded"]
    listed = requests.get(f"{service.url}/api/v1/deliveries", params={"status": "delivered"}, headers=headers, timeout=10).json()
    assert listed["count"] == 3 and all(len(d["attempts"]) == 3 for d in listed["results"])
