"""The runs API: list with filters and pagination, one run, replay, cancel."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from flows.models import FlowRun, RunAttempt
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_create
from flows.services.variables import variable_create
from langrun.services import api_key_create


def make_run(flow, *, trigger="webhook", payload=None, status=None, received_at=None):
    run = flow_run_create(flow=flow, user=flow.user, trigger=trigger, payload=payload or {"name": "Ada"})
    fields = {}
    if status:
        fields["status"] = status
    if received_at:
        fields["received_at"] = received_at
    if fields:
        FlowRun.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


@pytest.fixture
def other_client(make_user):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key_create(user=make_user("mallory")).key)
    return c


def test_list_is_newest_first_paginated_and_without_node_queries(key_client, flow, django_assert_max_num_queries):
    now = timezone.now()
    runs = [make_run(flow, received_at=now - timedelta(minutes=i)) for i in range(5)]
    flow_run_execute(run_id=runs[0].id)
    with django_assert_max_num_queries(5):  # key lookup, key use, count, the page's output sizes, page
        page = key_client.get("/api/v1/runs/?limit=2").json()
    assert page["count"] == 5 and [r["id"] for r in page["results"]] == [str(r.id) for r in runs[:2]]
    assert "nodes" not in page["results"][0] and page["results"][0]["status"] == "succeeded"
    assert page["next"].endswith("limit=2&offset=2")
    rest = key_client.get("/api/v1/runs/?limit=2&offset=4").json()
    assert [r["id"] for r in rest["results"]] == [str(runs[4].id)] and rest["next"] is None


def test_filters(key_client, flow, make_flow, user):
    second = make_flow(user, endpoint_name="second")
    now = timezone.now()
    old = make_run(flow, received_at=now - timedelta(days=2))
    failed = make_run(flow, status="failed", trigger="api")
    other_flow = make_run(second)

    def ids(query):
        response = key_client.get(f"/api/v1/runs/?{query}")
        assert response.status_code == 200, response.content
        return {r["id"] for r in response.json()["results"]}

    assert ids(f"flow={second.id}") == {str(other_flow.id)}
    assert ids("status=failed") == {str(failed.id)}
    assert ids("trigger=api") == {str(failed.id)}
    day_ago = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"received_before={day_ago}") == {str(old.id)}
    assert ids(f"received_after={day_ago}") == {str(failed.id), str(other_flow.id)}


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("status=exploded", "status"),
        ("trigger=cron", "trigger"),
        ("flow=not-a-uuid", "flow"),
        ("received_after=yesterday", "received_after"),
    ],
)
def test_bad_filters_are_422_located_in_the_query(key_client, flow, query, loc):
    response = key_client.get(f"/api/v1/runs/?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", loc]


def test_other_users_runs_are_invisible(key_client, other_client, flow):
    run = make_run(flow)
    assert other_client.get("/api/v1/runs/").json()["count"] == 0
    for method, path in [
        ("get", f"/api/v1/runs/{run.id}"),
        ("post", f"/api/v1/runs/{run.id}/replay"),
        ("post", f"/api/v1/runs/{run.id}/cancel"),
    ]:
        response = getattr(other_client, method)(path)
        assert response.status_code == 404 and response.json() == {"detail": "No FlowRun matches the given query."}
    run.refresh_from_db()
    assert run.status == "queued" and FlowRun.objects.count() == 1


def test_needs_authentication(client, flow):
    for path in ["/api/v1/runs/", f"/api/v1/runs/{make_run(flow).id}"]:
        response = client.get(path)
        assert response.status_code == 403 and isinstance(response.json()["detail"], str)


def test_replay_creates_a_linked_run(key_client, flow):
    original = make_run(flow, payload={"name": "Bo"})
    flow_run_execute(run_id=original.id)
    response = key_client.post(f"/api/v1/runs/{original.id}/replay")
    assert response.status_code == 201
    body = response.json()
    assert body["replay_of"] == str(original.id) and body["trigger"] == "replay" and body["status"] == "queued"
    assert response["Location"].endswith(f"/api/v1/runs/{body['id']}")
    assert FlowRun.objects.get(pk=body["id"]).payload == {"name": "Bo"}


def test_replay_of_a_run_whose_payload_was_pruned_is_a_409(key_client, flow):
    original = make_run(flow)
    FlowRun.objects.filter(pk=original.pk).update(payload=None, body="", payload_pruned_at=timezone.now())
    response = key_client.post(f"/api/v1/runs/{original.id}/replay")
    assert response.status_code == 409, response.content
    assert "deleted by retention" in response.json()["detail"] and "cannot be replayed" in response.json()["detail"]
    assert FlowRun.objects.count() == 1


def test_replay_whose_tweaks_name_a_variable_deleted_since_is_a_422_naming_it(key_client, flow, user):
    variable = variable_create(user=user, name="GREETING", value="Hi {name}!", kind="generic")
    original = flow_run_create(
        flow=flow, user=user, trigger="api", payload={"name": "Ada"}, tweaks={"greet": {"template": {"variable": "GREETING"}}}
    )
    variable.delete()
    response = key_client.post(f"/api/v1/runs/{original.id}/replay")
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"] == ["tweaks", "greet", "template"] and error["type"] == "variable_missing"
    assert "'GREETING' does not exist" in error["msg"]
    assert FlowRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the replay's foreign key to its original is checked at the commit
@pytest.mark.parametrize("deleted", ["run", "flow"])
def test_replay_of_a_run_deleted_after_its_lookup_is_a_404(key_client, flow, monkeypatch, deleted):
    from flows.models import Flow
    from flows.views import FlowRunViewSet
    from tests.helpers import deleted_after_lookup

    original = make_run(flow)
    if deleted == "flow":
        lookup = FlowRunViewSet.get_object

        def flow_deleted_after_lookup(view):
            found = lookup(view)
            Flow.objects.filter(pk=found.flow_id).delete()
            return found

        monkeypatch.setattr(FlowRunViewSet, "get_object", flow_deleted_after_lookup)
    else:
        deleted_after_lookup(monkeypatch, FlowRunViewSet)  # retention, or a bulk delete of the flow's runs
    response = key_client.post(f"/api/v1/runs/{original.id}/replay")
    assert response.status_code == 404, response.content
    assert not FlowRun.objects.exists()


def test_cancel_only_while_queued_or_running(key_client, flow):
    run = make_run(flow)
    response = key_client.post(f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = key_client.post(f"/api/v1/runs/{run.id}/cancel")
    assert again.status_code == 409 and "only a queued or running run" in again.json()["detail"]


def test_cancel_a_running_run(key_client, flow):
    run = make_run(flow)
    FlowRun.objects.filter(pk=run.pk).update(status="running", attempts=1)
    RunAttempt.objects.create(run=run, number=1, started_at=run.received_at)
    response = key_client.post(f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["error"]) == ("cancelled", "Cancelled while running.")
    assert RunAttempt.objects.get(run=run).outcome == "cancelled"
    assert key_client.post(f"/api/v1/runs/{run.id}/cancel").status_code == 409


def test_methods_not_allowed_carry_allow(key_client, flow):
    run = make_run(flow)
    response = key_client.delete(f"/api/v1/runs/{run.id}")
    assert response.status_code == 405 and "GET" in response["Allow"] and isinstance(response.json()["detail"], str)
    assert key_client.get(f"/api/v1/runs/{run.id}/cancel").status_code == 405


@pytest.mark.parametrize(
    "value",
    ["0334-12-27T13:34:09+18:46", "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "2026-02-30T00:00:00Z"],
)
def test_odd_dates_are_a_422_or_an_answer_never_a_500(key_client, flow, value):
    response = key_client.get("/api/v1/runs/", {"received_before": value})
    assert response.status_code in (200, 422), response.content
    if response.status_code == 422:
        assert response.json()["detail"][0]["loc"] == ["query", "received_before"]


def test_a_page_of_runs_ends_once_their_outputs_pass_the_run_output_cap(key_client, flow, settings):
    # Each run's outputs may be up to LANGRUN_MAX_RUN_OUTPUT_BYTES: a page of 1,000 such runs was 1,000 times that,
    # read and rendered in one web process. A page ends at the cap (with one run at least); `next` goes on from there.
    now = timezone.now()
    runs = [make_run(flow, received_at=now - timedelta(minutes=n)) for n in range(4)]
    for run, size in zip(runs, (300, 300, 990, 10), strict=True):
        FlowRun.objects.filter(pk=run.pk).update(outputs={"text": "x" * size})
    settings.LANGRUN_MAX_RUN_OUTPUT_BYTES = 1000
    first = key_client.get("/api/v1/runs/?limit=3").json()
    assert [r["id"] for r in first["results"]] == [str(runs[0].id), str(runs[1].id)] and first["count"] == 4
    assert "limit=3" in first["next"] and "offset=2" in first["next"]
    second = key_client.get(first["next"]).json()
    assert [r["id"] for r in second["results"]] == [str(runs[2].id)]  # alone over the cap, still listed
    third = key_client.get(second["next"]).json()
    assert [r["id"] for r in third["results"]] == [str(runs[3].id)] and third["next"] is None
