"""flows.services.flows: endpoint names and variables checked when a flow is saved."""

import pytest
from django.db import IntegrityError, connection

from flows import engine
from flows.exceptions import EndpointNameTaken, ScheduleLimitReached
from flows.models import FlowSchedule
from flows.services.flows import flow_create, flow_update
from flows.services.schedules import flow_schedule_create, flow_schedule_delete
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


def _run_deletes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("DELETE") and '"flows_flowrun"' in q["sql"].split("WHERE")[0]]


def test_deleting_a_flow_deletes_its_runs_in_short_transactions(flow, settings):
    # One transaction for all of a busy flow's runs held SQLite's only write lock for seconds (16,000 runs: 9.6 s),
    # and every user's webhooks waited on it.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from flows.models import Flow, FlowRun, NodeResult
    from flows.services.execution import flow_run_execute
    from flows.services.flows import flow_delete
    from flows.services.runs import flow_run_create

    settings.LANGRUN_PRUNE_BATCH = 2
    for _ in range(5):
        flow_run_execute(run_id=flow_run_create(flow=flow, user=flow.user, trigger="api", payload={"name": "Ada"}).id)
    assert NodeResult.objects.filter(run__flow=flow).exists()
    with CaptureQueriesContext(connection) as queries:
        flow_delete(flow=flow)
    assert not Flow.objects.filter(pk=flow.pk).exists() and not FlowRun.objects.exists() and not NodeResult.objects.exists()
    assert len(_run_deletes(queries.captured_queries)) >= 3


def test_the_api_deletes_a_flow_through_the_service(key_client, flow, monkeypatch):
    import flows.views

    deleted = []
    monkeypatch.setattr(flows.views, "flow_delete", lambda *, flow: deleted.append(flow.pk) or flow.delete())
    assert key_client.delete(f"/api/v1/flows/{flow.id}").status_code == 204
    assert deleted == [flow.pk]


def test_the_admin_deletes_a_flow_through_the_service(admin_client, flow, monkeypatch):
    import flows.admin.flows

    batched = []
    monkeypatch.setattr(flows.admin.flows, "flow_delete", lambda *, flow: batched.append(flow.pk) or flow.delete())
    response = admin_client.post(f"/admin/flows/flow/{flow.id}/delete/", {"post": "yes"})
    assert response.status_code == 302 and batched == [flow.pk]
    from flows.models import Flow

    assert not Flow.objects.filter(pk=flow.pk).exists()


def _changed_graph(flow) -> dict:
    return {**flow.data, "nodes": [*flow.data["nodes"], {"id": "note", "type": "Text", "params": {"text": "hi"}}]}


def test_an_update_keeps_a_pause_and_a_signing_secret_set_since_the_flow_was_read(flow):
    # A PATCH reads the flow, checks the new graph (a large one takes a fraction of a second), then saves: a pause
    # or a signing secret committed meanwhile was written back as it was read (the flow ran again, the new secret
    # shown once was refused).
    from flows.models import Flow
    from flows.services.pause import flow_pause
    from webhooks.signatures import webhook_signing_secret_rotate

    read = Flow.objects.get(pk=flow.pk)
    flow_pause(flow=flow)
    secret = webhook_signing_secret_rotate(flow=flow)
    flow_update(flow=read, description="changed", data=_changed_graph(read))
    flow.refresh_from_db()
    assert flow.paused_at is not None and flow.signing_secret == secret
    assert flow.description == "changed" and flow.current_version.number == 2


def test_an_update_keeps_what_another_update_changed_since_the_flow_was_read(flow):
    from flows.models import Flow

    read = Flow.objects.get(pk=flow.pk)
    flow_update(flow=flow, name="renamed")
    flow_update(flow=read, description="described")
    flow.refresh_from_db()
    assert (flow.name, flow.description) == ("renamed", "described")


def test_an_update_of_a_flow_deleted_since_it_was_read_does_not_bring_it_back(flow):
    # The save found no row and inserted one: a flow deleted (204) while a PATCH was checking its graph came
    # back, its webhook answering again.
    from django.http import Http404

    from flows.models import Flow
    from flows.services.flows import flow_delete

    read = Flow.objects.get(pk=flow.pk)
    flow_delete(flow=flow)
    with pytest.raises(Http404):
        flow_update(flow=read, data=_changed_graph(read))
    assert not Flow.objects.filter(pk=flow.pk).exists()


