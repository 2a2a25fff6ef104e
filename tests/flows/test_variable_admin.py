from django.test import Client

from flows import services
from flows.models import Variable

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
    assert SECRET not in variable.value and services.variable_value(variable=variable) == SECRET
    page = browser.get(f"/admin/flows/variable/{variable.pk}/change/")
    assert page.status_code == 200 and SECRET not in page.content.decode() and variable.value not in page.content.decode()
    # Saving without a new value keeps the value; changing the kind converts it.
    browser.post(
        f"/admin/flows/variable/{variable.pk}/change/", {"user": admin_user.pk, "name": "TOKEN", "kind": "generic", "new_value": ""}
    )
    variable.refresh_from_db()
    assert variable.kind == "generic" and variable.value == SECRET
