"""flows.admin.run_reports (with charts and exports): the runs list's trend chart, search, date hierarchy and exports,
their permissions and owner scoping."""

import csv
import io
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from flows.admin.exports import csv_safe
from flows.models import FlowRun
from tests.flows.admin.helpers import run_of
from tests.helpers import grant, login

CHANGELIST = "admin:flows_flowrun_changelist"
EXPORT = "admin:flows_flowrun_export"


def _failed(flow, error: str) -> FlowRun:
    run = run_of(flow, execute=False)
    FlowRun.objects.filter(pk=run.pk).update(status="failed", error=error)
    return run


def test_the_list_shows_the_last_24_hours_chart_by_status_and_switches_to_30_days(staff, other, make_flow):
    mine = make_flow(staff)
    run_of(mine)
    _failed(mine, "boom")
    _failed(make_flow(other, name="Theirs"), "not mine")
    c = login(staff)
    html = c.get(reverse(CHANGELIST)).content.decode()
    assert '<div class="lr-trend" data-range="24h">' in html
    assert "Last 24 hours, per hour</strong> · 2 runs" in html  # the other user's run is not counted
    svg = re.search(r'<svg class="lr-chart".*?</svg>', html, re.S)[0]
    assert svg.count('<g class="lr-chart-slot">') == 24
    assert svg.count('class="lr-chart-bar lr-chart-succeeded"') == 1 and svg.count('class="lr-chart-bar lr-chart-failed"') == 1
    assert "1 succeeded, 1 failed</title>" in svg
    assert re.search(r"fill|style=", svg) is None  # colours come from the stylesheet's theme variables
    # The switch keeps the list's other parameters, and the list itself ignores the chart's.
    response = c.get(reverse(CHANGELIST), {"status": "failed", "trends": "30d"})
    assert response.status_code == 200 and [r.status for r in response.context["cl"].result_list] == ["failed"]
    html = response.content.decode()
    assert '<div class="lr-trend" data-range="30d">' in html and html.count('<g class="lr-chart-slot">') == 30
    assert 'href="?status=failed&amp;trends=24h"' in html


def test_an_unknown_chart_range_shows_the_24_hours(staff):
    response = login(staff).get(reverse(CHANGELIST), {"trends": "forever"})
    assert response.status_code == 200 and 'data-range="24h"' in response.content.decode()


def test_the_list_has_a_date_hierarchy_on_received_time(staff, make_flow):
    run_of(make_flow(staff))
    today = timezone.localdate()
    response = login(staff).get(reverse(CHANGELIST), {"received_at__year": today.year, "received_at__month": today.month})
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 1
    assert response.context["cl"].date_hierarchy == "received_at"
    assert f"?received_at__year={today.year}" in response.content.decode()  # the hierarchy's links


@pytest.mark.parametrize("how", ["full id", "prefix", "flow name", "error text"])
def test_the_search_box_finds_a_run(staff, make_flow, how):
    target = _failed(make_flow(staff, name="Nightly report"), "Node 'fetch': HTTP 503 from upstream")
    run_of(make_flow(staff, name="Greeting"))
    term = {"full id": str(target.pk), "prefix": str(target.pk)[:8], "flow name": "nightly", "error text": "HTTP 503"}[how]
    response = login(staff).get(reverse(CHANGELIST), {"q": term})
    assert response.status_code == 200
    assert [r.pk for r in response.context["cl"].result_list] == [target.pk]
    assert "first characters" in response.content.decode()  # the search box's help text


def test_the_search_does_not_find_another_users_run(staff, other, make_flow):
    hidden = _failed(make_flow(other, name="Theirs"), "secret failure")
    c = login(staff)
    for term in (str(hidden.pk), str(hidden.pk)[:8], "Theirs", "secret failure"):
        assert list(c.get(reverse(CHANGELIST), {"q": term}).context["cl"].result_list) == []


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_the_export_action_writes_the_selected_runs_as_csv_and_json(staff, make_flow):
    flow = make_flow(staff)
    chosen, _ = run_of(flow), run_of(flow)
    c = login(staff)
    data = {"action": "export_csv", "_selected_action": [str(chosen.pk)]}
    response = c.post(reverse(CHANGELIST), data)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="langrun-runs-\d{8}-\d{6}\.csv"', response["Content-Disposition"])
    rows = _csv(response)
    assert [r["id"] for r in rows] == [str(chosen.pk)]
    assert rows[0]["status"] == "succeeded" and rows[0]["flow_name"] == "Greeting" and rows[0]["attempts"] == "1"
    response = c.post(reverse(CHANGELIST), {**data, "action": "export_json"})
    assert response["Content-Type"] == "application/json"
    assert [r["id"] for r in json.loads(response.content)] == [str(chosen.pk)]


