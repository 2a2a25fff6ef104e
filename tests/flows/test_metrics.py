"""GET /metrics: access modes, and counts derived from the database."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from flows import tasks
from flows.models import FlowRun, NodeResult
from flows.retention import runs_prune
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_cancel, flow_run_create


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_are_off_by_default(client, settings):
    settings.LANGRUN_METRICS = "off"
    assert client.get("/metrics").status_code == 404


def test_metrics_with_a_bearer_token(client, settings, db):
    settings.LANGRUN_METRICS = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-token").status_code == 401
    assert scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token") is not None


@pytest.fixture
def open_metrics(settings):
    settings.LANGRUN_METRICS = "open"


def _run(flow, user, payload, *, execute=True):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload=payload)
    if execute:
        flow_run_execute(run_id=run.id)
    return run


def test_run_counters_follow_the_ledger(client, open_metrics, flow, user):
    for _ in range(3):
        _run(flow, user, {"name": "Ada"})
    _run(flow, user, {"nom": "no name"})  # the template fails: a missing key
    _run(flow, user, {"name": "later"}, execute=False)
    flow_run_cancel(run=_run(flow, user, {"name": "x"}, execute=False))
    m = scrape(client)
    f = str(flow.id)
    assert m[("langrun_runs_accepted_total", (("flow", f),))] == 6
    assert m[("langrun_runs_finished_total", (("flow", f), ("status", "succeeded")))] == 3
    assert m[("langrun_runs_finished_total", (("flow", f), ("status", "failed")))] == 1
    assert m[("langrun_runs_finished_total", (("flow", f), ("status", "cancelled")))] == 1
    assert m[("langrun_webhooks_received_total", (("code", "202"),))] == 6
    assert m[("langrun_queue_depth", ())] == 1
    assert m[("langrun_run_duration_seconds_count", ())] == 4
    assert m[("langrun_run_queue_wait_seconds_count", ())] == 4
    assert m[("langrun_node_duration_seconds_count", (("component", "Webhook"),))] == 4
    assert m[("langrun_node_duration_seconds_count", (("component", "Template"),))] == 4
    assert m[("langrun_node_duration_seconds_count", (("component", "Output"),))] == 3  # skipped after the failure


def test_histogram_buckets(client, open_metrics, flow, user):
    now = timezone.now()
    for seconds in (0.07, 3, 400):
        run = _run(flow, user, {"name": "Ada"})
        FlowRun.objects.filter(pk=run.pk).update(
            received_at=now, started_at=now + timedelta(seconds=1), finished_at=now + timedelta(seconds=1 + seconds)
        )
    NodeResult.objects.filter(component_type="Template").update(duration_ms=2.0)
    m = scrape(client)
    bucket = {le: m[("langrun_run_duration_seconds_bucket", (("le", le),))] for le in ("0.05", "0.1", "5.0", "300.0", "+Inf")}
    assert bucket == {"0.05": 0, "0.1": 1, "5.0": 2, "300.0": 2, "+Inf": 3}
    assert m[("langrun_run_duration_seconds_sum", ())] == pytest.approx(403.07)
    assert m[("langrun_run_queue_wait_seconds_bucket", (("le", "1.0"),))] == 3
    assert m[("langrun_run_queue_wait_seconds_bucket", (("le", "0.5"),))] == 0
    assert m[("langrun_node_duration_seconds_bucket", (("component", "Template"), ("le", "0.001")))] == 0
    assert m[("langrun_node_duration_seconds_bucket", (("component", "Template"), ("le", "0.005")))] == 3


def test_rejected_webhooks_are_counted_by_status_code(client, open_metrics, flow, api_key):
    client.post("/api/v1/webhook/greet", {"name": "Ada"}, format="json")  # no key: 403
    client.post("/api/v1/webhook/greet", {"name": "Ada"}, format="json", HTTP_X_API_KEY="sk-wrong")
    client.post("/api/v1/webhook/nope", {"name": "Ada"}, format="json", HTTP_X_API_KEY=api_key)
    assert client.post("/api/v1/webhook/greet", {"name": "Ada"}, format="json", HTTP_X_API_KEY=api_key).status_code == 202
    m = scrape(client)
    assert m[("langrun_webhooks_received_total", (("code", "403"),))] == 2
    assert m[("langrun_webhooks_received_total", (("code", "404"),))] == 1
    assert m[("langrun_webhooks_received_total", (("code", "202"),))] == 1


def test_sweep_counts_recovered_runs_and_beats(client, open_metrics, flow, user, settings):
    settings.LANGRUN_REQUEUE_AFTER = 60
    now = timezone.now()
    lost = _run(flow, user, {"name": "Ada"}, execute=False)  # a doorbell rung again: not a recovery
    FlowRun.objects.filter(pk=lost.pk).update(enqueued_at=now - timedelta(minutes=5))
    retry = _run(flow, user, {"name": "Bo"}, execute=False)  # an ordinary retry whose backoff passed: not one either
    FlowRun.objects.filter(pk=retry.pk).update(
        attempts=1, enqueued_at=now - timedelta(minutes=2), next_attempt_at=now - timedelta(minutes=1)
    )
    interrupted = _run(flow, user, {"name": "Cy"}, execute=False)  # running past its lease: the sweep recovers it
    FlowRun.objects.filter(pk=interrupted.pk).update(status="running", attempts=1, started_at=now - timedelta(days=1))
    counts = tasks.sweep()
    assert (counts["recovered"], counts["retried"], counts["requeued"]) == (1, 1, 1)
    m = scrape(client)
    assert m[("langrun_runs_recovered_total", ())] == 1
    assert timezone.now().timestamp() - m[("langrun_sweep_last_run_timestamp_seconds", ())] < 60


def test_counters_do_not_go_down_when_retention_deletes_runs(client, open_metrics, flow, user):
    for payload in ({"name": "Ada"}, {"name": "Bob"}, {"x": 1}):
        _run(flow, user, payload)
    before = scrape(client)
    ago = timedelta(days=400)
    FlowRun.objects.update(received_at=F("received_at") - ago, started_at=F("started_at") - ago, finished_at=F("finished_at") - ago)
    result = runs_prune(batch=2)
    assert (result.succeeded_runs, result.failed_runs) == (2, 1)
    assert FlowRun.objects.count() == 0
    after = scrape(client)
    for key, value in before.items():
        if key[0].endswith(("_total", "_count", "_bucket")):
            assert after.get(key) == value, key
