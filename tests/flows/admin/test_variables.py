"""flows.admin.variables: values are write-only, saves go through the variable services."""

from django.test import Client

from flows.models import Variable
from flows.services.variables import variable_create, variable_value
from tests.helpers import grant, grant_owned_models, login

SECRET = "sk-admin-secret"


def test_admin_never_shows_a_credential_and_encrypts_what_it_saves(make_user):
    admin_user = make_user("root", is_staff=True, is_superuser=True)
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        "/admin/flows/variable/add/", {"user": admin_user.pk, "name": "TOKEN", "kind": "credential", "new_value": SECRET}
    )
    assert response.status_code == 302
    variable = Variable.objects.get(name="TOKEN")
    assert SECRET not in variable.value and variable_value(variable=variable) == SECRET
    page = browser.get(f"/admin/flows/variable/{variable.pk}/change/")
    assert page.status_code == 200 and SECRET not in page.content.decode() and variable.value not in page.content.decode()
    # Saving without a new value keeps the value; a credential made generic needs its new value (it would show).
    response = browser.post(
        f"/admin/flows/variable/{variable.pk}/change/", {"user": admin_user.pk, "name": "TOKEN", "kind": "generic", "new_value": ""}
    )
    assert response.status_code == 200 and "never shown" in response.context["adminform"].form.errors["new_value"][0]
    variable.refresh_from_db()
    assert variable.kind == "credential" and variable_value(variable=variable) == SECRET


def test_superuser_chooses_the_owner_and_names_are_unique_per_owner(make_user):
    root = make_user("root2", is_staff=True, is_superuser=True)
    ada, bob = make_user("ada"), make_user("bob")
    browser = Client()
    browser.force_login(root)
    form = browser.get("/admin/flows/variable/add/").context["adminform"].form
    assert str(form["user"].value()) == str(root.pk)  # defaults to themselves
    add = {"user": ada.pk, "name": "TOKEN", "kind": "credential", "new_value": SECRET}
    assert browser.post("/admin/flows/variable/add/", add).status_code == 302
    variable = Variable.objects.get(name="TOKEN")
    assert variable.user == ada and variable_value(variable=variable) == SECRET
    # The same name for the same owner is refused; for another owner it is fine.
    duplicate = browser.post("/admin/flows/variable/add/", add)
    assert duplicate.status_code == 200 and duplicate.context["adminform"].form.errors["name"] == [
        "ada already has a variable named TOKEN."
    ]
    assert browser.post("/admin/flows/variable/add/", {**add, "user": bob.pk}).status_code == 302
    # Handing a variable to another user checks the name among theirs, then moves it, value kept.
    theirs = Variable.objects.get(user=bob, name="TOKEN")
    change = {"user": ada.pk, "name": "TOKEN", "kind": "credential", "new_value": ""}
    assert browser.post(f"/admin/flows/variable/{theirs.pk}/change/", change).status_code == 200
    response = browser.post(f"/admin/flows/variable/{theirs.pk}/change/", {**change, "name": "TOKEN_2"})
    assert response.status_code == 302
    theirs.refresh_from_db()
    assert (theirs.user, theirs.name, variable_value(variable=theirs)) == (ada, "TOKEN_2", SECRET)
    # Superusers can filter by owner; the list shows every owner's variables.
    listing = browser.get(f"/admin/flows/variable/?user__id__exact={bob.pk}")
    assert listing.status_code == 200 and list(listing.context["cl"].result_list) == []


def test_staff_cannot_choose_the_owner(make_user):
    staff, other = make_user("staffer2", is_staff=True), make_user("other2")
    grant_owned_models(staff)
    browser = Client()
    browser.force_login(staff)
    assert "user" not in browser.get("/admin/flows/variable/add/").context["adminform"].form.fields
    browser.post("/admin/flows/variable/add/", {"user": other.pk, "name": "MINE", "kind": "generic", "new_value": "v"})
    assert Variable.objects.get(name="MINE").user == staff
    # Filtering by another owner does not reach their variables.
    variable_create(user=other, name="THEIRS", value="x")
    assert b"THEIRS" not in browser.get(f"/admin/flows/variable/?user__id__exact={other.pk}").content