def test_the_csv_export_quotes_cells_a_spreadsheet_would_run_as_a_formula(staff, make_flow):
    run = _failed(make_flow(staff, name="-drop"), '=HYPERLINK("http://evil")')
    response = login(staff).post(reverse(CHANGELIST), {"action": "export_csv", "_selected_action": [str(run.pk)]})
    (row,) = _csv(response)
    assert row["error"] == '\'=HYPERLINK("http://evil")' and row["flow_name"] == "'-drop"
    assert [csv_safe(v) for v in ("+1", "@SUM(A1)", "-2", "\tx", "plain", None, "a=b")] == [
        "'+1",
        "'@SUM(A1)",
        "'-2",
        "'\tx",
        "plain",
        "",
        "a=b",
    ]
    # JSON keeps the text as it is: a script reads it, not a spreadsheet.
    response = login(staff).post(reverse(CHANGELIST), {"action": "export_json", "_selected_action": [str(run.pk)]})
    assert json.loads(response.content)[0]["error"] == '=HYPERLINK("http://evil")'


def test_the_list_links_to_an_export_of_what_it_shows_with_its_filters(staff, other, make_flow):
    mine = make_flow(staff, name="Mine")
    ok = run_of(mine)
    failed = _failed(mine, "boom")
    _failed(make_flow(other, name="Theirs"), "boom")
    c = login(staff)
    html = c.get(reverse(CHANGELIST), {"status": "failed", "q": "boom"}).content.decode()
    link = re.search(r'href="([^"]+)" class="lr-export lr-export-csv"', html)[1].replace("&amp;", "&")
    assert link.startswith(reverse(EXPORT) + "?") and "status=failed" in link and "q=boom" in link and "format=csv" in link
    assert [r["id"] for r in _csv(c.get(link))] == [str(failed.pk)]  # filtered, and only the user's own
    everything = c.get(reverse(EXPORT), {"format": "json"})
    assert {r["id"] for r in json.loads(everything.content)} == {str(ok.pk), str(failed.pk)}


def test_the_export_refuses_an_unknown_format_or_filter(staff):
    c = login(staff)
    assert c.get(reverse(EXPORT), {"format": "xlsx"}).status_code == 400
    assert c.get(reverse(EXPORT), {"format": "csv", "no_such_field": "1"}).status_code == 400


def test_exports_need_the_view_permission(make_user, make_flow):
    clerk = make_user("clerk", is_staff=True)
    run = run_of(make_flow(clerk))
    c = login(clerk)
    assert c.get(reverse(EXPORT), {"format": "csv"}).status_code == 403
    assert c.post(reverse(CHANGELIST), {"action": "export_csv", "_selected_action": [str(run.pk)]}).status_code == 403
    grant(clerk, "flows.view_flowrun")
    assert [r["id"] for r in _csv(c.get(reverse(EXPORT), {"format": "csv"}))] == [str(run.pk)]
    response = c.get(reverse(CHANGELIST))
    assert 'value="export_csv"' in response.content.decode() and 'value="replay_selected"' not in response.content.decode()


def test_a_selected_run_of_another_user_is_not_exported(staff, other, make_flow):
    theirs = run_of(make_flow(other, name="Theirs"))
    response = login(staff).post(reverse(CHANGELIST), {"action": "export_csv", "_selected_action": [str(theirs.pk)]})
    # The selection is taken from the user's own runs only: the file has its header and nothing else.
    assert response.status_code == 200 and _csv(response) == []


def test_an_export_of_many_runs_takes_a_fixed_number_of_queries(staff, make_flow):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    flow = make_flow(staff)
    c = login(staff)

    def queries(n_runs: int) -> int:
        ids = [str(_failed(flow, "boom").pk) for _ in range(n_runs)]
        with CaptureQueriesContext(connection) as ctx:
            response = c.post(reverse(CHANGELIST), {"action": "export_csv", "_selected_action": ids})
        assert len(_csv(response)) == n_runs
        return len(ctx)

    assert queries(1) == queries(5)
