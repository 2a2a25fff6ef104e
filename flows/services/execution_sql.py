"""The worker's hand-written claim and finish statements: PostgreSQL's (one statement each), SQLite's (one transaction each)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from flows.models import Flow, FlowRun, FlowVersion, NodeResult, RunAttempt
from flows.services.storable import RunOutcome, _json_text
from langrun.db import loaded_instance


def _worker_name() -> str:
    """host:pid of this process, recorded on the runs it claims (which machine and process did the work)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


# The runs are reached through the primary key alone, in every plan PostgreSQL may keep for the statement:
# once prepared, it is planned without knowing how many ids there are, and on a ledger it never analyzed
# (a new install) it walked every run of the flow through the (flow, received_at) index when the flow's
# condition was a join (or EXISTS, which it turns into one), and read the whole ledger for the finish's
# join with the JSON rows. Scalar subqueries are not turned into joins; a test checks the generic plans.
_CLAIM_SQL = """
WITH claimed AS (
    UPDATE {run} AS r
    SET status = %(running)s, started_at = %(now)s, attempts = r.attempts + 1, next_attempt_at = NULL, worker = %(worker)s
    WHERE r.id = ANY(%(ids)s::uuid[]) AND r.status = %(queued)s
        AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= %(now)s)
        AND (SELECT COALESCE(f.max_concurrent_runs, 0) = 0 AND COALESCE(f.throttle_limit, 0) = 0 AND f.paused_at IS NULL
             FROM {flow} AS f WHERE f.id = r.flow_id)
    RETURNING r.id, r.flow_id, r.user_id, r.version_id, r.trigger, r.attempts, r.payload, r.tweaks, r.request
), attempt AS (
    INSERT INTO {attempt} (run_id, number, outcome, error, started_at)
    SELECT id, attempts, %(running)s, '', %(now)s FROM claimed
)
SELECT c.id, c.flow_id, c.user_id, c.version_id, c.trigger, c.attempts, c.payload, c.tweaks, c.request,
    f.user_id, f.timeout, f.max_attempts, f.max_concurrent_runs, COALESCE(v.data, CASE WHEN c.version_id IS NULL THEN f.data END),
    v.number
FROM claimed AS c JOIN {flow} AS f ON f.id = c.flow_id LEFT JOIN {version} AS v ON v.id = c.version_id
"""


def _worker_sql(template: str) -> str:
    """One of the worker's hand-written statements, with the ledger's table names filled in."""
    return template.format(
        run=FlowRun._meta.db_table,
        flow=Flow._meta.db_table,
        attempt=RunAttempt._meta.db_table,
        version=FlowVersion._meta.db_table,
        result=NodeResult._meta.db_table,
    )


def _claim_params(*, now, worker) -> dict[str, Any]:
    return {"now": now, "worker": worker, "queued": FlowRun.Status.QUEUED, "running": FlowRun.Status.RUNNING}


def _flow_run_claim_rows_pg(*, run_ids, now, worker) -> list[tuple]:
    params = {**_claim_params(now=now, worker=worker), "ids": [str(run_id) for run_id in run_ids]}
    with connection.cursor() as cursor:
        cursor.execute(_worker_sql(_CLAIM_SQL), params)
        return cursor.fetchall()


# SQLite has UPDATE … RETURNING but no data-modifying CTE: the same claim as three statements in one
# (IMMEDIATE) transaction, hand-written like PostgreSQL's: the ORM spent most of an embedded worker's
# time compiling its queries.
_CLAIM_SQLITE = (
    """UPDATE {run} SET status = %(running)s, started_at = %(now)s, attempts = attempts + 1, next_attempt_at = NULL,
        worker = %(worker)s
    WHERE id = %(id)s AND status = %(queued)s AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
        AND EXISTS (SELECT 1 FROM {flow} AS f WHERE f.id = {run}.flow_id AND COALESCE(f.max_concurrent_runs, 0) = 0
            AND COALESCE(f.throttle_limit, 0) = 0 AND f.paused_at IS NULL)
    RETURNING id, flow_id, user_id, version_id, trigger, attempts, payload, tweaks, request""",
    """INSERT INTO {attempt} (run_id, number, outcome, error, started_at) VALUES (%(id)s, %(attempts)s, %(running)s, '', %(now)s)""",
    """SELECT f.user_id, f.timeout, f.max_attempts, f.max_concurrent_runs, COALESCE(v.data, f.data), v.number
    FROM {flow} AS f LEFT JOIN {version} AS v ON v.id = %(version)s WHERE f.id = %(flow)s""",
)