def test_a_credential_made_generic_without_a_value_is_a_form_error(make_user):
    staff = make_user("keyed", is_staff=True)
    grant_owned_models(staff)
    variable = variable_create(user=staff, name="OLD", value=SECRET)
    browser = Client()
    browser.force_login(staff)
    response = browser.post(f"/admin/flows/variable/{variable.pk}/change/", {"name": "OLD", "kind": "generic", "new_value": ""})
    assert response.status_code == 200
    assert "is a credential, whose value is never shown" in response.context["adminform"].form.errors["new_value"][0]
    variable.refresh_from_db()
    assert variable.kind == "credential"
    # A new value goes with it.
    response = browser.post(f"/admin/flows/variable/{variable.pk}/change/", {"name": "OLD", "kind": "generic", "new_value": "plain"})
    assert response.status_code == 302
    variable.refresh_from_db()
    assert (variable.kind, variable.value) == ("generic", "plain")


def test_staff_need_the_variable_permissions(bare_staff):
    mine = variable_create(user=bare_staff, name="MINE", value="v", kind="generic")
    browser = Client()
    browser.force_login(bare_staff)
    assert browser.get("/admin/flows/variable/").status_code == 403
    assert browser.post("/admin/flows/variable/add/", {"name": "NEW", "kind": "generic", "new_value": "v"}).status_code == 403
    assert browser.post(f"/admin/flows/variable/{mine.pk}/delete/", {"post": "yes"}).status_code == 403
    grant(bare_staff, "flows.view_variable")
    browser.force_login(bare_staff)
    assert browser.get("/admin/flows/variable/").status_code == 200
    browser.post(f"/admin/flows/variable/{mine.pk}/change/", {"name": "RENAMED", "kind": "generic", "new_value": "w"})
    assert browser.post(f"/admin/flows/variable/{mine.pk}/delete/", {"post": "yes"}).status_code == 403
    mine.refresh_from_db()
    assert (mine.name, mine.value) == ("MINE", "v")


def test_variable_admin_never_shows_a_value_and_refuses_duplicates(staff):
    client, user = login(staff), staff
    from flows.models import Variable
    from flows.services.variables import variable_value

    response = client.post("/admin/flows/variable/add/", {"name": "OPENAI_API_KEY", "kind": "credential", "new_value": "sk-secret-value"})
    assert response.status_code == 302, response.content
    variable = Variable.objects.get(user=user, name="OPENAI_API_KEY")
    assert variable_value(variable=variable) == "sk-secret-value"
    page = client.get(f"/admin/flows/variable/{variable.pk}/change/")
    assert page.status_code == 200 and b"sk-secret-value" not in page.content
    duplicate = client.post("/admin/flows/variable/add/", {"name": "OPENAI_API_KEY", "kind": "credential", "new_value": "x"})
    assert duplicate.status_code == 200 and b"already has a variable named OPENAI_API_KEY" in duplicate.content
    # an empty value keeps the stored one
    client.post(f"/admin/flows/variable/{variable.pk}/change/", {"name": "OPENAI_API_KEY", "kind": "credential", "new_value": ""})
    variable.refresh_from_db()
    assert variable_value(variable=variable) == "sk-secret-value"


def test_variable_admin_hides_other_users_variables(staff, make_user):
    client = login(staff)
    from flows.services.variables import variable_create

    theirs = variable_create(user=make_user("mallory"), name="THEIRS", value="v")
    assert client.get(f"/admin/flows/variable/{theirs.pk}/change/").status_code == 404
    assert b"THEIRS" not in client.get("/admin/flows/variable/").content
