"""The admin for ingest tokens: on the flow's page, created with the token shown once, revoked by an action, owner-scoped."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.helpers import login
from webhooks.models import IngestToken
from webhooks.tokens import ingest_token_authenticate, ingest_token_create, ingest_token_usage_flush


@pytest.fixture(autouse=True)
def _flush_uses():
    yield
    ingest_token_usage_flush()


def test_create_shows_the_token_once_and_it_authorises_the_flow(staff, make_flow):
    flow = make_flow(staff, endpoint_name="crm")
    c = login(staff)
    add = reverse("admin:webhooks_ingesttoken_add")
    assert c.get(f"{add}?flow={flow.pk}").context["adminform"].form.initial["flow"] == str(flow.pk)
    expires = (timezone.localtime() + timedelta(days=7)).strftime("%Y-%m-%d")
    response = c.post(add, {"flow": str(flow.pk), "name": "typeform", "expires_at_0": expires, "expires_at_1": "12:00:00"})
    assert response.status_code == 200 and "no-cache" in response["Cache-Control"]
    secret = response.context["secret"]
    html = response.content.decode()
    assert secret in html and f"/api/v1/webhook/t/{secret}" in html
    row = IngestToken.objects.get()
    assert (row.flow, row.name, row.created_by) == (flow, "typeform", staff) and row.expires_at is not None
    assert ingest_token_authenticate(token=secret).pk == row.pk
    for url in (reverse("admin:webhooks_ingesttoken_change", args=[row.pk]), reverse("admin:webhooks_ingesttoken_changelist")):
        page = c.get(url).content.decode()
        assert secret not in page and row.prefix in page
    flow_page = c.get(reverse("admin:flows_flow_change", args=[flow.pk])).content.decode()
    assert "typeform" in flow_page and row.masked in flow_page and secret not in flow_page
    assert f"{add}?flow={flow.pk}" in flow_page


def test_an_expiry_in_the_past_is_a_form_error(staff, make_flow):
    flow = make_flow(staff, endpoint_name="crm")
    response = login(staff).post(
        reverse("admin:webhooks_ingesttoken_add"),
        {"flow": str(flow.pk), "name": "x", "expires_at_0": "2001-01-01", "expires_at_1": "00:00:00"},
    )
    assert response.status_code == 200 and "The expiry must be in the future." in response.content.decode()
    assert not IngestToken.objects.exists()


def test_the_list_filters_by_state(staff, make_flow):
    flow = make_flow(staff, endpoint_name="crm")
    ingest_token_create(flow=flow, name="live")
    old = ingest_token_create(flow=flow, name="old")
    IngestToken.objects.filter(pk=old.ingest_token.pk).update(expires_at=timezone.now() - timedelta(days=1))
    c = login(staff)
    changelist = reverse("admin:webhooks_ingesttoken_changelist")
    assert [t.name for t in c.get(changelist + "?state=active").context["cl"].result_list] == ["live"]
    assert [t.name for t in c.get(changelist + "?state=expired").context["cl"].result_list] == ["old"]
    assert [t.name for t in c.get(changelist + f"?flow__id__exact={flow.pk}").context["cl"].result_list] == ["old", "live"]


def test_revoke_action(staff, make_flow):
    flow = make_flow(staff, endpoint_name="crm")
    new = ingest_token_create(flow=flow)
    response = login(staff).post(
        reverse("admin:webhooks_ingesttoken_changelist"),
        {"action": "revoke", "_selected_action": [str(new.ingest_token.pk)]},
        follow=True,
    )
    assert "Revoked 1 ingest token(s)." in response.content.decode()
    assert ingest_token_authenticate(token=new.token) is None
    assert IngestToken.objects.get().state == "revoked"


def test_staff_see_and_issue_tokens_only_for_their_own_flows(staff, other, make_flow):
    mine = make_flow(staff, endpoint_name="mine")
    theirs = make_flow(other, endpoint_name="theirs", name="Their secret flow")
    their_token = ingest_token_create(flow=theirs, name="their-token")
    ingest_token_create(flow=mine, name="my-token")
    c = login(staff)
    listing = c.get(reverse("admin:webhooks_ingesttoken_changelist")).content.decode()
    assert "my-token" in listing and "Their secret flow" not in listing
    assert c.get(reverse("admin:webhooks_ingesttoken_change", args=[their_token.ingest_token.pk])).status_code == 404
    assert "their-token" not in c.get(reverse("admin:webhooks_ingesttoken_changelist")).content.decode()
    choices = c.get(reverse("admin:webhooks_ingesttoken_add")).context["adminform"].form.fields["flow"].queryset
    assert list(choices) == [mine]
    response = c.post(reverse("admin:webhooks_ingesttoken_add"), {"flow": str(theirs.pk), "name": "sneaky"})
    assert response.status_code == 200 and not IngestToken.objects.filter(name="sneaky").exists()
