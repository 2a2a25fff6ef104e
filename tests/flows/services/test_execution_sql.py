"""flows.services.execution_sql and the ledger's status index: the hand-written claim and finish find runs by primary key, the index holds only unfinished runs."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from psycopg import sql as sql_text

from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.execution_sql import _CLAIM_SQL, _FINISH_SQL, _worker_sql
from flows.services.runs import flow_run_cancel, flow_run_create
from flows.services.sweep import flow_runs_recover_interrupted

SCAN_OF_RUNS = re.compile(r"Scan\b.* on flows_flowrun\b")
INDEX_OF_RUNS = re.compile(r"Index (?:Only )?Scan using (\S+) on flows_flowrun\b")
BITMAP_INDEX_OF_RUNS = re.compile(r"Bitmap Index Scan on (flows_flowr\S*)")


def run_of(flow, user):
    return flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})


def plans_of_run_statements(call):
    """EXPLAIN of every statement `call` sends that reads or writes flows_flowrun, with its real parameters."""
    plans = []

    def explain(execute, sql, params, many, context):
        if "flows_flowrun" in sql and not sql.lstrip().upper().startswith(("INSERT", "EXPLAIN")):
            cursor = context["cursor"]
            cursor.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        result = call()
    return result, plans


@pytest.mark.usefixtures("execute_path")
def test_the_worker_finds_its_run_by_primary_key_behind_a_backlog_the_planner_never_counted(flow, user):
    # A fresh ledger that was never analyzed, with a backlog: PostgreSQL's planner estimated one row for
    # `status = 'queued'` and walked the whole backlog through the old status index for every claim and finish.
    if connection.vendor != "postgresql":
        pytest.skip("the plans are PostgreSQL's")
    backlog = [run_of(flow, user) for _ in range(300)]
    done, plans = plans_of_run_statements(lambda: flow_run_execute(run_id=backlog[150].id))
    assert done.status == "succeeded"
    assert len(plans) >= 2  # the claim and the finish at least
    for plan in plans:
        scans = SCAN_OF_RUNS.findall(plan)
        assert scans, plan
        assert all("using flows_flowrun_pkey" in scan for scan in scans), plan


def test_the_sweep_reads_the_unfinished_runs_index(flow, user):
    run_of(flow, user)
    stale = FlowRun.objects.unfinished().filter(status=FlowRun.Status.QUEUED, enqueued_at__lt=timezone.now())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a test table is small enough for a sequential scan
    assert "flow_run_unfinished" in stale.explain()


def test_unfinished_runs_are_exactly_the_queued_and_running_ones_through_every_transition(flow, user):
    def check():
        unfinished = set(FlowRun.objects.unfinished().values_list("pk", "status"))
        assert unfinished == set(FlowRun.objects.filter(status__in=["queued", "running"]).values_list("pk", "status"))
        return {status for _, status in unfinished}

    flow.max_attempts = 2
    flow.save(update_fields=["max_attempts"])
    succeeded, cancelled, interrupted, failing = (run_of(flow, user) for _ in range(4))
    assert check() == {"queued"}
    flow_run_execute(run_id=succeeded.id)
    flow_run_cancel(run=FlowRun.objects.get(pk=cancelled.pk))
    # A worker that died mid-run: the sweep puts the run back in the queue, and fails it once out of attempts.
    FlowRun.objects.filter(pk=interrupted.pk).update(status="running", attempts=1, started_at=timezone.now() - timedelta(hours=1))
    assert check() == {"queued", "running"}
    assert flow_runs_recover_interrupted(lease=timedelta(minutes=1)) == 1
    assert FlowRun.objects.get(pk=interrupted.pk).status == "queued"
    FlowRun.objects.filter(pk=failing.pk).update(status="running", attempts=2, started_at=timezone.now() - timedelta(hours=1))
    assert flow_runs_recover_interrupted(lease=timedelta(minutes=1)) == 1
    statuses = dict(FlowRun.objects.values_list("pk", "status"))
    assert (statuses[succeeded.pk], statuses[cancelled.pk], statuses[failing.pk]) == ("succeeded", "cancelled", "failed")
    assert check() == {"queued"}


def _generic_plan(sql: str, names: list[str], types: list[str], values: list) -> str:
    """EXPLAIN of the plan PostgreSQL keeps for a prepared statement once it plans it generically, as it does for
    statements a connection runs over and over (LANGRUN_DB_PREPARE_THRESHOLD): the arrays' lengths are unknown."""
    for number, name in enumerate(names, 1):
        sql = sql.replace(f"%({name})s", f"${number}")
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE langrun_plan_test({', '.join(types)}) AS {sql}")
        try:
            # A utility statement takes no bound parameters: the values go in as literals.
            literals = sql_text.SQL(", ").join(
                sql_text.SQL("{}::{}").format(sql_text.Literal(value), sql_text.SQL(type_))
                for value, type_ in zip(values, types, strict=True)
            )
            cursor.execute(sql_text.SQL("EXPLAIN EXECUTE langrun_plan_test({})").format(literals).as_string(connection.connection))
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE langrun_plan_test")
            cursor.execute("RESET plan_cache_mode")


def test_the_batch_claim_and_finish_find_runs_by_primary_key_in_their_generic_plans(flow, user):
    # With the flow's condition joined in, the generic plan of the claim walked every run of the flow through
    # its (flow, received_at) index on a ledger never analyzed, filtering out all but the batch.
    if connection.vendor != "postgresql":
        pytest.skip("the plans are PostgreSQL's")
    backlog = [str(run_of(flow, user).id) for _ in range(300)]
    batch = backlog[100:110]
    claim = _generic_plan(
        _worker_sql(_CLAIM_SQL),
        ["running", "now", "worker", "ids", "queued"],
        ["text", "timestamptz", "text", "text[]", "text"],
        ["running", timezone.now(), "w", batch, "queued"],
    )
    finish = _generic_plan(
        _worker_sql(_FINISH_SQL),
        ["now", "running", "ids", "runs", "results"],
        ["timestamptz", "text", "text[]", "text", "text"],
        [timezone.now(), "running", batch, "[]", "[]"],
    )
    for plan in (claim, finish):
        assert "Seq Scan on flows_flowrun" not in plan, plan
        indexes = INDEX_OF_RUNS.findall(plan) + BITMAP_INDEX_OF_RUNS.findall(plan)
        assert indexes and set(indexes) == {"flows_flowrun_pkey"}, plan
