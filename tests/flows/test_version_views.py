"""flows.version_views: a flow's versions listed and restored through the API."""

import pytest

from flows.models import FlowRun, FlowVersion
from flows.services.flows import flow_update
from flows.services.runs import flow_run_create
from tests.helpers import GREETING_FLOW, greeting_with_template

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


def test_versions_api_list_detail_restore(key_client, flow):
    flow_update(flow=flow, data=greeting_with_template("Bye {name}!"), message="bye")
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
    response = key_client.patch(f"/api/v1/flows/{flow.id}", {"data": greeting_with_template("Hey {name}")}, format="json")
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
    flow_update(flow=flow, data=greeting_with_template("Bye {name}!"))
    assert key_client.get(f"/api/v1/runs/{run.id}").json()["version"] == 1
    FlowRun.objects.filter(pk=run.pk).update(version=None)
    assert key_client.get(f"/api/v1/runs/{run.id}").json()["version"] is None


def test_versions_list_with_or_without_trailing_slash(key_client, flow):
    with_slash = key_client.get(f"/api/v1/flows/{flow.id}/versions/")
    without = key_client.get(f"/api/v1/flows/{flow.id}/versions")
    assert with_slash.status_code == without.status_code == 200
    assert with_slash.json() == without.json() and with_slash.json()["count"] == 1
    assert key_client.get("/api/v1/flows/not-a-uuid/versions").status_code == 404
