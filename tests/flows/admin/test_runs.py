"""flows.admin.runs: the run list and page, replay and cancel, their permissions and owner scoping."""

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from flows.models import FlowRun, ReplayJob
from flows.services.flows import flow_update
from flows.services.replays import replay_job_step
from flows.services.runs import flow_run_create
from flows.services.variables import variable_create
from langrun.services import api_key_create
from tests.flows.admin.helpers import messages_of, run_of
from tests.helpers import GREETING_FLOW, grant, login, post


def test_run_list_columns_newest_first(staff, make_flow):
    flow = make_flow(staff)
    first = run_of(flow)
    second = run_of(flow, payload={"x": 1})
    response = login(staff).get(reverse("admin:flows_flowrun_changelist"))
    assert response.status_code == 200
    assert [r.pk for r in response.context["cl"].result_list] == [second.pk, first.pk]
    html = response.content.decode()
    assert '<span class="lr-badge lr-badge-failed">failed</span>' in html
    assert '<span class="lr-badge lr-badge-succeeded">succeeded</span>' in html
    assert str(first.pk)[:8] in html
    assert " ms<" in html or "&lt;1 ms" in html


def test_run_list_has_no_per_row_queries_and_skips_the_full_count(staff, make_flow):
    flow = make_flow(staff)

    def count_queries():
        c = login(staff)
        with CaptureQueriesContext(connection) as ctx:
            response = c.get(reverse("admin:flows_flowrun_changelist"), {"status": "succeeded"})
        assert response.status_code == 200
        return len(ctx), ctx.captured_queries

    run_of(flow)
    one, _ = count_queries()
    for _ in range(6):
        run_of(make_flow(staff, name="another"))
    many, queries = count_queries()
    assert many == one
    # With a filter applied, Django would count the whole table a second time unless show_full_result_count is off.
    # (The trend chart's one grouped query counts runs per hour and status: not a count of the list.)
    assert sum("COUNT(" in q["sql"].upper() and "GROUP BY" not in q["sql"].upper() for q in queries) == 1


def test_run_list_filters(staff, make_flow):
    a = make_flow(staff, name="A")
    b = make_flow(staff, name="B")
    ok = run_of(a)
    failed = run_of(b, payload={"x": 1})
    queued = run_of(a, execute=False, trigger="admin")
    c = login(staff)

    def ids(query):
        response = c.get(reverse("admin:flows_flowrun_changelist"), query)
        assert response.status_code == 200
        return {r.pk for r in response.context["cl"].result_list}

    assert ids({"status": "failed"}) == {failed.pk}
    assert ids({"flow": str(a.pk)}) == {ok.pk, queued.pk}
    assert ids({"trigger": "admin"}) == {queued.pk}
    assert ids({"received_at__gte": "2000-01-01 00:00:00+00:00", "received_at__lt": "2999-01-01 00:00:00+00:00"}) == {
        ok.pk,
        failed.pk,
        queued.pk,
    }
    assert ids({"received_at__gte": "2999-01-01 00:00:00+00:00"}) == set()


@pytest.mark.parametrize("value", ["abc", "7e9da5de-3f7c"])
def test_a_flow_filter_that_is_not_a_flow_id_is_an_unknown_filter(staff, make_flow, value):
    # A truncated or edited link: Django's own filters answer such a value with the list's "?e=1" page; this one
    # answered 500 (the list and its export).
    run_of(make_flow(staff, name="A"))
    c = login(staff)
    response = c.get(reverse("admin:flows_flowrun_changelist"), {"flow": value})
    assert response.status_code == 302 and response.url.endswith("?e=1")
    assert c.get(reverse("admin:flows_flowrun_export"), {"flow": value, "format": "csv"}).status_code == 400


