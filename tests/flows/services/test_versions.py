"""flows.services.versions: recorded on graph changes only, pinned by runs; what the webhook reads of a version."""

import copy

import pytest

import tests.components  # noqa: F401 - registers the test components
from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.flows import flow_update
from flows.services.runs import flow_run_create, flow_run_replay
from flows.services.versions import flow_version_quick, flow_version_traits
from tests.helpers import GREETING_FLOW, HTTP_FLOW, greeting_with_template

pytestmark = pytest.mark.usefixtures("execute_path")


def test_a_version_is_quick_when_every_component_is(make_flow, user, flow):
    http = make_flow(user, data=HTTP_FLOW, name="Caller")
    flow_version_traits.cache_clear()
    assert flow_version_quick(flow_id=flow.id, version_id=flow.current_version_id) is True
    assert flow_version_quick(flow_id=http.id, version_id=http.current_version_id) is False
    # Another flow's id with this version's id is not this version.
    assert flow_version_quick(flow_id=http.id, version_id=flow.current_version_id) is False


def test_the_webhooks_schemas_and_the_enqueues_quickness_come_from_one_read(flow, user, django_assert_num_queries):
    from webhooks.services import webhook_payload_check_schema

    version = flow.current_version
    flow_version_traits.cache_clear()
    with django_assert_num_queries(1):
        webhook_payload_check_schema(version=version, payload={"name": "Ada"})
        assert flow_version_quick(flow_id=flow.id, version_id=version.pk) is True


def test_create_records_version_one_with_the_owner_as_author(flow, user):
    [v] = flow.versions.all()
    assert (v.number, v.data, v.author) == (1, GREETING_FLOW, user)


def test_graph_change_records_a_version_and_unchanged_saves_record_none(flow, user):
    flow_update(flow=flow, description="only the description")
    flow_update(flow=flow, data=copy.deepcopy(GREETING_FLOW))  # same graph, another dict
    assert flow.versions.count() == 1
    flow_update(flow=flow, data=greeting_with_template("Hi {name}"), author=user, message="shorter")
    latest = flow.versions.first()
    assert (latest.number, latest.message, latest.author) == (2, "shorter", user)
    assert latest.data["nodes"][1]["params"]["template"] == "Hi {name}"


def test_invalid_graph_records_no_version(flow):
    with pytest.raises(Exception):  # noqa: B017 - GraphValidationError; what matters is that nothing was written
        flow_update(flow=flow, data={"nodes": [{"id": "x", "type": "Nope"}]})
    assert flow.versions.count() == 1


def test_queued_run_executes_the_version_it_was_accepted_against(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_update(flow=flow, data=greeting_with_template("Bye {name}!"))
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.version.number == 1
    assert run.outputs == {"greeting": "Hello Ada!"}
    later = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_run_execute(run_id=later.id)
    later.refresh_from_db()
    assert (later.version.number, later.outputs) == (2, {"greeting": "Bye Ada!"})


def test_replay_runs_the_original_version_unless_asked_for_the_current(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_update(flow=flow, data=greeting_with_template("Bye {name}!"))
    again = flow_run_replay(run=run, user=user)
    current = flow_run_replay(run=run, user=user, current_version=True)
    for r in (again, current):
        flow_run_execute(run_id=r.id)
        r.refresh_from_db()
    assert again.outputs == {"greeting": "Hello Ada!"} and again.version.number == 1
    assert current.outputs == {"greeting": "Bye Ada!"} and current.version.number == 2


def test_run_without_version_falls_back_to_the_flow_graph(flow, user):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    FlowRun.objects.filter(pk=run.pk).update(version=None)
    flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.outputs == {"greeting": "Hello Ada!"}


def test_flow_changed_behind_the_services_back_gets_a_version_when_a_run_is_accepted(flow, user):
    type(flow).objects.filter(pk=flow.pk).update(data=greeting_with_template("Yo {name}"))
    flow.refresh_from_db()
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    assert run.version.number == 2 and run.version.author is None
