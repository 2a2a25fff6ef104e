import copy
import itertools

import pytest
from django.test import Client
from rest_framework.test import APIClient

from flows.examples import GREETING_GRAPH
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create

# The product's demo graph (make run, the API docs' example); a copy, so no test can change the original.
GREETING_FLOW = copy.deepcopy(GREETING_GRAPH)

_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _purge_test_queue():
    """The test run's broker queue (named after the test process) is emptied at the end."""
    yield
    try:
        from django_q.brokers import get_broker

        get_broker().purge_queue()
    except Exception:
        pass


@pytest.fixture
def make_user(db):
    def make(username: str | None = None, **fields) -> User:
        return User.objects.create_user(username=username or f"user{next(_names)}", password="pw-for-tests-1", **fields)

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def api_key(user):
    return api_key_create(user=user, name="test").key


@pytest.fixture
def make_flow(db):
    def make(user, *, data=None, endpoint_name=None, name="Greeting") -> object:
        return flow_create(user=user, name=name, endpoint_name=endpoint_name, data=data or GREETING_FLOW)

    return make


@pytest.fixture
def flow(make_flow, user):
    return make_flow(user, endpoint_name="greet")


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def key_client(api_key):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key)
    return c


# --- admin users ----------------------------------------------------------------


def grant(user, *codenames: str) -> None:
    """Give `user` Django permissions by `app_label.codename` (the admin honours them as Django does)."""
    from django.contrib.auth.models import Permission

    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def grant_owned_models(user) -> None:
    """Every permission on the objects users own (flows, runs, versions, variables, API keys): what a staff user is
    given to manage their own objects in the admin."""
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    owned = Q(content_type__app_label="flows") | Q(content_type__app_label="langrun", content_type__model="apikey")
    user.user_permissions.add(*Permission.objects.filter(owned))


@pytest.fixture
def staff(make_user):
    """A staff user with every permission on owned objects (the admin still shows them only their own)."""
    user = make_user("staff", is_staff=True)
    grant_owned_models(user)
    return user


@pytest.fixture
def other(make_user):
    user = make_user("other", is_staff=True)
    grant_owned_models(user)
    return user


@pytest.fixture
def bare_staff(make_user):
    """A staff user without any permission: Django's admin shows them nothing of the models."""
    return make_user("bare", is_staff=True)


@pytest.fixture
def superuser(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


def login(user) -> Client:
    """A test client logged in as `user` (admin pages use Django's session login)."""
    c = Client()
    c.force_login(user)
    return c
