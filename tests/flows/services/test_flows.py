"""flows.services.flows: endpoint names and variables checked when a flow is saved."""

import pytest
from django.db import IntegrityError

from flows import engine
from flows.exceptions import EndpointNameTaken
from flows.services.flows import flow_create, flow_update
from flows.services.variables import variable_create

# Every test here runs on both of the worker's paths (tests/flows/conftest.py).
pytestmark = pytest.mark.usefixtures("execute_path")


def test_endpoint_name_taken_is_refused(flow, user):
    with pytest.raises(EndpointNameTaken):
        flow_create(user=user, name="again", endpoint_name=flow.endpoint_name, data=flow.data)


def test_an_integrity_error_that_is_not_the_endpoint_name_is_not_relabelled(flow):
    with pytest.raises(IntegrityError):
        flow_update(flow=flow, timeout=-1)  # the column's check, not the name's uniqueness


def test_update_checks_variables_against_the_new_owner(user, make_user, make_flow):
    other = make_user("heir")
    data = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "t", "type": "Text", "params": {"text": {"variable": "TOKEN"}}}],
        "edges": [],
    }
    variable_create(user=other, name="TOKEN", value="v")
    flow = make_flow(user)
    with pytest.raises(engine.GraphValidationError):
        flow_update(flow=flow, data=data)  # the owner has no TOKEN
    flow_update(flow=flow, user=other, data=data)  # the new owner has
    flow.refresh_from_db()
    assert (flow.user, flow.data) == (other, data)
