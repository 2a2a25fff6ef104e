"""flows.admin.common: validation issues described with the node or edge they concern."""

import pytest

from flows import engine
from flows.admin.common import describe_issue


def test_describe_issue_names_nodes_and_edges():
    data = {"nodes": [{"id": "a", "type": "Webhook"}, "junk"], "edges": [{"source": "a", "target": "zz"}]}
    with pytest.raises(engine.GraphValidationError) as exc:
        engine.parse_graph(data)
    described = [describe_issue(i, data) for i in exc.value.issues]
    assert "Node #1: A node must be an object with 'id', 'type' and optional 'params'." in described
    assert "Edge #0 (a → zz), target: Edge target 'zz' is not a node of this flow." in described
    assert describe_issue(engine.ValidationIssue((), "bad", "x"), None) == "data: bad"


@pytest.mark.parametrize("model", ["flows/flowschedule", "webhooks/ingesttoken", "webhooks/subscription"])
def test_lists_and_forms_of_objects_of_a_flow_read_no_graph(model, staff, make_flow, local_allowed):
    # A flow's graph may be up to a megabyte: the list read it with each row, the form's choice of flow with each flow.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from flows.services.schedules import flow_schedule_create
    from tests.helpers import login
    from webhooks.alerts.services.subscriptions import subscription_create
    from webhooks.tokens import ingest_token_create

    flow = make_flow(staff)
    flow_schedule_create(flow=flow, interval_minutes=60)
    ingest_token_create(flow=flow, created_by=staff)
    subscription_create(user=staff, flow=flow, url="http://127.0.0.1:9/hook", events=["run.failed"])
    browser = login(staff)
    flow_data = f"{connection.ops.quote_name('flows_flow')}.{connection.ops.quote_name('data')}"
    for page in (f"/admin/{model}/", f"/admin/{model}/add/"):
        with CaptureQueriesContext(connection) as queries:
            response = browser.get(page)
        assert response.status_code == 200 and flow.name in response.content.decode()
        assert not [q["sql"] for q in queries if flow_data in q["sql"]], page