def _written_during_the_delete(monkeypatch, model, write):
    """A thread running `write()` (in a connection of its own), started when the delete comes to `model`'s rows: it
    writes then, or waits for the delete to commit (it gets a second before the delete goes on)."""
    import threading

    from django.db.models.sql import DeleteQuery

    def written():
        try:
            write()
        finally:
            connection.close()

    writer = threading.Thread(target=written)
    delete_batch = DeleteQuery.delete_batch

    def deleted_after_the_write(self, pk_list, using):
        if self.model is model and writer.ident is None:
            writer.start()
            writer.join(1)
        return delete_batch(self, pk_list, using)

    monkeypatch.setattr(DeleteQuery, "delete_batch", deleted_after_the_write)
    return writer


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps a worker's writes out of the delete")
@pytest.mark.django_db(transaction=True)
def test_deleting_a_flow_while_a_worker_records_its_runs_nodes(flow, monkeypatch):
    # A worker finishing a run writes its node results (a queued run's claim, its attempt) while the delete's batch
    # has collected what refers to the runs and not yet deleted them: the batch's commit broke the foreign key and
    # the DELETE answered 500, the flow half deleted.
    from flows.models import Flow, FlowRun, NodeResult
    from flows.services.flows import flow_delete
    from flows.services.runs import flow_run_create

    run = flow_run_create(flow=flow, user=flow.user, trigger="api", payload={})
    refused = []

    def worker_writes():
        try:
            NodeResult.objects.create(run_id=run.pk, node_id="hook", component_type="Webhook", status="succeeded", order=0)
        except IntegrityError:  # its run is gone: the worker's finish records nothing
            refused.append(True)

    # Their node results are deleted: the runs come next.
    writer = _written_during_the_delete(monkeypatch, FlowRun, worker_writes)
    flow_delete(flow=flow)
    writer.join()
    assert not Flow.objects.filter(pk=flow.pk).exists() and not FlowRun.objects.exists() and not NodeResult.objects.exists()
    assert refused == [True]  # the worker's write waited for the delete, then found its run gone


def test_a_batch_of_the_delete_that_meets_a_deadlock_is_tried_again(flow, monkeypatch):
    # A bulk replay of the flow's runs locks them in received order, the delete by id: PostgreSQL ended the deadlock
    # by failing the delete's batch, and the DELETE answered 500.
    from django.db import OperationalError
    from django.db.models import QuerySet

    from flows.models import Flow, FlowRun
    from flows.services.flows import flow_delete
    from flows.services.runs import flow_run_create

    class Deadlock(Exception):
        sqlstate = "40P01"

    for _ in range(2):
        flow_run_create(flow=flow, user=flow.user, trigger="api", payload={})
    delete, batches = QuerySet.delete, []

    def deadlocked_once(self):
        if self.model is FlowRun:
            batches.append(self)
            if len(batches) == 1:
                raise OperationalError("deadlock detected") from Deadlock()
        return delete(self)

    monkeypatch.setattr(QuerySet, "delete", deadlocked_once)
    flow_delete(flow=flow)
    assert len(batches) == 3  # the batch, the same batch again, and the flow's own step (no run left by then)
    assert not Flow.objects.filter(pk=flow.pk).exists() and not FlowRun.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps a webhook's run out of the delete")
@pytest.mark.django_db(transaction=True)
def test_deleting_a_flow_while_a_webhook_records_a_run_of_it(flow, monkeypatch):
    # A webhook's run recorded after the runs were deleted, while the flow itself was: the commit broke the
    # foreign key, and the DELETE answered 500 (under a steady stream of webhooks, every time).
    from django.http import Http404

    from flows.models import Flow, FlowRun
    from flows.services.flows import flow_delete
    from flows.services.runs import flow_run_create

    refused = []

    def webhook_records():
        try:
            flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={})
        except Http404:  # its flow is gone: the webhook answers as for no such flow
            refused.append(True)

    webhook = _written_during_the_delete(monkeypatch, Flow, webhook_records)
    flow_delete(flow=flow)
    webhook.join()
    assert not Flow.objects.filter(pk=flow.pk).exists() and not FlowRun.objects.exists() and refused == [True]


def test_flows_kept_are_those_still_there(make_flow, user):
    from django.db import transaction

    from flows.models import Flow
    from flows.services.flows import flows_kept

    kept, gone = make_flow(user, endpoint_name="kept"), make_flow(user, endpoint_name="gone")
    gone_id = gone.pk
    Flow.objects.filter(pk=gone_id).delete()
    with transaction.atomic():
        assert flows_kept(flow_ids=[kept.pk, gone_id, kept.pk]) == {kept.pk}
        assert flows_kept(flow_ids=[]) == set()


def _flow_with_a_preset(flow):
    from webhooks.signatures import webhook_signing_secret_set

    webhook_signing_secret_set(flow=flow, secret="whsec_one")
    return flow


