"""flows.services.reports: runs per hour and day by status, the run search, and the export rows."""

from datetime import UTC, datetime, timedelta

import pytest

from flows.models import FlowRun
from flows.services.reports import EXPORT_FIELDS, STATUSES, flow_run_trend, flow_runs_export_rows, flow_runs_search, flow_runs_visible
from flows.services.runs import flow_run_create

NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)


def _run(flow, *, at: datetime, status: str = "succeeded", error: str = "") -> FlowRun:
    run = flow_run_create(flow=flow, user=flow.user, trigger="webhook", payload={})
    # received_at is auto_now_add: set the time the test needs afterwards.
    FlowRun.objects.filter(pk=run.pk).update(received_at=at, status=status, error=error)
    run.refresh_from_db()
    return run


@pytest.fixture
def flows(make_flow, make_user):
    owner, stranger = make_user("owner"), make_user("stranger")
    return make_flow(owner, name="Orders"), make_flow(stranger, name="Invoices")


def test_hourly_trend_has_24_buckets_ending_with_the_current_hour_and_counts_by_status(flows):
    mine, _ = flows
    _run(mine, at=NOW - timedelta(minutes=5))  # 14:20, the current hour
    _run(mine, at=NOW - timedelta(minutes=20), status="failed")  # 14:05
    _run(mine, at=NOW - timedelta(hours=1))  # 13:25
    _run(mine, at=NOW - timedelta(hours=23, minutes=25), status="queued")  # 15:00 yesterday: the first bucket
    _run(mine, at=NOW - timedelta(hours=23, minutes=26))  # 14:59 yesterday: too old
    trend = flow_run_trend(user=mine.user, span="24h", now=NOW)
    assert len(trend.buckets) == 24
    assert trend.buckets[0] == datetime(2026, 3, 9, 15, tzinfo=UTC)
    assert trend.buckets[-1] == datetime(2026, 3, 10, 14, tzinfo=UTC)
    assert set(trend.counts) == set(STATUSES)
    assert trend.counts["succeeded"][-1] == 1 and trend.counts["failed"][-1] == 1
    assert trend.counts["succeeded"][-2] == 1
    assert trend.counts["queued"][0] == 1
    assert trend.total == 4 and trend.totals[-1] == 2


def test_daily_trend_has_30_calendar_days(flows):
    mine, _ = flows
    _run(mine, at=NOW)
    _run(mine, at=datetime(2026, 3, 10, 0, 0, tzinfo=UTC), status="cancelled")
    _run(mine, at=datetime(2026, 2, 9, 23, 59, tzinfo=UTC))  # the first day (30 days back from March 10 inclusive)
    _run(mine, at=datetime(2026, 2, 8, 23, 59, tzinfo=UTC))  # before it
    trend = flow_run_trend(user=mine.user, span="30d", now=NOW)
    assert len(trend.buckets) == 30
    assert trend.buckets[0] == datetime(2026, 2, 9, tzinfo=UTC) and trend.buckets[-1] == datetime(2026, 3, 10, tzinfo=UTC)
    assert trend.counts["succeeded"][-1] == 1 and trend.counts["cancelled"][-1] == 1
    assert trend.counts["succeeded"][0] == 1
    assert trend.total == 3


def test_trend_counts_only_the_users_own_runs_and_a_superuser_sees_all(flows, superuser):
    mine, theirs = flows
    _run(mine, at=NOW)
    _run(theirs, at=NOW, status="failed")
    _run(theirs, at=NOW, status="failed")
    assert flow_run_trend(user=mine.user, now=NOW).total == 1
    assert flow_run_trend(user=mine.user, now=NOW).counts["failed"] == [0] * 24
    assert flow_run_trend(user=theirs.user, now=NOW).counts["failed"][-1] == 2
    assert flow_run_trend(user=superuser, now=NOW).total == 3


def test_trend_with_no_runs_has_every_bucket_at_zero(make_user):
    trend = flow_run_trend(user=make_user("nobody"), span="30d", now=NOW)
    assert len(trend.buckets) == 30 and trend.total == 0
    assert all(counts == [0] * 30 for counts in trend.counts.values())


def test_an_unknown_range_is_refused(make_user):
    with pytest.raises(KeyError):
        flow_run_trend(user=make_user("nobody"), span="7y", now=NOW)


def _found(user, term) -> set:
    return set(flow_runs_search(runs=flow_runs_visible(user=user), term=term).values_list("pk", flat=True))


def test_search_finds_a_run_by_its_full_id_or_a_prefix_with_or_without_dashes(flows):
    mine, _ = flows
    run, other = _run(mine, at=NOW), _run(mine, at=NOW)
    assert _found(mine.user, str(run.pk)) == {run.pk}
    assert _found(mine.user, str(run.pk).upper()) == {run.pk}
    assert _found(mine.user, str(run.pk)[:8]) == {run.pk} | ({other.pk} if str(other.pk)[:8] == str(run.pk)[:8] else set())
    assert _found(mine.user, str(run.pk)[:13]) >= {run.pk}  # "xxxxxxxx-xxxx", with its dash
    assert _found(mine.user, str(run.pk).replace("-", "")[:12]) >= {run.pk}


def test_search_finds_runs_by_flow_name_and_error_text(flows, make_flow):
    mine, _ = flows
    ok = _run(mine, at=NOW)
    broken = _run(make_flow(mine.user, name="Newsletter"), at=NOW, status="failed", error="Node 'http': connection refused")
    assert _found(mine.user, "orders") == {ok.pk}
    assert _found(mine.user, "Connection Refused") == {broken.pk}
    assert _found(mine.user, "newsletter") == {broken.pk}
    assert _found(mine.user, "nothing like it") == set()
    assert _found(mine.user, "  ") == {ok.pk, broken.pk}


def test_search_never_finds_another_users_runs(flows):
    mine, theirs = flows
    hidden = _run(theirs, at=NOW, status="failed", error="secret failure")
    assert _found(mine.user, str(hidden.pk)) == set()
    assert _found(mine.user, "invoices") == set()
    assert _found(mine.user, "secret failure") == set()
    assert _found(theirs.user, "secret failure") == {hidden.pk}


def test_export_rows_have_every_field_newest_first(flows):
    mine, _ = flows
    older = _run(mine, at=NOW - timedelta(hours=1), status="failed", error="=1+1")
    newer = _run(mine, at=NOW)
    rows = flow_runs_export_rows(runs=flow_runs_visible(user=mine.user))
    assert [r["id"] for r in rows] == [str(newer.pk), str(older.pk)]
    assert all(list(r) == EXPORT_FIELDS for r in rows)
    assert rows[1]["error"] == "=1+1" and rows[1]["status"] == "failed" and rows[1]["flow_name"] == "Orders"
    assert rows[1]["received_at"] == (NOW - timedelta(hours=1)).isoformat()
    assert rows[1]["version"] == 1 and rows[1]["replay_of_id"] is None