def _flow_run_claim_row_sqlite(*, run_id, now, worker) -> tuple | None:
    update, attempt, read = map(_worker_sql, _CLAIM_SQLITE)
    params = {**_claim_params(now=now, worker=worker), "id": FlowRun._meta.pk.get_db_prep_value(run_id, connection)}
    params["now"] = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(update, params)
        claimed = cursor.fetchall()
        if not claimed:
            return None
        pk, flow_id, user_id, version_id, trigger, attempts, payload, tweaks, request = claimed[0]
        cursor.execute(attempt, {**params, "attempts": attempts})
        cursor.execute(read, {"version": version_id, "flow": flow_id})
        owner_id, timeout, max_attempts, limit, data, number = cursor.fetchone()
    as_uuid = FlowRun._meta.pk.to_python  # SQLite returns UUIDs as their hex
    user_pk = FlowRun._meta.get_field("user").target_field.to_python
    return (
        as_uuid(pk), as_uuid(flow_id), user_pk(user_id), version_id, trigger, attempts, payload, tweaks, request,
        user_pk(owner_id), timeout, max_attempts, limit, data, number,
    )  # fmt: skip


def _flow_runs_claim_returning(*, run_ids) -> list[tuple[FlowRun, str, str | None]]:
    """The worker's claim in one statement: claim the runs, open their RunAttempts, and read what executing them needs.

    One round trip without BEGIN/COMMIT instead of a read, a transaction and Django building
    four queries; a single statement is atomic, and the row lock makes exactly one of two
    racing workers match `status = queued`, so the `attempts` it returns is this claim's
    fencing token. Leaves out the runs not claimable here, including every run of a flow
    with `max_concurrent_runs` or a throttle (its claim takes turns on the flow's row) or a paused one
    (flows/services/pause.py): the general path then decides. For each run claimed: the run (other fields deferred), its graph's JSON text
    and its tweaks' text. On PostgreSQL one statement claims any number of runs; on SQLite the
    same three steps are statements of their own in one IMMEDIATE transaction per run, whose
    write lock does what the row lock does here.
    """
    now = timezone.now()
    worker = _worker_name()
    if connection.vendor == "postgresql":
        rows = _flow_run_claim_rows_pg(run_ids=run_ids, now=now, worker=worker)
    else:
        rows = [row for row in (_flow_run_claim_row_sqlite(run_id=run_id, now=now, worker=worker) for run_id in run_ids) if row]
    return [_claimed_run(row, now=now, worker=worker) for row in rows]


def _claimed_run(row: tuple, *, now, worker) -> tuple[FlowRun, str, str | None]:
    pk, flow_id, user_id, version_id, trigger, attempts, payload, tweaks, request, owner_id, timeout, max_attempts, limit, data, number = (
        row
    )
    # jsonb arrives as text (Django's PostgreSQL backend leaves decoding to the fields).
    run = loaded_instance(
        FlowRun,
        id=pk,
        flow_id=flow_id,
        user_id=user_id,
        version_id=version_id,
        trigger=trigger,
        status=FlowRun.Status.RUNNING,
        attempts=attempts,
        payload=json.loads(payload) if payload is not None else None,
        tweaks=json.loads(tweaks) if tweaks is not None else None,
        request=json.loads(request) if request is not None else None,
        started_at=now,
        next_attempt_at=None,
        worker=worker,
    )
    run.flow = loaded_instance(Flow, id=flow_id, user_id=owner_id, timeout=timeout, max_attempts=max_attempts, max_concurrent_runs=limit)
    if version_id is not None:
        run.version = loaded_instance(FlowVersion, id=version_id, flow_id=flow_id, number=number)
    return run, data, tweaks