def test_an_update_whose_secret_was_removed_since_the_flow_was_read_refuses_a_preset_that_needs_it(flow):
    # A PATCH checked its preset against the secret as read; a removal meanwhile left a flow with a Stripe preset and
    # no secret, which its own validation refuses (every webhook of it was then checked against no secret at all).
    from flows.exceptions import WebhookSettingInvalid
    from flows.models import Flow
    from webhooks.signatures import webhook_signing_secret_remove

    read = Flow.objects.get(pk=_flow_with_a_preset(flow).pk)
    webhook_signing_secret_remove(flow=flow)
    for setting in ({"verification": {"provider": "stripe"}}, {"handshakes": ["meta"]}):
        with pytest.raises(WebhookSettingInvalid) as refused:
            flow_update(flow=read, description="changed", **setting)
        assert refused.value.type == "missing_secret", setting
    flow.refresh_from_db()
    assert (flow.signing_secret, flow.verification, flow.handshakes, flow.description) == ("", "", "", "")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock runs the two one after the other")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("removed", ["while_checked", "while_saved"])
def test_an_update_and_a_removal_of_the_secret_at_once_leave_no_preset_without_its_secret(flow, monkeypatch, removed):
    # The removal commits in a connection of its own while the update checks its settings, or waits on the update's
    # lock while the update saves: either the update is refused or the removal clears what it saved.
    import threading

    from flows.exceptions import WebhookSettingInvalid
    from flows.services import flows as flows_service
    from webhooks.signatures import webhook_signing_secret_remove

    _flow_with_a_preset(flow)
    remover = threading.Thread(target=lambda: (webhook_signing_secret_remove(flow=flow), connection.close()))
    step = "run_control_settings_stored" if removed == "while_checked" else "flow_version_record"
    original = getattr(flows_service, step)

    def with_the_removal(*args, **kwargs):
        if remover.ident is None:
            remover.start()
            remover.join(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(flows_service, step, with_the_removal)
    try:
        flow_update(flow=flow, data=_changed_graph(flow), verification={"provider": "stripe"}, handshakes=["meta"])
    except WebhookSettingInvalid as exc:
        assert removed == "while_checked" and exc.type == "missing_secret"
    remover.join()
    flow.refresh_from_db()
    assert (flow.signing_secret, flow.verification, flow.handshakes) == ("", "", "")


def test_a_graph_larger_than_the_limit_is_refused_listing_what_is_over(user, settings, key_client):
    """Every node of a run is scheduled on its worker's loop and recorded as a row: a graph of tens of thousands of
    quick nodes held a worker for seconds a run, its runs and every other account's that it had taken."""
    settings.LANGRUN_MAX_FLOW_NODES = 3

    def chain(n: int) -> dict:
        nodes = [{"id": "hook", "type": "Webhook"}] + [{"id": f"n{i}", "type": "Extract", "params": {"query": "@"}} for i in range(n - 1)]
        ids = [node["id"] for node in nodes]
        return {"nodes": nodes, "edges": [{"source": a, "target": b, "target_input": "data"} for a, b in zip(ids, ids[1:], strict=False)]}

    assert flow_create(user=user, name="At the limit", data=chain(3)).pk
    with pytest.raises(engine.GraphValidationError) as caught:
        flow_create(user=user, name="Over", data=chain(4))
    [issue] = caught.value.issues
    assert issue.loc == ("nodes",) and issue.type == "too_long" and "at most 3 nodes" in issue.msg
    fan = chain(3)
    fan["edges"] = fan["edges"] * 2  # as many edges as nodes at most, too
    response = key_client.post("/api/v1/flows/", {"name": "Fan", "data": fan}, format="json")
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", "data", "edges"], "too_long")]


def test_a_flow_moves_to_another_owner_only_within_that_owners_share_of_schedules(flow, user, make_flow, make_user, settings):
    # Its schedules go with it (they belong to the flow): moving a flow is taking places in the new owner's share.
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 2
    other = make_user("bob")
    flow_schedule_create(flow=make_flow(other, endpoint_name="theirs"), interval_minutes=5)
    flow_schedule_create(flow=flow, interval_minutes=5)
    second = flow_schedule_create(flow=flow, cron="0 9 * * *")
    with pytest.raises(ScheduleLimitReached) as caught:
        flow_update(flow=flow, user=other)
    assert caught.value.status == 422
    flow.refresh_from_db()
    assert flow.user_id == user.pk
    flow_schedule_delete(schedule=second)
    assert flow_update(flow=flow, user=other).user_id == other.pk  # one schedule fits the last place
    assert FlowSchedule.objects.filter(flow__user=other).count() == 2


def test_a_flow_without_schedules_moves_to_an_account_whose_share_is_full(flow, make_flow, make_user, settings):
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    other = make_user("bob")
    flow_schedule_create(flow=make_flow(other, endpoint_name="theirs"), interval_minutes=5)
    assert flow_update(flow=flow, user=other).user_id == other.pk
