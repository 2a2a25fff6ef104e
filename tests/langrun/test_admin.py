"""The identity admin: API keys shown once, revoking, users, and django-q2's pages for superusers only."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse

from langrun.models import ApiKey, User
from langrun.services import api_key_authenticate, api_key_create
from tests.helpers import grant, login


def shown_key(response) -> str:
    return re.search(r'id="lr-new-key"[^>]*value="(sk-[^"]+)"', response.content.decode()).group(1)


def test_creating_a_key_shows_it_once_and_stores_only_its_hash(staff):
    c = login(staff)
    response = c.post(reverse("admin:langrun_apikey_add"), {"name": "ci"})
    assert response.status_code == 200
    key = shown_key(response)
    assert "no-store" in response["Cache-Control"]
    api_key = ApiKey.objects.get()
    assert (api_key.user, api_key.name) == (staff, "ci")
    assert key.startswith(api_key.prefix) and key not in (api_key.hashed_key, api_key.prefix)
    assert api_key_authenticate(key=key).pk == api_key.pk

    # Afterwards only the prefix: not on the key's page, not in the list, not in a message for the next page.
    for url in (reverse("admin:langrun_apikey_change", args=[api_key.pk]), reverse("admin:langrun_apikey_changelist")):
        html = c.get(url).content.decode()
        assert key not in html
        assert api_key.prefix in html


def test_staff_create_keys_only_for_themselves(staff, other):
    c = login(staff)
    assert "user" not in c.get(reverse("admin:langrun_apikey_add")).context["adminform"].form.fields
    c.post(reverse("admin:langrun_apikey_add"), {"name": "sneaky", "user": str(other.pk)})
    assert ApiKey.objects.get().user == staff


def test_superuser_creates_a_key_for_another_user(superuser, other):
    response = login(superuser).post(reverse("admin:langrun_apikey_add"), {"name": "theirs", "user": str(other.pk)})
    key = shown_key(response)
    assert api_key_authenticate(key=key).user == other


def test_key_name_and_activity_can_be_changed_but_not_the_secret(staff):
    api_key = api_key_create(user=staff, name="old").api_key
    c = login(staff)
    url = reverse("admin:langrun_apikey_change", args=[api_key.pk])
    form = c.get(url).context["adminform"].form
    assert set(form.fields) == {"name", "is_active"}
    assert c.post(url, {"name": "new", "hashed_key": "x" * 64, "prefix": "sk-hijack"}).status_code == 302
    refreshed = ApiKey.objects.get(pk=api_key.pk)
    assert (refreshed.name, refreshed.is_active, refreshed.hashed_key, refreshed.prefix) == (
        "new",
        False,
        api_key.hashed_key,
        api_key.prefix,
    )


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite's write lock, taken when the save's transaction begins, serialises the two"
)
@pytest.mark.django_db(transaction=True)
def test_a_key_deleted_while_its_page_was_saved_stays_deleted(staff, monkeypatch):
    # The page's save wrote the whole row as it had read it: a key deleted meanwhile (its owner's DELETE of a
    # leaked key, answered 204) was inserted again, and authenticated again.
    import threading

    from django.contrib import admin

    new = api_key_create(user=staff, name="old")
    model_admin = admin.site._registry[ApiKey]
    read = model_admin.get_object

    def delete_elsewhere():  # the DELETE, in a request (a transaction) of its own
        ApiKey.objects.filter(pk=new.api_key.pk).delete()
        connection.close()

    def read_then_deleted(request, object_id, from_field=None):
        obj = read(request, object_id, from_field)
        if request.method == "POST":
            deleting = threading.Thread(target=delete_elsewhere)
            deleting.start()
            deleting.join()
        return obj

    monkeypatch.setattr(model_admin, "get_object", read_then_deleted)
    url = reverse("admin:langrun_apikey_change", args=[new.api_key.pk])
    assert login(staff).post(url, {"name": "new", "is_active": "on"}).status_code == 404
    assert not ApiKey.objects.exists() and api_key_authenticate(key=new.key) is None


def test_revoke_action_deactivates_keys(staff):
    new = api_key_create(user=staff, name="ci")
    response = login(staff).post(
        reverse("admin:langrun_apikey_changelist"), {"action": "revoke", "_selected_action": [str(new.api_key.pk)]}, follow=True
    )
    assert "Revoked 1 API key(s)." in [str(m) for m in response.context["messages"]]
    assert ApiKey.objects.get().is_active is False
    assert api_key_authenticate(key=new.key) is None


def test_staff_see_and_revoke_only_their_keys(staff, other):
    mine = api_key_create(user=staff, name="mine").api_key
    theirs = api_key_create(user=other, name="theirs").api_key
    c = login(staff)
    response = c.get(reverse("admin:langrun_apikey_changelist"))
    assert [k.pk for k in response.context["cl"].result_list] == [mine.pk]
    assert c.get(reverse("admin:langrun_apikey_change", args=[theirs.pk])).status_code == 404
    assert c.post(reverse("admin:langrun_apikey_delete", args=[theirs.pk]), {"post": "yes"}).status_code == 404
    c.post(reverse("admin:langrun_apikey_changelist"), {"action": "revoke", "_selected_action": [str(theirs.pk)]})
    assert ApiKey.objects.get(pk=theirs.pk).is_active is True


def test_superuser_sees_every_key(superuser, staff, other):
    api_key_create(user=staff)
    api_key_create(user=other)
    response = login(superuser).get(reverse("admin:langrun_apikey_changelist"))
    assert len(response.context["cl"].result_list) == 2


def test_users_are_managed_like_djangos(superuser):
    c = login(superuser)
    response = c.post(
        reverse("admin:langrun_user_add"),
        {"username": "newbie", "password1": "a-long-pass-phrase-9", "password2": "a-long-pass-phrase-9", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    user = User.objects.get(username="newbie")
    assert user.password != "a-long-pass-phrase-9" and user.check_password("a-long-pass-phrase-9")
    assert c.get(reverse("admin:langrun_user_change", args=[user.pk])).status_code == 200


def test_staff_without_user_permissions_cannot_manage_users(staff):
    assert login(staff).get(reverse("admin:langrun_user_changelist")).status_code == 403


@pytest.mark.parametrize("model", ["schedule", "success", "failure"])
def test_django_q_pages_for_superusers_only(superuser, staff, model):
    url = reverse(f"admin:django_q_{model}_changelist")
    assert login(superuser).get(url).status_code == 200
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q"))
    assert login(staff).get(url).status_code == 403


def test_admin_index_lists_what_each_user_may_see(superuser, staff):
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="django_q"))
    staff_html = login(staff).get(reverse("admin:index")).content.decode()
    assert "Flows" in staff_html and "API keys" in staff_html
    assert "Background tasks" not in staff_html
    root_html = login(superuser).get(reverse("admin:index")).content.decode()
    assert "Background tasks" in root_html and "Users" in root_html


def test_api_keys_need_their_permissions(bare_staff):
    key = api_key_create(user=bare_staff, name="ci").api_key
    c = login(bare_staff)
    assert c.get(reverse("admin:langrun_apikey_changelist")).status_code == 403
    assert c.post(reverse("admin:langrun_apikey_add"), {"name": "more"}).status_code == 403
    assert c.post(reverse("admin:langrun_apikey_delete", args=[key.pk]), {"post": "yes"}).status_code == 403
    grant(bare_staff, "langrun.view_apikey")
    c = login(bare_staff)
    listing = c.get(reverse("admin:langrun_apikey_changelist"))
    assert listing.status_code == 200
    assert listing.context["action_form"] is None  # no action offered
    c.post(reverse("admin:langrun_apikey_changelist"), {"action": "revoke", "_selected_action": [str(key.pk)]})
    key.refresh_from_db()
    assert key.is_active and ApiKey.objects.filter(user=bare_staff).count() == 1
    grant(bare_staff, "langrun.add_apikey", "langrun.change_apikey")
    c = login(bare_staff)
    assert c.post(reverse("admin:langrun_apikey_add"), {"name": "more"}).status_code == 200  # the page showing it once
    c.post(reverse("admin:langrun_apikey_changelist"), {"action": "revoke", "_selected_action": [str(key.pk)]})
    key.refresh_from_db()
    assert not key.is_active and ApiKey.objects.filter(user=bare_staff).count() == 2


def test_superusers_need_no_permissions(superuser, other):
    key = api_key_create(user=other, name="theirs").api_key
    c = login(superuser)
    assert c.get(reverse("admin:langrun_apikey_change", args=[key.pk])).status_code == 200
    assert c.post(reverse("admin:langrun_apikey_delete", args=[key.pk]), {"post": "yes"}).status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()


def test_the_flow_builders_group_lets_staff_manage_their_own_objects(bare_staff, other):
    from django.contrib.auth.models import Group

    from flows.services.flows import flow_create
    from tests.helpers import GREETING_FLOW

    mine = flow_create(user=bare_staff, name="Mine", data=GREETING_FLOW)
    theirs = flow_create(user=other, name="Theirs", data=GREETING_FLOW)
    bare_staff.groups.add(Group.objects.get(name="Flow builders"))
    c = login(bare_staff)
    assert c.get(reverse("admin:flows_flow_change", args=[mine.pk])).status_code == 200
    assert c.get(reverse("admin:flows_flow_change", args=[theirs.pk])).status_code == 404
    assert c.post(reverse("admin:langrun_apikey_add"), {"name": "ci"}).status_code == 200
    assert c.post(reverse("admin:flows_flow_delete", args=[mine.pk]), {"post": "yes"}).status_code == 302
    assert c.get(reverse("admin:langrun_user_changelist")).status_code == 403


# Deliveries are written by runs' ends and the sweep: a flow builder sees and retries theirs, never adds or deletes one.
WITHHELD_FROM_FLOW_BUILDERS = {"webhooks.add_delivery", "webhooks.delete_delivery"}


def test_the_flow_builders_group_covers_every_owner_scoped_admin_page(db):
    from django.contrib import admin
    from django.contrib.auth.models import Group

    from langrun.admin import OwnedModelAdmin

    granted = {f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name="Flow builders").permissions.all()}
    owned = [model._meta for model, model_admin in admin.site._registry.items() if isinstance(model_admin, OwnedModelAdmin)]
    expected = {f"{opts.app_label}.{action}_{opts.model_name}" for opts in owned for action in ("view", "add", "change", "delete")}
    # A new owner-scoped page needs a migration granting its model's permissions to the group.
    assert expected - WITHHELD_FROM_FLOW_BUILDERS - granted == set()


def test_flow_builders_open_their_ingest_tokens_schedules_and_replay_jobs(bare_staff, other):
    from django.contrib.auth.models import Group

    from flows.services.flows import flow_create
    from flows.services.replays import replay_job_create
    from flows.services.schedules import flow_schedule_create
    from tests.helpers import GREETING_FLOW
    from webhooks.tokens import ingest_token_create

    mine = flow_create(user=bare_staff, name="Mine", data=GREETING_FLOW)
    theirs = flow_create(user=other, name="Theirs", data=GREETING_FLOW)
    bare_staff.groups.add(Group.objects.get(name="Flow builders"))
    c = login(bare_staff)
    for model in ("webhooks/ingesttoken", "flows/flowschedule", "flows/replayjob"):
        assert c.get(f"/admin/{model}/").status_code == 200, model
    token = ingest_token_create(flow=mine).ingest_token
    assert c.get(reverse("admin:webhooks_ingesttoken_change", args=[token.pk])).status_code == 200
    assert c.get(reverse("admin:webhooks_ingesttoken_add")).status_code == 200
    schedule = flow_schedule_create(flow=mine, interval_minutes=60)
    assert c.get(reverse("admin:flows_flowschedule_change", args=[schedule.pk])).status_code == 200
    job = replay_job_create(user=bare_staff, filters={"flow": str(mine.pk)})
    assert c.get(reverse("admin:flows_replayjob_change", args=[job.pk])).status_code == 200
    # Owner scoping still applies.
    their_token = ingest_token_create(flow=theirs).ingest_token
    assert c.get(reverse("admin:webhooks_ingesttoken_change", args=[their_token.pk])).status_code == 404


def test_upgrading_puts_existing_staff_in_the_flow_builders_group(make_user):
    from importlib import import_module

    from django.apps import apps
    from django.contrib.auth.models import Group

    migration = import_module("flows.migrations.0010_flow_builders_group")
    Group.objects.filter(name="Flow builders").delete()
    staff, root, plain = make_user(is_staff=True), make_user(is_staff=True, is_superuser=True), make_user()
    migration.create_group(apps, None)
    members = set(Group.objects.get(name="Flow builders").user_set.all())
    assert members == {staff}
    assert User.objects.get(pk=staff.pk).has_perm("flows.change_flow") and not plain.has_perm("flows.change_flow")
    assert root.is_superuser


def test_the_admin_is_titled_langrun(staff):
    page = login(staff).get(reverse("admin:index")).content.decode()
    assert "langrun administration" in page and "Django administration" not in page
    assert "<title>Site administration | langrun</title>" in page
