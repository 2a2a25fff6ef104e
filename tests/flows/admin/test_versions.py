"""flows.admin.versions: a flow's version history and a readable diff between two versions."""

import copy

import pytest
from django.test import Client

from flows.services.flows import flow_update
from tests.helpers import GREETING_FLOW, grant, login


@pytest.fixture
def admin_client(make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    c = Client()
    c.force_login(admin)
    return c


def test_history_list_and_diff(admin_client, flow):
    changed = copy.deepcopy(GREETING_FLOW)
    changed["nodes"][1]["params"]["template"] = "Goodbye {name}!"
    flow_update(flow=flow, data=changed, message="say goodbye")

    listing = admin_client.get(f"/admin/flows/flowversion/?flow__id__exact={flow.id}")
    assert listing.status_code == 200
    assert "say goodbye" in listing.content.decode() and f"/admin/flows/flowversion/compare/{flow.id}/" in listing.content.decode()

    page = admin_client.get(f"/admin/flows/flowversion/compare/{flow.id}/?a=1&b=2").content.decode()
    assert '<span class="del">-        &quot;template&quot;: &quot;Hello {name}!&quot;</span>' in page
    assert '<span class="add">+        &quot;template&quot;: &quot;Goodbye {name}!&quot;</span>' in page
    default = admin_client.get(f"/admin/flows/flowversion/compare/{flow.id}/").content.decode()
    assert "Changes from v1 to v2" in default

    detail = admin_client.get(f"/admin/flows/flowversion/{flow.versions.first().pk}/change/")
    assert detail.status_code == 200 and "Goodbye {name}!" in detail.content.decode()


def test_versions_are_read_only_in_the_admin(admin_client, flow):
    version = flow.versions.first()
    assert admin_client.get("/admin/flows/flowversion/add/").status_code == 403
    admin_client.post(f"/admin/flows/flowversion/{version.pk}/change/", {"message": "rewritten"})
    version.refresh_from_db()
    assert version.message == ""
    assert admin_client.get(f"/admin/flows/flowversion/{version.pk}/delete/").status_code == 403


def test_compare_view_needs_staff(client, flow):
    response = client.get(f"/admin/flows/flowversion/compare/{flow.id}/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_compare_of_another_users_flow_is_404_whatever_the_permissions(bare_staff, other, make_flow):
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["params"]["template"] = "their secret words {name}"
    theirs = make_flow(other, data=data)
    c = login(bare_staff)
    assert c.get(f"/admin/flows/flowversion/compare/{theirs.id}/").status_code == 404
    grant(bare_staff, "flows.view_flowversion")
    c = login(bare_staff)
    response = c.get(f"/admin/flows/flowversion/compare/{theirs.id}/")
    assert response.status_code == 404 and b"their secret words" not in response.content


def test_compare_and_history_need_the_view_permission(bare_staff, make_flow):
    mine = make_flow(bare_staff)
    c = login(bare_staff)
    assert c.get(f"/admin/flows/flowversion/compare/{mine.id}/").status_code == 403
    assert c.get("/admin/flows/flowversion/").status_code == 403
    assert c.get(f"/admin/flows/flowversion/{mine.versions.first().pk}/change/").status_code == 403
    grant(bare_staff, "flows.view_flowversion")
    c = login(bare_staff)
    assert c.get(f"/admin/flows/flowversion/compare/{mine.id}/").status_code == 200
    assert c.get(f"/admin/flows/flowversion/{mine.versions.first().pk}/change/").status_code == 200


def test_the_history_lists_only_ones_own_versions(bare_staff, other, superuser, make_flow):
    mine, theirs = make_flow(bare_staff, name="Mine"), make_flow(other, name="Theirs")
    grant(bare_staff, "flows.view_flowversion")
    listing = login(bare_staff).get("/admin/flows/flowversion/")
    assert [v.flow_id for v in listing.context["cl"].result_list] == [mine.id]
    assert "Theirs" not in listing.content.decode()  # nor in the flow filter
    assert login(bare_staff).get(f"/admin/flows/flowversion/{theirs.versions.first().pk}/change/").status_code == 404
    everyone = login(superuser).get("/admin/flows/flowversion/")
    assert {v.flow_id for v in everyone.context["cl"].result_list} == {mine.id, theirs.id}


def test_history_list_and_comparison_read_only_the_graphs_compared(admin_client, flow):
    # Graphs are up to a megabyte each: the list read every row's graph and its flow's, the comparison every version's.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for n in range(4):
        changed = copy.deepcopy(GREETING_FLOW)
        changed["nodes"][1]["params"]["template"] = f"Take {n} {{name}}!"
        flow_update(flow=flow, data=changed)
    q = connection.ops.quote_name
    flow_data, version_data = f"{q('flows_flow')}.{q('data')}", f"{q('flows_flowversion')}.{q('data')}"
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get("/admin/flows/flowversion/").status_code == 200
    assert not [x["sql"] for x in queries if flow_data in x["sql"] or version_data in x["sql"]]
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(f"/admin/flows/flowversion/compare/{flow.id}/?a=2&b=4").content.decode()
    assert "Changes from v2 to v4" in page and "Take 2 {name}!" in page and "Take 0 {name}!" in page
    assert len([x["sql"] for x in queries if version_data in x["sql"]]) == 2
