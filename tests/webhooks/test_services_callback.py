"""`?callback_url=` on the webhook: checked by the outbound address guard at intake, recorded with the run, masked."""

from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from webhooks.alerts.models import CallbackSecret, Delivery, RunCallback


def _post(client, query, **extra):
    return client.post(f"/api/v1/webhook/greet?{query}", b'{"name": "Ada"}', content_type="application/json", **extra)


def test_a_callback_url_the_guard_refuses_is_a_422_and_nothing_is_stored(client, flow, api_key):
    for url in ("http://127.0.0.1:9/cb", "http://169.254.169.254/latest", "ftp://example.com/x"):
        answer = _post(client, f"callback_url={url}", HTTP_X_API_KEY=api_key)
        assert answer.status_code == 422, url
        [error] = answer.json()["detail"]
        assert error["loc"] == ["query", "callback_url"] and error["msg"] and error["type"]
    assert not FlowRun.objects.exists()


def test_without_credentials_the_callback_is_not_even_looked_at(client, flow):
    assert _post(client, "callback_url=http://127.0.0.1:9/cb").status_code == 403


def test_an_allowed_callback_is_recorded_with_the_run_masked_and_gets_the_runs_end(client, flow, user, api_key, local_allowed):
    url = "http://127.0.0.1:9/cb?token=s3cret"
    answer = _post(client, "callback_url=http%3A%2F%2F127.0.0.1%3A9%2Fcb%3Ftoken%3Ds3cret&tag=x", HTTP_X_API_KEY=api_key)
    assert answer.status_code == 202, answer.json()
    run = FlowRun.objects.get()
    assert RunCallback.objects.get(run=run).url == url
    assert run.request["query"] == {"callback_url": "***", "tag": "x"} and "s3cret" not in str(run.request)
    assert CallbackSecret.objects.filter(user=user).exists()  # made on first use
    flow_run_execute(run_id=run.id)
    [delivery] = Delivery.objects.all()
    assert (delivery.kind, delivery.url, delivery.event) == ("callback", url, "run.succeeded")
    assert delivery.payload["data"]["status_url"].endswith(f"/api/v1/runs/{run.id}")


def test_a_run_without_a_callback_gets_none(client, flow, api_key, local_allowed):
    assert _post(client, "tag=x", HTTP_X_API_KEY=api_key).status_code == 202
    flow_run_execute(run_id=FlowRun.objects.get().id)
    assert not Delivery.objects.exists()