# Runs and node results travel as JSON arrays (a JSON null becomes SQL NULL): two parameters for psycopg to
# quote instead of eight per node, and the same statement (prepared once) for any number of runs. First
# attempts only: they have no earlier attempt's node results to delete; the rows a run wrote while it ran (its
# progress, flows/services/inflight.py) are overwritten. Each run's values are looked up in `v` by
# subqueries (a batch holds at most LANGRUN_QUEUE_BULK runs), so that the ledger is reached by its primary key.
_FINISH_SQL = """
WITH v AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(runs)s::jsonb) AS v (id uuid, attempts int, status text, outputs text, error text)
), finished AS (
    UPDATE {run} AS r
    SET (status, outputs, error) = (SELECT v.status, v.outputs::jsonb, v.error FROM v WHERE v.id = r.id), finished_at = %(now)s
    WHERE r.id = ANY(%(ids)s::uuid[]) AND r.status = %(running)s AND r.attempts = (SELECT v.attempts FROM v WHERE v.id = r.id)
    RETURNING r.id, r.attempts, r.status, r.error
), attempt AS (
    UPDATE {attempt} AS a SET outcome = f.status, error = f.error, finished_at = %(now)s
    FROM finished AS f WHERE a.run_id = f.id AND a.number = f.attempts
), results AS (
    INSERT INTO {result} (run_id, node_id, component_type, status, output, error, traceback, duration_ms, "order")
    SELECT n.run_id, n.node_id, n.component_type, n.status, n.output, n.error, n.traceback, n.duration_ms, n.position
    FROM jsonb_to_recordset(%(results)s::jsonb) AS n (
        run_id uuid, node_id text, component_type text, status text, output jsonb, error text, traceback text,
        duration_ms float8, position int
    )
    WHERE n.run_id IN (SELECT id FROM finished)
    ON CONFLICT (run_id, node_id) DO UPDATE SET (component_type, status, output, error, traceback, duration_ms, "order") = (
            EXCLUDED.component_type, EXCLUDED.status, EXCLUDED.output, EXCLUDED.error, EXCLUDED.traceback, EXCLUDED.duration_ms,
            EXCLUDED."order"
        )
)
SELECT id FROM finished
"""


def _flow_runs_finish_rows_pg(items: list[tuple[FlowRun, RunOutcome]], *, outputs_texts: list[str | None], finished_at) -> set[str]:
    """The ids (as text) of the runs the finish statement recorded."""
    runs, results = [], []
    for (run, outcome), text in zip(items, outputs_texts, strict=True):
        run_id = str(run.pk)
        runs.append({"id": run_id, "attempts": run.attempts, "status": outcome.status, "outputs": text, "error": outcome.error})
        results += [
            {
                "run_id": run_id,
                "node_id": n.node_id,
                "component_type": n.type,
                "status": n.status,
                "output": n.output,
                "error": n.error,
                "traceback": n.traceback,
                "duration_ms": n.duration_ms,
                "position": n.order,
            }
            for n in outcome.nodes
        ]
    params = {
        "now": finished_at,
        "running": FlowRun.Status.RUNNING,
        "ids": [row["id"] for row in runs],  # the primary key's index finds them, whatever the planner makes of the JSON
        "runs": _json_text(runs),
        "results": _json_text(results),
    }
    # Outside a transaction (as in a worker) a refused statement wrote nothing and leaves the connection usable;
    # inside one, a savepoint keeps the transaction usable for the runs' own finishes.
    with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext(), connection.cursor() as cursor:
        cursor.execute(_worker_sql(_FINISH_SQL), params)
        return {str(row[0]) for row in cursor.fetchall()}


_FINISH_SQLITE = (
    "UPDATE {run} SET status = %s, outputs = %s, error = %s, finished_at = %s WHERE id = %s AND status = %s AND attempts = %s",
    "UPDATE {attempt} SET outcome = %s, error = %s, finished_at = %s WHERE run_id = %s AND number = %s",
    """INSERT INTO {result} (run_id, node_id, component_type, status, output, error, traceback, duration_ms, "order")
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (run_id, node_id) DO UPDATE SET (component_type, status, output, error, traceback, duration_ms, "order") = (
        EXCLUDED.component_type, EXCLUDED.status, EXCLUDED.output, EXCLUDED.error, EXCLUDED.traceback, EXCLUDED.duration_ms,
        EXCLUDED."order"
    )""",
)


def _flow_run_finish_rows_sqlite(run: FlowRun, *, status, outputs_text, error, finished_at, nodes) -> bool:
    """PostgreSQL's one-statement finish as three statements in one transaction (SQLite has no data-modifying CTE)."""
    update_run, update_attempt, insert_result = map(_worker_sql, _FINISH_SQLITE)
    pk = FlowRun._meta.pk.get_db_prep_value(run.pk, connection)
    at = connection.ops.adapt_datetimefield_value(finished_at)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(update_run, [status, outputs_text, error, at, pk, FlowRun.Status.RUNNING, run.attempts])
        if not cursor.rowcount:
            return False
        cursor.execute(update_attempt, [status, error, at, pk, run.attempts])
        cursor.executemany(
            insert_result,
            [(pk, n.node_id, n.type, n.status, _json_text(n.output), n.error, n.traceback, n.duration_ms, n.order) for n in nodes],
        )
    return True
