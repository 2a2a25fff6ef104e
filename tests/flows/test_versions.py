"""Flow versions: recorded on graph changes only, pinned by runs, listed and restored through the API."""

import copy

import pytest

from flows.models import FlowRun, FlowVersion
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_update
from flows.services.runs import flow_run_create, flow_run_replay
from tests.helpers import GREETING_FLOW

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


def _with_template(template: str) -> dict:
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["params"]["template"] = template
    return data


def test_create_records_version_one_with_the_owner_as_author(flow, user):
    [v] = flow.versions.all()
    assert (v.number, v.data, v.author) == (1, GREETING_FLOW, user)


def test_graph_change_records_a_version_and_unchanged_saves_record_none(flow, user):
    flow_update(flow=flow, description="only the description")
    flow_update(flow=flow, data=copy.deepcopy(GREETING_FLOW))  # same graph, another dict
    assert flow.versions.count() == 1
    flow_update(flow=flow, data=_with_template("Hi {name}"), author=user, message="shorter")
    latest = flow.versions.first()
    assert (latest.number, latest.message, latest.author) == (2, "shorter", user)
    assert latest.data["nodes"][1]["params"]["template"] == "Hi {name}"


def test_invalid_graph_records_no_version(flow):
    with pytest.raises(Exception):  # noqa: B017 - GraphValidationError; what matters is that nothing was written
        flow_update(flow=flow, data={"nodes": [{"id": "x", "type": "Nope"}]})
    assert flow.versions.count() == 1


def test_queued_run_executes_the_version_it_was_accepted_against(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_update(flow=flow, data=_with_template("Bye {name}!"))
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.version.number == 1
    assert run.outputs == {"greeting": "Hello Ada!"}
    later = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_run_execute(run_id=later.id)
    later.refresh_from_db()
    assert (later.version.number, later.outputs) == (2, {"greeting": "Bye Ada!"})


def test_replay_runs_the_original_version_unless_asked_for_the_current(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_update(flow=flow, data=_with_template("Bye {name}!"))
    again = flow_run_replay(run=run, user=user)
    current = flow_run_replay(run=run, user=user, current_version=True)
    for r in (again, current):
        flow_run_execute(run_id=r.id)
        r.refresh_from_db()
    assert again.outputs == {"greeting": "Hello Ada!"} and again.version.number == 1
    assert current.outputs == {"greeting": "Bye Ada!"} and current.version.number == 2


def test_run_without_version_falls_back_to_the_flow_graph(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    FlowRun.objects.filter(pk=run.pk).update(version=None)
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.outputs == {"greeting": "Hello Ada!"}


def test_flow_changed_behind_the_services_back_gets_a_version_when_a_run_is_accepted(flow, user):
    type(flow).objects.filter(pk=flow.pk).update(data=_with_template("Yo {name}"))
    flow.refresh_from_db()
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    assert run.version.number == 2 and run.version.author is None


def test_versions_api_list_detail_restore(key_client, flow):
    flow_update(flow=flow, data=_with_template("Bye {name}!"), message="bye")
    base = f"/api/v1/flows/{flow.id}/versions/"
    listing = key_client.get(base)
    assert listing.status_code == 200
    assert [(v["number"], v["message"]) for v in listing.json()["results"]] == [(2, "bye"), (1, "")]
    assert "data" not in listing.json()["results"][0]
    one = key_client.get(f"{base}1")
    assert one.status_code == 200 and one.json()["data"] == GREETING_FLOW and one.json()["author"] == "alice"

    restored = key_client.post(f"{base}1/restore")
    assert restored.status_code == 200, restored.json()
    assert (restored.json()["number"], restored.json()["message"], restored.json()["data"]) == (3, "Restored version 1", GREETING_FLOW)
    flow.refresh_from_db()
    assert flow.data == GREETING_FLOW
    # Restoring what the flow already has records nothing.
    assert key_client.post(f"{base}3/restore").json()["number"] == 3
    assert flow.versions.count() == 3


def test_versions_api_patch_records_author(key_client, flow, user):
    response = key_client.patch(f"/api/v1/flows/{flow.id}", {"data": _with_template("Hey {name}")}, format="json")
    assert response.status_code == 200
    assert flow.versions.first().author == user and flow.versions.count() == 2


def test_versions_api_is_scoped_to_the_owner(key_client, make_user, make_flow):
    other = make_flow(make_user("bob"))
    assert key_client.get(f"/api/v1/flows/{other.id}/versions/").status_code == 404
    assert key_client.get(f"/api/v1/flows/{other.id}/versions/1").status_code == 404
    assert key_client.post(f"/api/v1/flows/{other.id}/versions/1/restore").status_code == 404
    assert other.versions.count() == 1


def test_versions_api_unknown_number_is_404(key_client, flow):
    assert key_client.get(f"/api/v1/flows/{flow.id}/versions/9").status_code == 404
    assert key_client.post(f"/api/v1/flows/{flow.id}/versions/9/restore").status_code == 404


def test_restore_of_a_graph_no_longer_valid_is_422(key_client, flow):
    FlowVersion.objects.create(flow=flow, number=2, data={"nodes": [{"id": "x", "type": "Gone"}]})
    response = key_client.post(f"/api/v1/flows/{flow.id}/versions/2/restore")
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "unknown_component"
    flow.refresh_from_db()
    assert flow.data == GREETING_FLOW


def test_run_detail_names_its_version(key_client, flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_update(flow=flow, data=_with_template("Bye {name}!"))
    assert key_client.get(f"/api/v1/runs/{run.id}").json()["version"] == 1
    FlowRun.objects.filter(pk=run.pk).update(version=None)
    assert key_client.get(f"/api/v1/runs/{run.id}").json()["version"] is None


def test_versions_list_with_or_without_trailing_slash(key_client, flow):
    with_slash = key_client.get(f"/api/v1/flows/{flow.id}/versions/")
    without = key_client.get(f"/api/v1/flows/{flow.id}/versions")
    assert with_slash.status_code == without.status_code == 200
    assert with_slash.json() == without.json() and with_slash.json()["count"] == 1
    assert key_client.get("/api/v1/flows/not-a-uuid/versions").status_code == 404
