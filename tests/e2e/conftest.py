"""Real processes for end-to-end tests: gunicorn and a django-q2 cluster on the test database."""

import pytest

from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import Service
from tests.helpers import GREETING_FLOW


@pytest.fixture
def service(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.start_web()
    yield svc
    svc.stop()


@pytest.fixture
def setup_flow(transactional_db):
    """The greeting flow at endpoint `greet`, committed for the real processes to see, and its owner's API key."""
    user = User.objects.create_user("e2e")
    flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    return flow, api_key_create(user=user).key
