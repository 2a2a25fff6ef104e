"""The webhook's `?wait=<seconds>`: answer with the finished run, or the usual 202 when it takes longer."""

import time

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from flows.models import FlowRun


def post(client, query=""):
    return client.post(f"/api/v1/webhook/greet{query}", {"name": "Ada"}, format="json")


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "1e999", "1_0", "+5", "%203", "1e1", "1&wait=2"])
def test_bad_wait_is_422_and_stores_nothing(key_client, flow, raw):
    response = post(key_client, f"?wait={raw}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "wait"]
    assert not FlowRun.objects.exists()


@pytest.mark.parametrize(
    "query",
    [
        "?user_id=00000000-0000-0000-0000-000000000001&user_id=00000000-0000-0000-0000-000000000002",
        "?callback_url=https://a.example/&callback_url=https://b.example/",
    ],
)
def test_a_parameter_of_the_webhooks_own_given_twice_is_422(key_client, flow, query):
    response = post(key_client, query)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["query", query[1:].split("=")[0]] and not FlowRun.objects.exists()


def test_run_not_finished_within_the_wait_is_the_usual_202(key_client, flow):
    # No worker runs in this test: the run stays queued.
    started = time.monotonic()
    response = post(key_client, "?wait=0.3")
    assert 0.3 <= time.monotonic() - started < 3
    assert response.status_code == 202 and response.json()["status"] == "in progress"


def test_wait_is_capped_by_the_setting(key_client, flow, settings):
    settings.LANGRUN_WEBHOOK_MAX_WAIT = 0.2
    started = time.monotonic()
    assert post(key_client, "?wait=600").status_code == 202
    assert time.monotonic() - started < 3


def test_wait_zero_or_empty_does_not_wait(key_client, flow):
    for query in ["?wait=0", "?wait="]:
        started = time.monotonic()
        assert post(key_client, query).status_code == 202
        assert time.monotonic() - started < 1


def test_a_caller_past_its_share_of_waits_is_answered_at_once(key_client, flow, user, make_user, settings):
    from langrun.waits import wait_slot

    settings.LANGRUN_WAITS_PER_USER = 1
    with wait_slot(owner=str(user.pk)) as held:  # another request of this account is waiting
        assert held
        started = time.monotonic()
        response = post(key_client, "?wait=10")
        assert time.monotonic() - started < 2
    assert response.status_code == 202 and response.json()["status"] == "in progress"
    assert FlowRun.objects.get(pk=response.json()["run_id"]).status == "queued"  # accepted, for the worker
    # Once the slot is free, the next caller waits as asked.
    started = time.monotonic()
    assert post(key_client, "?wait=0.3").status_code == 202
    assert time.monotonic() - started >= 0.3


# --- Counted once, under the code answered ------------------------------------------


def _webhook_counts(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    counts = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            if sample.name == "langrun_webhooks_received_total" and sample.value:
                counts[sample.labels["code"]] = sample.value
    return counts


def test_a_waited_webhook_answered_200_is_counted_as_a_200_only(key_client, flow, settings, runs_during_the_wait):
    settings.LANGRUN_METRICS = "open"
    response = post(key_client, "?wait=5")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert _webhook_counts(key_client) == {"200": 1}
    assert post(key_client).status_code == 202
    assert _webhook_counts(key_client) == {"200": 1, "202": 1}


def test_a_waited_webhook_answered_202_is_counted_once(key_client, flow, settings):
    settings.LANGRUN_METRICS = "open"
    assert post(key_client, "?wait=0.05").status_code == 202
    assert post(key_client, "?wait=0").status_code == 202
    assert _webhook_counts(key_client) == {"202": 2}


def test_a_replayed_delivery_is_counted(key_client, flow, settings, runs_during_the_wait):
    settings.LANGRUN_METRICS = "open"
    for query, code in [("", 202), ("", 202), ("?wait=5", 200)]:
        response = key_client.post(f"/api/v1/webhook/greet{query}", {"name": "Ada"}, format="json", HTTP_IDEMPOTENCY_KEY="d-1")
        assert response.status_code == code
    assert FlowRun.objects.count() == 1
    assert _webhook_counts(key_client) == {"202": 2, "200": 1}


def test_a_waited_run_shows_node_tracebacks_to_a_staff_key_only(key_client, user, flow, runs_during_the_wait, monkeypatch):
    # As GET /api/v1/runs/{id} does: where the code failed is for staff.
    from flows.engine.components.core import Template

    def boom(self, **values):
        raise RuntimeError("kaput")

    monkeypatch.setattr(Template, "run", boom)
    nodes = post(key_client, "?wait=5").json()["nodes"]
    assert all("traceback" not in node for node in nodes)
    user.is_staff = True
    user.save()
    response = post(key_client, "?wait=5")
    assert response.status_code == 200
    run_id = response.json()["id"]
    assert "kaput" in next(node for node in response.json()["nodes"] if node["status"] == "failed")["traceback"]
    assert response.json()["nodes"] == key_client.get(f"/api/v1/runs/{run_id}").json()["nodes"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps the delete and the run apart")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", ["?wait=1", "?callback_url=http://127.0.0.1:9/cb"])
def test_a_waited_webhook_whose_flow_is_deleted_while_its_run_is_recorded_is_a_404(key_client, flow, local_allowed, query):
    # Its run is recorded in a transaction with what the wait or the callback adds: the run's foreign key broke when
    # that transaction committed, after the flow was deleted, and the webhook answered 500.
    from tests.helpers import FlowDeletedMeanwhile

    assert post(key_client).status_code == 202  # the process now remembers the key and the flow
    with FlowDeletedMeanwhile(flow, hold=0.5):  # the run's commit waits for the flow meanwhile
        answer = post(key_client, query)
    assert answer.status_code == 404, answer.content
    assert not FlowRun.objects.exists()
