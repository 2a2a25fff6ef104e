"""Admin: a flow's version history and a readable diff between two versions."""

import copy

import pytest
from django.test import Client

from flows import services
from tests.conftest import GREETING_FLOW


@pytest.fixture
def admin_client(make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    c = Client()
    c.force_login(admin)
    return c


def test_history_list_and_diff(admin_client, flow):
    changed = copy.deepcopy(GREETING_FLOW)
    changed["nodes"][1]["params"]["template"] = "Goodbye {name}!"
    services.flow_update(flow=flow, data=changed, message="say goodbye")

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