def test_staff_see_only_runs_of_their_flows_and_their_flows_in_the_filter(staff, other, make_flow):
    mine = run_of(make_flow(staff, name="Mine"))
    run_of(make_flow(other, name="Theirs"))
    response = login(staff).get(reverse("admin:flows_flowrun_changelist"))
    assert [r.pk for r in response.context["cl"].result_list] == [mine.pk]
    flow_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", None) == "flow")
    assert [name for _, name in flow_filter.lookup_choices] == ["Mine"]


def test_run_page_shows_payload_outputs_and_node_table_in_order(staff, make_flow):
    run = run_of(make_flow(staff))
    response = login(staff).get(reverse("admin:flows_flowrun_change", args=[run.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;name&quot;: &quot;Ada&quot;" in html  # pretty-printed payload
    assert "&quot;greeting&quot;: &quot;Hello Ada!&quot;" in html
    rows = re.findall(r'<tr class="lr-node-row" data-node-id="([^"]+)">(.*?)</tr>', html, re.S)
    assert [node for node, _ in rows] == ["hook", "greet", "out"]
    assert all("lr-badge-succeeded" in row for _, row in rows)
    assert "Template" in rows[1][1] and "Hello Ada!" in rows[1][1]
    assert 'class="lr-node lr-node-succeeded" data-node-id="greet"' in html  # the diagram coloured by the run
    assert '<meta http-equiv="refresh"' not in html  # finished: no auto-refresh
    assert 'name="_save"' not in html  # the ledger is read-only
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', html, re.S).group(1)
    assert f"Run {str(run.pk)[:8]} of Greeting" in crumbs and str(run.flow_id) not in crumbs


def test_run_page_draws_the_version_the_run_executed(staff, make_flow):
    flow = make_flow(staff)
    run = run_of(flow)
    renamed = json.loads(json.dumps(GREETING_FLOW).replace('"greet"', '"salute"'))
    flow_update(flow=flow, data=renamed)
    html = login(staff).get(reverse("admin:flows_flowrun_change", args=[run.pk])).content.decode()
    diagram_svg = re.search(r'<svg class="lr-diagram".*?</svg>', html, re.S).group(0)
    assert 'class="lr-node lr-node-succeeded" data-node-id="greet"' in diagram_svg
    assert 'data-node-id="salute"' not in diagram_svg


def test_run_page_shows_the_failing_node_and_skipped_ones(staff, make_flow):
    run = run_of(make_flow(staff), payload={"x": 1})
    html = login(staff).get(reverse("admin:flows_flowrun_change", args=[run.pk])).content.decode()
    rows = dict(re.findall(r'<tr class="lr-node-row" data-node-id="([^"]+)">(.*?)</tr>', html, re.S))
    assert "lr-badge-failed" in rows["greet"] and "Template key" in rows["greet"]
    assert "lr-badge-skipped" in rows["out"]
    assert "Template key &#x27;name&#x27; is missing" in html


def test_run_page_of_raw_text_body_and_queued_run(staff, make_flow):
    flow = make_flow(staff)
    run = flow_run_create(flow=flow, user=staff, trigger="webhook", payload=None, body="plain <text>", content_type="text/plain")
    html = login(staff).get(reverse("admin:flows_flowrun_change", args=[run.pk])).content.decode()
    assert "plain &lt;text&gt;" in html
    assert '<meta http-equiv="refresh" content="2">' in html  # still queued: the page refreshes itself
    assert reverse("admin:flows_flowrun_cancel", args=[run.pk]) in html
    assert "No node results yet." in html


@pytest.mark.parametrize("name", ["change", "delete", "replay", "cancel"])
def test_other_users_run_pages_are_404(staff, other, make_flow, name):
    run = run_of(make_flow(other), execute=False)
    url = reverse(f"admin:flows_flowrun_{name}", args=[run.pk])
    c = login(staff)
    assert c.get(url).status_code in (404, 405)
    assert c.post(url, {"post": "yes"}).status_code == 404
    run.refresh_from_db()
    assert run.status == "queued"
    assert FlowRun.objects.count() == 1


def test_runs_cannot_be_added(superuser):
    assert login(superuser).get(reverse("admin:flows_flowrun_add")).status_code == 403


def action(c, ids, name):
    return c.post(reverse("admin:flows_flowrun_changelist"), {"action": name, "_selected_action": [str(i) for i in ids]}, follow=True)


def _replay_jobs_done():
    """Run the replay jobs the action started, as a worker would."""
    for job in ReplayJob.objects.all():
        replay_job_step(job_id=job.pk)


def test_replay_selected_runs(staff, make_flow):
    flow = make_flow(staff)
    a, b = run_of(flow), run_of(flow, payload={"x": 1})
    response = action(login(staff), [a.pk, b.pk], "replay_selected")
    job = ReplayJob.objects.get()
    assert (job.user, job.matched, job.status) == (staff, 2, "pending")
    assert any("Replaying 2 run(s) in the background" in m for m in messages_of(response))
    _replay_jobs_done()
    replays = FlowRun.objects.filter(trigger="replay")
    assert sorted(r.replay_of_id for r in replays) == sorted([a.pk, b.pk])
    assert {r.status for r in replays} == {"queued"}
    assert {r.payload == FlowRun.objects.get(pk=r.replay_of_id).payload for r in replays} == {True}
    page = login(staff).get(reverse("admin:flows_replayjob_change", args=[job.pk])).content.decode()
    assert "2 of 2 (100%)" in page and "lr-badge-succeeded" in page
    listing = login(staff).get(reverse("admin:flows_replayjob_changelist")).content.decode()
    assert str(job.pk)[:8] in listing


def test_cancel_queued_runs_leaves_finished_ones(staff, make_flow):
    flow = make_flow(staff)
    queued = run_of(flow, execute=False)
    done = run_of(flow)
    response = action(login(staff), [queued.pk, done.pk], "cancel_queued")
    queued.refresh_from_db()
    done.refresh_from_db()
    assert (queued.status, done.status) == ("cancelled", "succeeded")
    msgs = messages_of(response)
    assert "Cancelled 1 run(s)." in msgs
    assert any("1 run(s) had finished already" in m for m in msgs)


def test_a_flow_builder_follows_the_replay_actions_link_to_the_job(bare_staff, make_flow):
    from django.contrib.auth.models import Group

    bare_staff.groups.add(Group.objects.get(name="Flow builders"))
    run = run_of(make_flow(bare_staff))
    c = login(bare_staff)
    messages = messages_of(action(c, [run.pk], "replay_selected"))
    [link] = [re.search(r'href="([^"]+)"', m).group(1) for m in messages if "Replaying 1 run(s)" in m]
    assert c.get(link).status_code == 200


def test_actions_ignore_other_users_runs(staff, other, make_flow):
    theirs = run_of(make_flow(other), execute=False)
    c = login(staff)
    action(c, [theirs.pk], "cancel_queued")
    action(c, [theirs.pk], "replay_selected")
    _replay_jobs_done()
    theirs.refresh_from_db()
    assert theirs.status == "queued"
    assert FlowRun.objects.count() == 1


def test_replay_and_cancel_buttons(staff, make_flow):
    flow = make_flow(staff)
    run = run_of(flow, execute=False)
    c = login(staff)
    assert c.get(reverse("admin:flows_flowrun_replay", args=[run.pk])).status_code == 405
    response = c.post(reverse("admin:flows_flowrun_cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert "Run cancelled." in messages_of(response)
    response = c.post(reverse("admin:flows_flowrun_cancel", args=[run.pk]), follow=True)
    assert any("only a queued or running run can be cancelled" in m for m in messages_of(response))

    response = c.post(reverse("admin:flows_flowrun_replay", args=[run.pk]))
    replay = FlowRun.objects.get(replay_of=run)
    assert response["Location"] == reverse("admin:flows_flowrun_change", args=[replay.pk])


def _unreplayable(flow, user):
    """A run whose payload retention deleted, and one whose tweaks name a variable deleted since."""
    pruned = run_of(flow)
    FlowRun.objects.filter(pk=pruned.pk).update(payload=None, body="", payload_pruned_at=timezone.now())
    variable = variable_create(user=user, name="GREETING", value="Hi {name}!", kind="generic")
    tweaked = flow_run_create(
        flow=flow, user=user, trigger="api", payload={"name": "Ada"}, tweaks={"greet": {"template": {"variable": "GREETING"}}}
    )
    variable.delete()
    return pruned, tweaked


def test_replay_button_of_a_run_that_cannot_be_replayed_says_why(staff, make_flow):
    pruned, tweaked = _unreplayable(make_flow(staff), staff)
    c = login(staff)
    response = c.post(reverse("admin:flows_flowrun_replay", args=[pruned.pk]), follow=True)
    assert response.status_code == 200
    assert any("deleted by retention" in m for m in messages_of(response))
    response = c.post(reverse("admin:flows_flowrun_replay", args=[tweaked.pk]), follow=True)
    assert response.status_code == 200
    assert any("'GREETING' does not exist" in m for m in messages_of(response))
    assert not FlowRun.objects.filter(trigger="replay").exists()


def test_replay_action_replays_what_it_can_and_says_why_not_the_others(staff, make_flow):
    flow = make_flow(staff)
    pruned, tweaked = _unreplayable(flow, staff)
    fine = run_of(flow)
    response = action(login(staff), [pruned.pk, tweaked.pk, fine.pk], "replay_selected")
    assert response.status_code == 200
    _replay_jobs_done()
    assert list(FlowRun.objects.filter(trigger="replay").values_list("replay_of_id", flat=True)) == [fine.pk]
    job = ReplayJob.objects.get()
    assert (job.created, job.failed) == (1, 2)
    page = login(staff).get(reverse("admin:flows_replayjob_change", args=[job.pk])).content.decode()
    assert "deleted by retention" in page and "does not exist" in page


def test_other_users_replay_jobs_are_404_in_the_admin(staff, other, make_flow):
    from flows.services.replays import replay_job_create

    job = replay_job_create(user=other, filters={"status": "failed"})
    assert login(staff).get(reverse("admin:flows_replayjob_change", args=[job.pk])).status_code == 404


def test_run_list_does_not_load_request_bodies(staff, make_flow):
    run_of(make_flow(staff), payload={"big": "x" * 5000})
    with CaptureQueriesContext(connection) as ctx:
        login(staff).get(reverse("admin:flows_flowrun_changelist"))
    page_query = next(q["sql"] for q in ctx.captured_queries if 'FROM "flows_flowrun"' in q["sql"] and "COUNT" not in q["sql"])
    assert '"flows_flowrun"."body"' not in page_query and '"flows_flowrun"."payload"' not in page_query


def test_run_actions_and_buttons_need_their_permissions(bare_staff, make_flow):
    run = run_of(make_flow(bare_staff), execute=False)
    grant(bare_staff, "flows.view_flowrun")
    c = login(bare_staff)
    assert c.get(reverse("admin:flows_flowrun_change", args=[run.pk])).status_code == 200
    offered = [name for name, _ in c.get(reverse("admin:flows_flowrun_changelist")).context["action_form"].fields["action"].choices]
    assert offered == ["", "export_csv", "export_json"]  # viewing allows exports only
    assert c.post(reverse("admin:flows_flowrun_replay", args=[run.pk])).status_code == 403
    assert c.post(reverse("admin:flows_flowrun_cancel", args=[run.pk])).status_code == 403
    action(c, [run.pk], "replay_selected")
    action(c, [run.pk], "cancel_queued")
    run.refresh_from_db()
    assert run.status == "queued" and FlowRun.objects.count() == 1
    grant(bare_staff, "flows.add_flowrun", "flows.change_flowrun")  # a replay adds a run, a cancel changes one
    c = login(bare_staff)
    assert c.post(reverse("admin:flows_flowrun_replay", args=[run.pk])).status_code == 302
    assert c.post(reverse("admin:flows_flowrun_cancel", args=[run.pk])).status_code == 302
    run.refresh_from_db()
    assert run.status == "cancelled" and FlowRun.objects.filter(replay_of=run).exists()


def test_the_run_page_offers_only_the_buttons_the_user_may_use(bare_staff, make_flow):
    run = run_of(make_flow(bare_staff), execute=False)
    replay_url = reverse("admin:flows_flowrun_replay", args=[run.pk])
    cancel_url = reverse("admin:flows_flowrun_cancel", args=[run.pk])
    grant(bare_staff, "flows.view_flowrun")
    page = login(bare_staff).get(reverse("admin:flows_flowrun_change", args=[run.pk])).content.decode()
    assert replay_url not in page and cancel_url not in page
    grant(bare_staff, "flows.add_flowrun", "flows.change_flowrun")
    page = login(bare_staff).get(reverse("admin:flows_flowrun_change", args=[run.pk])).content.decode()
    assert replay_url in page and cancel_url in page


def test_a_running_runs_page_shows_its_progress_and_cancels_it(staff, make_flow):
    from flows.models import NodeResult, RunAttempt

    flow = make_flow(staff)
    run = run_of(flow, execute=False)
    FlowRun.objects.filter(pk=run.pk).update(status="running", attempts=1, started_at=timezone.now())
    RunAttempt.objects.create(run=run, number=1, started_at=timezone.now())
    NodeResult.objects.create(run=run, node_id="hook", component_type="Webhook", status="succeeded", output={}, order=0)
    NodeResult.objects.create(run=run, node_id="greet", component_type="Template", status="running", order=1)
    c = login(staff)
    html = c.get(reverse("admin:flows_flowrun_change", args=[run.pk])).content.decode()
    assert "lr-node-running" in html and "lr-node-succeeded" in html  # the diagram, coloured as far as it went
    assert reverse("admin:flows_flowrun_cancel", args=[run.pk]) in html
    response = c.post(reverse("admin:flows_flowrun_cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "Cancelled while running.")
    assert "Run cancelled." in messages_of(response)


def test_filtered_runs_are_listed_and_filterable(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    flow_update(flow=flow, accept_if="payload.ok")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(user=staff, name="k").key)
    assert post(client, "greet", b'{"ok": false}').status_code == 200
    html = login(staff).get(reverse("admin:flows_flowrun_changelist") + "?status__exact=filtered").content.decode()
    assert "lr-badge-filtered" in html


def test_run_page_shows_the_request_masked(staff, make_flow):
    make_flow(staff, endpoint_name="greet")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(user=staff, name="k").key)
    run_id = post(client, "greet?event=push", HTTP_X_GITHUB_EVENT="push").json()["run_id"]
    html = login(staff).get(reverse("admin:flows_flowrun_change", args=[run_id])).content.decode()
    assert "&quot;x-github-event&quot;: &quot;push&quot;" in html and "&quot;event&quot;: &quot;push&quot;" in html
    assert "&quot;x-api-key&quot;: &quot;***&quot;" in html and "sk-" not in html


def test_run_list_reads_no_graph_of_the_flows(staff, make_flow):
    # A flow's graph may be up to a megabyte: a page of 50 runs read it with each run.
    run_of(make_flow(staff))
    with CaptureQueriesContext(connection) as queries:
        assert login(staff).get(reverse("admin:flows_flowrun_changelist")).status_code == 200
    flow_data = f"{connection.ops.quote_name('flows_flow')}.{connection.ops.quote_name('data')}"
    assert not [q["sql"] for q in queries if flow_data in q["sql"]]
