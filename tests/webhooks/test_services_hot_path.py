"""The webhook's accept path stays lean: what it costs in statements."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_create
from langrun.models import ApiKey
from langrun.services import api_key_create, api_key_usage_flush
from tests.helpers import post
from webhooks import services as webhook_services
from webhooks import targets


@pytest.fixture
def throttled_key_use(settings):
    settings.LANGRUN_API_KEY_USAGE_INTERVAL = 3600
    yield
    api_key_usage_flush()  # leave no counted use behind for the exit hook


@pytest.mark.parametrize("by", ["name", "id"])
def test_accepting_costs_one_lookup_and_one_insert_then_the_insert_alone(
    client, flow, user, by, throttled_key_use, django_assert_num_queries
):
    key = api_key_create(user=user).key
    target = flow.endpoint_name if by == "name" else flow.id
    assert post(client, target, HTTP_X_API_KEY=key).status_code == 202  # writes the key's first use
    targets._known_targets.clear()
    with django_assert_num_queries(2) as captured:  # key + owner + flow in one SELECT, then the run's INSERT
        assert post(client, target, HTTP_X_API_KEY=key).status_code == 202
    assert captured.captured_queries[0]["sql"].startswith("SELECT")
    assert captured.captured_queries[1]["sql"].startswith("INSERT")
    with django_assert_num_queries(1) as captured:  # the process knows key and flow: the INSERT checks they still hold
        assert post(client, target, HTTP_X_API_KEY=key).status_code == 202
    assert captured.captured_queries[0]["sql"].startswith("INSERT") and "EXISTS (SELECT" in captured.captured_queries[0]["sql"]
    assert FlowRun.objects.count() == 3


def test_each_accepted_webhook_counts_one_key_use(client, flow, user):
    new = api_key_create(user=user)
    for _ in range(3):
        assert post(client, flow.endpoint_name, HTTP_X_API_KEY=new.key).status_code == 202
    assert ApiKey.objects.get(pk=new.api_key.pk).use_count == 3


def test_inactive_owner_is_refused_like_an_invalid_key(client, flow, user):
    key = api_key_create(user=user).key
    user.is_active = False
    user.save()
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=key)
    assert (response.status_code, response.json()) == (403, {"detail": "Invalid API key"})
    assert not FlowRun.objects.exists()


def test_right_prefix_wrong_secret_is_refused(client, flow, api_key):
    wrong = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=wrong)
    assert (response.status_code, response.json()) == (403, {"detail": "Invalid API key"})
    assert post(client, flow.id, HTTP_X_API_KEY=wrong).status_code == 403
    assert not FlowRun.objects.exists()


def test_key_of_a_revoked_key_owner_with_another_active_key_is_refused(client, flow, user):
    revoked = api_key_create(user=user)
    ApiKey.objects.filter(pk=revoked.api_key.pk).update(is_active=False)
    api_key_create(user=user)  # the owner still has an active key: the join must not match through it
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=revoked.key).status_code == 403
    assert not FlowRun.objects.exists()


def test_executing_a_run_reads_it_once_and_writes_claim_and_result(flow, user):
    from webhooks.alerts.services.outbox import runs_wanting_events

    run = flow_run_create(flow=flow, user=user, trigger=FlowRun.Trigger.WEBHOOK, payload={"name": "Ada"})
    runs_wanting_events([run])  # who subscribed to alerts: read once per process every few seconds, not per run
    with CaptureQueriesContext(connection) as captured:
        assert flow_run_execute(run_id=run.id).status == FlowRun.Status.SUCCEEDED
    sent = [q["sql"].split(" times: ")[-1] for q in captured.captured_queries]  # executemany: "4 times: INSERT …"
    statements = [sql.split()[0] for sql in sent if not sql.startswith(("SAVEPOINT", "RELEASE"))]
    if connection.vendor == "postgresql":  # the claim (run, attempt, read), then the result (run, attempt, node results)
        assert statements == ["WITH", "WITH"]
    else:  # the same as statements of their own: the claim (run, attempt, read), the result (run, attempt, node results)
        assert statements == ["UPDATE", "INSERT", "SELECT", "UPDATE", "UPDATE", "INSERT"]
    assert FlowRun.objects.get(pk=run.id).outputs == {"greeting": "Hello Ada!"}


def test_the_prepared_insert_writes_every_field_as_the_orm_would(flow, user):
    from django.forms.models import model_to_dict

    payload = {"order": {"id": 7, "lines": [1.5, None, True]}, "note": "ünïcode"}
    run = flow_run_create(
        flow=flow, user=user, trigger=FlowRun.Trigger.WEBHOOK, payload=payload, body='{"x": 1}', content_type="application/json"
    )
    stored = FlowRun.objects.get(pk=run.pk)
    reference = FlowRun(
        flow=flow, user=user, trigger=FlowRun.Trigger.WEBHOOK, payload=payload, body='{"x": 1}', content_type="application/json"
    )
    reference.version = flow.current_version
    assert run._state.adding is False
    exclude = ["id", "received_at", "enqueued_at"]
    assert model_to_dict(stored, exclude=exclude) == model_to_dict(reference, exclude=exclude)
    assert (stored.status, stored.attempts, stored.worker, stored.error, stored.tweaks) == (FlowRun.Status.QUEUED, 0, "", "", None)
    assert stored.payload == payload and stored.version_id == flow.current_version_id
    assert stored.received_at == run.received_at and stored.enqueued_at == run.enqueued_at
    assert stored.received_at is not None and stored.enqueued_at is not None


def test_the_conditional_insert_writes_the_same_row_or_nothing(flow, user, django_capture_on_commit_callbacks):
    from django.forms.models import model_to_dict

    from flows.services.runs import RunConditionFailed

    payload = {"order": {"id": 7, "lines": [1.5, None, True]}, "note": "ünïcode", "n": 12345678901234567890}
    fields = dict(flow=flow, user=user, trigger=FlowRun.Trigger.WEBHOOK, payload=payload, body='{"x": 1}', content_type="text/plain; x=y")
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RunConditionFailed):
            flow_run_create(**fields, idempotency_key="k-1", only_if=("1 = %s", [2]))
    assert not FlowRun.objects.exists() and callbacks == []  # nothing written, nothing enqueued
    plain = flow_run_create(**fields)
    checked = flow_run_create(**fields, idempotency_key="k-1", only_if=("1 = %s", [1]))
    exclude = ["id", "received_at", "enqueued_at", "idempotency_key"]
    plain, checked = FlowRun.objects.get(pk=plain.pk), FlowRun.objects.get(pk=checked.pk)
    assert model_to_dict(checked, exclude=exclude) == model_to_dict(plain, exclude=exclude)
    assert (checked.payload, checked.idempotency_key, checked.replay_of_id, checked.tweaks) == (payload, "k-1", None, None)
    assert checked.received_at is not None and checked.version_id == flow.current_version_id


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_raised_as_it_is(key_client, flow, monkeypatch, settings, debug):
    # Not an API error: the server answers 500 and logs it; the exception itself must reach it, not one of DRF's own.
    settings.DEBUG = debug

    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(webhook_services, "webhook_payload_decode", boom)
    with pytest.raises(RuntimeError, match="boom"):
        post(key_client, flow.endpoint_name)
    assert FlowRun.objects.count() == 0
