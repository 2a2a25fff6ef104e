"""Flow and run services: the one place where flows are saved and runs are created, executed and swept.

The webhook, the REST API, the admin and the worker all call these functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from flows import engine
from flows.exceptions import RunNotCancellable, RunNotReplayable, RunPayloadPruned
from flows.models import Flow, FlowRun, FlowVersion, NodeResult, RunAttempt, Variable
from langrun.db import loaded_instance
from langrun.logs import log_context
from langrun.parsers import json_unstorable
from langrun.waits import wait_slot

logger = logging.getLogger(__name__)

SWEEP_TASK = "flows.tasks.sweep"
SWEEP_SCHEDULE_NAME = "langrun-sweep"


class EndpointNameTaken(Exception):
    """The owner already has a flow with this endpoint name."""


class RunConditionFailed(Exception):
    """The condition set on recording a run did not hold when its INSERT ran: nothing was written."""


# --- Flows -------------------------------------------------------------------


def flow_graph_validate(*, data: Any, user=None) -> engine.Graph:
    """Parse a flow's graph; raises engine.GraphValidationError listing every problem.

    With `user`, every variable the params refer to must be one of theirs.
    """
    graph = engine.parse_graph(data)
    if user is not None:
        variables_check_exist(user=user, data=data)
    return graph


def flow_endpoint_name_taken(*, user, endpoint_name: str | None, exclude: Flow | None = None) -> bool:
    if not endpoint_name:
        return False
    qs = Flow.objects.filter(user=user, endpoint_name=endpoint_name)
    if exclude is not None:
        qs = qs.exclude(pk=exclude.pk)
    return qs.exists()


def flow_create(
    *,
    user,
    name: str,
    data: dict,
    description: str = "",
    endpoint_name: str | None = None,
    timeout: int | None = None,
    max_attempts: int = 1,
    max_concurrent_runs: int | None = None,
    author=None,
    message: str = "",
) -> Flow:
    flow_graph_validate(data=data, user=user)
    flow = Flow(
        user=user,
        name=name,
        description=description,
        endpoint_name=endpoint_name or None,
        data=data,
        timeout=timeout,
        max_attempts=max_attempts,
        max_concurrent_runs=max_concurrent_runs,
    )
    with transaction.atomic():  # the flow and its first version, or neither
        _flow_save(flow)
        flow_version_record(flow=flow, author=author or user, message=message)
    return flow


def flow_update(*, flow: Flow, author=None, message: str = "", **fields: Any) -> Flow:
    """Change a flow's fields; a changed graph also records a new FlowVersion."""
    if "data" in fields:
        flow_graph_validate(data=fields["data"], user=fields.get("user", flow.user))
    if "endpoint_name" in fields:
        fields["endpoint_name"] = fields["endpoint_name"] or None
    for name, value in fields.items():
        setattr(flow, name, value)
    with transaction.atomic():
        _flow_save(flow)
        if "data" in fields:
            flow_version_record(flow=flow, author=author, message=message)
    return flow


def _flow_save(flow: Flow) -> Flow:
    if flow_endpoint_name_taken(user=flow.user, endpoint_name=flow.endpoint_name, exclude=flow):
        raise EndpointNameTaken(flow.endpoint_name)
    try:
        with transaction.atomic():
            flow.save()
    except IntegrityError as exc:  # a concurrent save took the name between the check and the insert
        raise EndpointNameTaken(flow.endpoint_name) from exc
    return flow


# --- Runs --------------------------------------------------------------------


def flow_run_create(
    *,
    flow: Flow,
    user,
    trigger: str,
    payload: Any,
    body: str = "",
    content_type: str = "",
    replay_of: FlowRun | None = None,
    tweaks: dict | None = None,
    idempotency_key: str | None = None,
    version: FlowVersion | None = None,
    only_if: tuple[str, list] | None = None,
) -> FlowRun:
    """Record a run as `queued` and enqueue it once the transaction commits.

    When this returns, the run is committed (or the surrounding transaction
    will commit it); a failure to enqueue is left to the sweep. `tweaks` are
    checked against the flow's graph first (GraphValidationError). The run
    records `version` (default: the flow's current version) and executes it.

    With an `idempotency_key`, a key this flow already saw within
    LANGRUN_IDEMPOTENCY_RETENTION returns that original run instead, with
    `run.deduplicated = True`; the database's unique constraint decides
    between concurrent requests, so exactly one of them creates the run.

    `only_if` is an SQL condition and its parameters that the INSERT itself checks: when
    it does not hold, nothing is written and RunConditionFailed is raised (the webhook
    states so what it assumed of a key and a flow it did not read again).
    """
    if version is None:
        version = flow_version_current(flow=flow)
    if tweaks:
        tweaked = engine.apply_tweaks(version.data, tweaks)
        engine.parse_graph(tweaked)
        variables_check_exist(user=flow.user, data=tweaked)
    fields = {
        "flow": flow,
        "user": user,
        "trigger": trigger,
        "payload": payload,
        "body": body,
        "content_type": content_type[:255],
        "replay_of": replay_of,
        "tweaks": tweaks or None,
        "idempotency_key": idempotency_key or None,
        "version": version,
    }
    if not idempotency_key:
        return _flow_run_insert(fields, only_if)
    for _ in range(3):
        try:
            return _flow_run_insert(fields, only_if)
        except IntegrityError:
            original = FlowRun.objects.filter(flow=flow, idempotency_key=idempotency_key).first()
            if original is None:  # its key expired between our insert and this read
                continue
            if original.received_at >= timezone.now() - timedelta(seconds=settings.LANGRUN_IDEMPOTENCY_RETENTION):
                original.deduplicated = True
                return original
            # Past the retention window the key is free again.
            FlowRun.objects.filter(pk=original.pk, idempotency_key=idempotency_key).update(idempotency_key=None)
    raise RuntimeError(f"Could not record a run for idempotency key {idempotency_key!r}")


def _flow_run_insert(fields: dict[str, Any], only_if: tuple[str, list] | None) -> FlowRun:
    # One INSERT is atomic by itself: outside a transaction it commits at once and
    # on_commit rings the doorbell right after; inside a caller's transaction both
    # wait for its commit. (An atomic block here cost a BEGIN and a COMMIT per webhook.)
    # With an idempotency key the insert may hit the unique constraint, so it gets a
    # savepoint that keeps a caller's transaction usable.
    run = FlowRun(enqueued_at=timezone.now(), **fields)
    if fields.get("idempotency_key"):
        with transaction.atomic():
            _flow_run_insert_row(run, only_if)
    else:
        _flow_run_insert_row(run, only_if)
    transaction.on_commit(lambda: _flow_run_enqueue_logged(run))
    logger.info("Run accepted (trigger %s, version %s)", run.trigger, run.version.number, extra={"run_id": run.id, "flow_id": run.flow_id})
    run.deduplicated = False
    return run


# The run's INSERT is written once per process. Django's create() prepared the same statement again for
# every webhook, each field through the generic save path: about 0.3 ms of CPU, as much as the rest of
# the insert. Fields still convert their values for the database, except text and number fields, which
# are sent as they are (as Django's own conversion would leave them), and empty values (NULL for every
# field type); `auto_now` fields always take their value from pre_save.
_AS_IS = frozenset({"CharField", "TextField", "IntegerField", "PositiveIntegerField", "BigIntegerField", "BooleanField"})
# On PostgreSQL these fields (or the field a foreign key points to) send a value of this type as it is: Django's
# conversion returns the same object (a UUID, a number, an aware datetime). Any other value goes through it.
_NATIVE_ON_POSTGRESQL = {
    "UUIDField": uuid.UUID,
    "AutoField": int,
    "BigAutoField": int,
    "DateTimeField": datetime,
}


@functools.cache
def _flow_run_insert_plan(vendor: str) -> tuple[str, str, tuple[tuple[Any, bool, bool, type | None], ...]]:
    """The INSERT, the same INSERT as a SELECT that a condition can follow, and how each field's value is sent."""
    quote = connection.ops.quote_name
    fields = FlowRun._meta.concrete_fields
    head = "INSERT INTO {} ({})".format(quote(FlowRun._meta.db_table), ", ".join(quote(f.column) for f in fields))
    values = "{} VALUES ({})".format(head, ", ".join(["%s"] * len(fields)))
    # PostgreSQL types the values of a SELECT list by themselves (text, for a string or a NULL), not by the
    # columns they go to, so each one is cast to its column's type (text for text columns: a cast to
    # varchar(n) would cut a longer value where the column refuses it); SQLite takes any value in any column.
    typed = [f"%s::{_insert_cast(f)}" if vendor == "postgresql" else "%s" for f in fields]
    selected = "{} SELECT {} WHERE ".format(head, ", ".join(typed))
    plan = tuple(
        (
            f,
            f.get_internal_type() in _AS_IS,
            bool(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)),
            _NATIVE_ON_POSTGRESQL.get(f.target_field.get_internal_type() if f.is_relation else f.get_internal_type())
            if vendor == "postgresql"
            else None,
        )
        for f in fields
    )
    return values, selected, plan


def _insert_cast(field) -> str:
    return "text" if field.get_internal_type() in ("CharField", "TextField") else field.db_type(connection)


def _flow_run_insert_row(run: FlowRun, only_if: tuple[str, list] | None) -> None:
    values, selected, plan = _flow_run_insert_plan(connection.vendor)
    params = []
    for field, as_is, auto, native in plan:
        value = field.pre_save(run, True) if auto else getattr(run, field.attname)
        if as_is or value is None or (type(value) is native and (native is not datetime or value.tzinfo is not None)):
            params.append(value)
        else:
            params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        if only_if is None:
            cursor.execute(values, params)
        else:
            condition, condition_params = only_if
            cursor.execute(selected + condition, [*params, *condition_params])
            if cursor.rowcount != 1:
                raise RunConditionFailed(condition)
    run._state.adding = False
    run._state.db = connection.alias


def _flow_run_enqueue_logged(run: FlowRun) -> None:
    # Runs after the commit, so it must not raise: the caller is about to answer 202 for a recorded run.
    with log_context(run_id=run.id, flow_id=run.flow_id):
        try:
            quick = run.version_id is not None and flow_version_quick(flow_id=run.flow_id, version_id=run.version_id)
        except Exception:
            logger.exception("Could not tell whether run %s's flow is quick; it gets a task of its own", run.id)
            quick = False
        flow_run_enqueue(run_id=run.id, flow_id=run.flow_id, quick=quick)


class VersionTraits(NamedTuple):
    """What the web side needs to know of a version's graph on every webhook."""

    webhook_schemas: tuple[dict, ...]  # the JSON Schemas of its Webhook nodes
    quick: bool  # every node is a quick component (engine.Component.quick): its runs may be batched


# A version never changes, so its traits are read once per process and version (the flow's UUID in the key
# keeps a version id reused after a rollback from matching): otherwise every webhook would load and decode
# the whole graph for a few facts about it.
@functools.lru_cache(maxsize=1024)
def flow_version_traits(*, flow_id, version_id) -> VersionTraits:
    data = FlowVersion.objects.filter(pk=version_id, flow_id=flow_id).values_list("data", flat=True).first()
    nodes = data.get("nodes") if isinstance(data, dict) else None
    nodes = [node for node in nodes if isinstance(node, dict)] if isinstance(nodes, list) else []
    schemas = tuple(
        node["params"]["schema"]
        for node in nodes
        if node.get("type") == "Webhook" and isinstance(node.get("params"), dict) and isinstance(node["params"].get("schema"), dict)
    )
    return VersionTraits(webhook_schemas=schemas, quick=engine.registry.all_quick(node.get("type") for node in nodes))


def flow_version_quick(*, flow_id, version_id) -> bool:
    """Whether every node of the version is a quick component: its runs may be batched."""
    return flow_version_traits(flow_id=flow_id, version_id=version_id).quick


def flow_run_replay(*, run: FlowRun, user, current_version: bool = False) -> FlowRun:
    """A new run of the same flow with the same request, linked to the original.

    It executes the version the original ran, or the flow's current graph
    with `current_version=True`. A run whose payload retention cleared cannot be replayed.
    """
    if run.payload_pruned_at is not None:
        raise RunPayloadPruned(
            f"Run {run.id}'s payload was deleted by retention on {run.payload_pruned_at:%Y-%m-%d}; it cannot be replayed."
        )
    try:
        return flow_run_create(
            flow=run.flow,
            user=user,
            trigger=FlowRun.Trigger.REPLAY,
            payload=run.payload,
            body=run.body,
            content_type=run.content_type,
            replay_of=run,
            tweaks=run.tweaks,
            version=None if current_version else run.version,
        )
    except engine.GraphValidationError as exc:  # its tweaks no longer fit: a variable deleted, a component changed
        nodes = (flow_run_graph_data(run=run) if not current_version else run.flow.data).get("nodes") or []
        errors = [{"loc": _tweak_loc(issue.loc, nodes), "msg": issue.msg, "type": issue.type} for issue in exc.issues]
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        raise RunNotReplayable(f"Run {run.id} cannot be replayed: {where}", errors=errors) from exc


def _tweak_loc(loc: tuple, nodes: list) -> list:
    """Where a problem of a tweaked graph (`nodes`, i, `params`, name, …) lies in the tweaks: [`tweaks`, node id, name, …]."""
    if len(loc) >= 4 and loc[0] == "nodes" and loc[2] == "params" and isinstance(loc[1], int) and loc[1] < len(nodes):
        node = nodes[loc[1]]
        return ["tweaks", node.get("id") if isinstance(node, dict) else loc[1], *loc[3:]]
    return ["tweaks", *loc]


def flow_run_cancel(*, run: FlowRun) -> FlowRun:
    """Stop a run that no worker has claimed yet; raises RunNotCancellable otherwise."""
    now = timezone.now()
    cancelled = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.QUEUED).update(
        status=FlowRun.Status.CANCELLED, finished_at=now, error="Cancelled before it started."
    )
    run.refresh_from_db()
    if not cancelled:
        raise RunNotCancellable(f"Run {run.id} is {run.status}; only a queued run can be cancelled.")
    return run


_broker = None


def _get_broker():
    """One django-q2 broker per process: creating one per call opens a new connection each time."""
    global _broker
    if _broker is None:
        from django_q.brokers import get_broker

        _broker = get_broker()
    return _broker


def broker_preload() -> None:
    """Import the task broker's modules, without building a broker (the database broker's would connect).

    gunicorn's master calls this before forking the web workers (preload_app): they share those pages,
    and none of them imports the Redis client while answering its first webhook. Nothing may connect
    here: a forked worker must not inherit its master's database connection.
    """
    from importlib import import_module

    from django_q.conf import Conf

    import_module("django_q.brokers")
    if Conf.BROKER_CLASS:
        import_module(Conf.BROKER_CLASS.rsplit(".", 1)[0])


def flow_run_enqueue(*, run_id, flow_id=None, quick: bool = False) -> bool:
    """Ring the doorbell for a run. Never raises: a run that could not be enqueued stays `queued` for the sweep.

    `flow_id`, when known, travels with the task so the worker can label its logs without a query.
    A `quick` run (its version is made only of quick components) gets a task the Redis broker may
    hand to a worker together with other quick runs' (flows/broker.py).
    """
    from flows import tasks  # it imports this module

    args = (str(run_id), str(flow_id)) if flow_id else (str(run_id),)
    try:
        # The function itself, not its dotted path: a worker then finds it with one attribute lookup, where
        # django-q2 resolves a path with pydoc.locate on every task (about 4% of a worker's time per run).
        func = tasks.execute_quick_run if quick else tasks.execute_run
        _task_push(func, args, name=f"run-{run_id}")
    except Exception:
        logger.exception("Could not enqueue run %s; the sweep will enqueue it again", run_id)
        return False
    return True


def _task_push(func, args: tuple, *, name: str) -> None:
    """Push the task django-q2's async_task(func, *args, task_name=name) pushes: the same package, signed alike.

    async_task spends a fifth of an enqueue's CPU, on every webhook, on what a doorbell does not use: a
    human-readable name made from the id (which `name` replaces), the pre_enqueue signal (langrun connects
    nothing to it) and its options. With Q_CLUSTER["sync"] (tasks run in the caller) it is called as it is.
    """
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    if Conf.SYNC:
        from django_q.tasks import async_task

        async_task(func, *args, broker=_get_broker(), task_name=name)
        return
    task = {"id": uuid.uuid4().hex, "name": name, "func": func, "args": args, "kwargs": {}, "started": timezone.now()}
    if Conf.CACHED:
        task["cached"] = Conf.CACHED
    if Conf.ACK_FAILURES:
        task["ack_failure"] = Conf.ACK_FAILURES
    _get_broker().enqueue(SignedPackage.dumps(task))


def _worker_name() -> str:
    """host:pid of this process, recorded on the runs it claims (which machine and process did the work)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def flow_run_claim(*, run_id) -> bool:
    """Move a run from `queued` to `running` in one conditional update; False if someone else has it.

    A run waiting for a retry's backoff is not claimed before its time, nor a
    run whose flow already has `max_concurrent_runs` running (it stays queued:
    a finishing run of that flow, or the sweep, rings again). Each claim opens
    a RunAttempt; `attempts` doubles as the fencing token of the claim.
    """
    row = FlowRun.objects.filter(pk=run_id).values_list("flow_id", "flow__max_concurrent_runs", "attempts").first()
    if row is None:
        return False
    flow_id, limit, attempts = row
    return _flow_run_claim(run_id=run_id, flow_id=flow_id, limit=limit, attempts=attempts) is not None


def _flow_run_claim(*, run_id, flow_id, limit: int | None, attempts: int) -> dict[str, Any] | None:
    """The claim itself, given what was read of the run; returns the fields it set, or None."""
    now = timezone.now()
    # Conditional on the attempts count read before too, so the attempt number this claim opens is exact.
    claimable = FlowRun.objects.filter(pk=run_id, status=FlowRun.Status.QUEUED, attempts=attempts).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    fields = {
        "status": FlowRun.Status.RUNNING,
        "started_at": now,
        "attempts": attempts + 1,
        "next_attempt_at": None,
        "worker": _worker_name(),
    }
    with transaction.atomic():
        if limit:
            # Claims of this flow's runs take turns (a row lock; SQLite's write lock already serializes them).
            list(Flow.objects.select_for_update().filter(pk=flow_id).values_list("pk"))
            if FlowRun.objects.unfinished().filter(flow_id=flow_id, status=FlowRun.Status.RUNNING).count() >= limit:
                logger.info("Run %s waits: its flow already has %d running", run_id, limit)
                return None
        if claimable.update(**fields) != 1:
            return None
        RunAttempt.objects.create(run_id=run_id, number=attempts + 1, started_at=now)
    return fields


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
        AND (SELECT COALESCE(f.max_concurrent_runs, 0) FROM {flow} AS f WHERE f.id = r.flow_id) = 0
    RETURNING r.id, r.flow_id, r.user_id, r.version_id, r.trigger, r.attempts, r.payload, r.tweaks
), attempt AS (
    INSERT INTO {attempt} (run_id, number, outcome, error, started_at)
    SELECT id, attempts, %(running)s, '', %(now)s FROM claimed
)
SELECT c.id, c.flow_id, c.user_id, c.version_id, c.trigger, c.attempts, c.payload, c.tweaks,
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
        AND EXISTS (SELECT 1 FROM {flow} AS f WHERE f.id = {run}.flow_id AND COALESCE(f.max_concurrent_runs, 0) = 0)
    RETURNING id, flow_id, user_id, version_id, trigger, attempts, payload, tweaks""",
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
        pk, flow_id, user_id, version_id, trigger, attempts, payload, tweaks = claimed[0]
        cursor.execute(attempt, {**params, "attempts": attempts})
        cursor.execute(read, {"version": version_id, "flow": flow_id})
        owner_id, timeout, max_attempts, limit, data, number = cursor.fetchone()
    as_uuid = FlowRun._meta.pk.to_python  # SQLite returns UUIDs as their hex
    user_pk = FlowRun._meta.get_field("user").target_field.to_python
    return (
        as_uuid(pk), as_uuid(flow_id), user_pk(user_id), version_id, trigger, attempts, payload, tweaks,
        user_pk(owner_id), timeout, max_attempts, limit, data, number,
    )  # fmt: skip


def _flow_runs_claim_returning(*, run_ids) -> list[tuple[FlowRun, str, str | None]]:
    """The worker's claim in one statement: claim the runs, open their RunAttempts, and read what executing them needs.

    One round trip without BEGIN/COMMIT instead of a read, a transaction and Django building
    four queries; a single statement is atomic, and the row lock makes exactly one of two
    racing workers match `status = queued`, so the `attempts` it returns is this claim's
    fencing token. Leaves out the runs not claimable here, including every run of a flow
    with `max_concurrent_runs` (its claim takes turns on the flow's row): the general path
    then decides. For each run claimed: the run (other fields deferred), its graph's JSON text
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
    pk, flow_id, user_id, version_id, trigger, attempts, payload, tweaks, owner_id, timeout, max_attempts, limit, data, number = row
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
        started_at=now,
        next_attempt_at=None,
        worker=worker,
    )
    run.flow = loaded_instance(Flow, id=flow_id, user_id=owner_id, timeout=timeout, max_attempts=max_attempts, max_concurrent_runs=limit)
    if version_id is not None:
        run.version = loaded_instance(FlowVersion, id=version_id, flow_id=flow_id, number=number)
    return run, data, tweaks


def flow_run_execute(*, run_id) -> FlowRun | None:
    """Claim a queued run and execute its flow, recording every node's result.

    Returns None (and does nothing) when the run is not `queued`: a duplicate
    delivery, or a run another worker already has. A failure marked retryable
    sends the run back to the queue while the flow allows more attempts.
    """
    claimed = _flow_runs_claim_returning(run_ids=[run_id]) if _returning_sql() else None
    if claimed:
        [(run, data_text, tweaks_text)] = claimed
        parse = functools.partial(_graph_parsed, data_text, tweaks_text)
    else:
        # The general path: a flow with a concurrency limit, a run not claimable now, or a database
        # without UPDATE … RETURNING (SQLite before 3.35). The run is read once, before the claim (which is
        # conditional on what was read), not again after it.
        run = FlowRun.objects.select_related("flow", "version").filter(pk=run_id).first()
        fields = None
        if run is not None and run.status == FlowRun.Status.QUEUED:
            fields = _flow_run_claim(run_id=run.pk, flow_id=run.flow_id, limit=run.flow.max_concurrent_runs, attempts=run.attempts)
        if fields is None:
            logger.info("Run %s is not claimable now; nothing to do", run_id)
            return None
        for name, value in fields.items():
            setattr(run, name, value)

        def parse():
            return _graph_of(flow_run_graph_data(run=run), run.tweaks)

    outcome = _flow_run_outcome(run, parse)
    if outcome is None:
        return run
    return _flow_run_finish(run, **outcome._asdict())


def flow_runs_execute(*, run_ids) -> list[FlowRun]:
    """flow_run_execute for several runs, claimed together and recorded together: two statements in all.

    For the runs of quick flows (made only of components marked `quick`), which the cluster
    hands to a worker in batches (flows/broker.py). Each run executes, fails or goes back to
    the queue exactly as it would alone; the one claim and the one finish write what the
    runs' own claims and finishes would. Runs the claim does not take (already taken, waiting
    for a retry, of a flow with a concurrency limit) then go through flow_run_execute one by
    one, and so does the finish of a run that is not its first attempt. A run whose execution
    raises is left `running` for the sweep, as it would be alone; the others are recorded.
    Should the one finish fail (an outcome the database refuses, a deadlock between two batches
    that share runs after a doorbell rung twice), each run is then finished on its own: one
    run's outcome never sinks another's. Returns the runs executed here.
    """
    run_ids = list(dict.fromkeys(str(run_id) for run_id in run_ids))
    if len(run_ids) == 1 or not _returning_sql():
        return [run for run in (flow_run_execute(run_id=run_id) for run_id in run_ids) if run is not None]
    claimed = _flow_runs_claim_returning(run_ids=run_ids)
    executed, finishing = [], []
    for run, data_text, tweaks_text in claimed:
        try:
            with log_context(run_id=run.id, flow_id=run.flow_id):
                outcome = _flow_run_outcome(run, functools.partial(_graph_parsed, data_text, tweaks_text))
        except Exception:
            logger.exception("Run %s failed to execute; it stays running until the sweep recovers it", run.id)
            continue
        if outcome is None:
            executed.append(run)  # back in the queue for its next attempt
        elif run.attempts == 1:
            finishing.append((run, outcome))
        else:
            executed.append(_flow_run_finish(run, **outcome._asdict()))
    executed += _flow_runs_finish_returning(finishing)
    taken = {str(run.pk) for run, _, _ in claimed}
    for run_id in run_ids:
        if run_id not in taken:
            run = flow_run_execute(run_id=run_id)
            if run is not None:
                executed.append(run)
    return executed


class RunOutcome(NamedTuple):
    """What a run's execution came to, for its finish to record."""

    status: str
    outputs: Any
    error: str
    nodes: list[engine.NodeResult]


def _flow_run_outcome(run: FlowRun, parse) -> RunOutcome | None:
    """Execute a claimed run: its outcome, or None when a retryable failure sent it back to the queue.

    `parse()` gives the graph the run executes and its variable references.
    """
    try:
        graph, refs = parse()
    except engine.GraphValidationError as exc:
        return RunOutcome(FlowRun.Status.FAILED, None, f"The flow's graph is invalid: {exc}", [])
    try:
        context = _flow_run_context(user_id=run.flow.user_id, payload=run.payload, refs=refs)
    except engine.GraphValidationError as exc:
        return RunOutcome(FlowRun.Status.FAILED, None, f"The flow cannot run: {exc}", [])
    result = engine.run_graph(graph, context=context, timeout=run.flow.timeout or settings.LANGRUN_FLOW_TIMEOUT)
    if result.status == FlowRun.Status.FAILED and result.retryable and run.attempts < run.flow.max_attempts:
        _flow_run_retry_later(run, error=_text_storable(result.error))
        return None
    return _outcome_storable(RunOutcome(result.status, result.outputs, result.error, result.nodes))


def _outcome_storable(outcome: RunOutcome) -> RunOutcome:
    """The outcome as the ledger can hold it, whatever the database: what `_unstorable` finds in an output
    fails the run (that node's output is dropped, its error says why); a NUL or an unpaired surrogate
    in an error or a traceback is written escaped."""
    nodes, spoiled = [], ""
    for node in outcome.nodes:
        problem = _unstorable(node.output)
        error, traceback = _text_storable(node.error), _text_storable(node.traceback)
        if problem:
            spoiled = spoiled or f"Node {node.node_id!r} output contains {problem}, which cannot be stored."
            error = f"Its output contains {problem}, which cannot be stored."
            node = dataclasses.replace(node, status=NodeResult.Status.FAILED, output=None, error=error, traceback=traceback)
        elif error is not node.error or traceback is not node.traceback:
            node = dataclasses.replace(node, error=error, traceback=traceback)
        nodes.append(node)
    if not spoiled and (problem := _unstorable(outcome.outputs)):
        spoiled = f"The run's outputs contain {problem}, which cannot be stored."
    if spoiled:
        return RunOutcome(FlowRun.Status.FAILED, None, spoiled, nodes)
    return RunOutcome(outcome.status, outcome.outputs, _text_storable(outcome.error), nodes)


def _unstorable(value: Any) -> str:
    """What in `value` (as `_json_text` writes it) no database's JSON can hold, or "": a NUL character or an
    unpaired surrogate in a string, or an infinite or NaN number (valid Python, not JSON)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:  # shared, or circular (which `_json_text` refuses in its turn)
                continue
            seen.add(id(item))
            stack.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "a number that is infinite or NaN"
        elif item is not None and not isinstance(item, bool | int):
            text = item if isinstance(item, str) else str(item)
            if "\x00" in text:
                return "a NUL character"
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return "an unpaired surrogate character"
    return ""


def _text_storable(text: str) -> str:
    """`text` with NUL characters and unpaired surrogates escaped (`\\x00`, `\\ud800`); `text` itself when it has none."""
    if not text or ("\x00" not in text and text.isascii()):
        return text
    escaped = text.replace("\x00", "\\x00")
    try:
        escaped.encode("utf-8")
    except UnicodeEncodeError:
        escaped = escaped.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped if escaped != text else text


def _returning_sql() -> bool:
    """Whether the worker's hand-written claim and finish can be used: one statement each on PostgreSQL
    (data-modifying CTEs), one transaction each on SQLite 3.35 or later (UPDATE … RETURNING)."""
    return connection.vendor == "postgresql" or (connection.vendor == "sqlite" and connection.Database.sqlite_version_info >= (3, 35))


@functools.lru_cache(maxsize=256)
def _graph_parsed(data_text: str, tweaks_text: str | None) -> tuple[engine.Graph, tuple]:
    """The parsed graph and its variable references, for a graph's JSON text as the database returns it.

    Versions are immutable and a flow's runs share few of them, so the parse is done once per
    process and graph; keyed by the text itself, an edited graph can never hit a stale entry.
    A Graph is not changed by running it (components get copies of container params), so sharing
    it between runs is safe. Invalid graphs raise, and exceptions are not cached.
    """
    return _graph_of(json.loads(data_text), json.loads(tweaks_text) if tweaks_text is not None else None)


def _graph_of(data: dict, tweaks: dict | None) -> tuple[engine.Graph, tuple]:
    """The graph a run executes (its data with the run's tweaks), parsed, and its variable references."""
    data = engine.apply_tweaks(data, tweaks)
    return engine.parse_graph(data), tuple(engine.variable_references(data))


def flow_run_backoff(*, attempt: int) -> timedelta:
    """Wait before attempt `attempt + 1`: exponential, capped, with jitter (half fixed, half random)."""
    ceiling = min(settings.LANGRUN_RETRY_BACKOFF_MAX, settings.LANGRUN_RETRY_BACKOFF * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter, not a secret


def _flow_run_retry_later(run: FlowRun, *, error: str) -> FlowRun:
    now = timezone.now()
    run.next_attempt_at = now + flow_run_backoff(attempt=run.attempts)
    with transaction.atomic():
        requeued = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.RUNNING, attempts=run.attempts).update(
            status=FlowRun.Status.QUEUED, error=error, next_attempt_at=run.next_attempt_at, enqueued_at=now
        )
        if requeued:
            RunAttempt.objects.filter(run=run, number=run.attempts).update(outcome=RunAttempt.Outcome.RETRY, error=error, finished_at=now)
    if requeued:
        run.status, run.error = FlowRun.Status.QUEUED, error
        logger.info("Run %s attempt %d failed (retryable); next attempt after %s", run.id, run.attempts, run.next_attempt_at)
        _flow_release_waiting(run.flow)
    return run


def _json_text(value: Any) -> str | None:
    """`value` as JSON text for a jsonb column (anything JSON cannot hold as its str); None is SQL NULL."""
    return None if value is None else json.dumps(value, default=str)


def _jsonable(value: Any) -> Any:
    """`value` as it comes back from a JSON column once `_json_text` has written it."""
    text = _json_text(value)
    return None if text is None else json.loads(text)


# Runs and node results travel as JSON arrays (a JSON null becomes SQL NULL): two parameters for psycopg to
# quote instead of eight per node, and the same statement (prepared once) for any number of runs. First
# attempts only: they have no earlier node results to delete. Each run's values are looked up in `v` by
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
)
SELECT id FROM finished
"""


def _flow_run_finish(run: FlowRun, *, status: str, outputs, error: str, nodes: list[engine.NodeResult]) -> FlowRun:
    """Record a run's outcome; should the database refuse it, the run fails with an error that says so."""
    try:
        return _flow_run_record(run, status=status, outputs=outputs, error=error, nodes=nodes)
    except Exception as exc:
        return _flow_run_finish_unrecorded(run, exc)


def _flow_run_finish_unrecorded(run: FlowRun, exc: Exception) -> FlowRun:
    """Fail a run whose outcome could not be written, without its outputs and node results; the run is left
    as it is (for the sweep) only when even that cannot be written."""
    logger.error("Run %s's result could not be recorded; it fails without it", run.id, exc_info=exc)
    error = f"The run's result could not be recorded ({type(exc).__name__}); the worker's log has the details."
    now = timezone.now()
    try:
        with transaction.atomic():
            finished = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.RUNNING, attempts=run.attempts).update(
                status=FlowRun.Status.FAILED, outputs=None, error=error, finished_at=now
            )
            if finished:
                RunAttempt.objects.filter(run=run, number=run.attempts).update(outcome=FlowRun.Status.FAILED, error=error, finished_at=now)
        run.refresh_from_db()
    except Exception:
        logger.exception("Run %s's failure could not be recorded either; it stays running until the sweep recovers it", run.id)
        return run
    if finished:
        _flow_release_waiting(run.flow)
    return run


def _flow_run_record(run: FlowRun, *, status: str, outputs, error: str, nodes: list[engine.NodeResult]) -> FlowRun:
    if run.attempts == 1 and _returning_sql():
        [run] = _flow_runs_finish_returning([(run, RunOutcome(status, outputs, error, nodes))])
        return run
    run.status = status
    run.outputs = _jsonable(outputs)
    run.error = error
    run.finished_at = timezone.now()
    with transaction.atomic():
        # Only the holder of the current claim may finish the run: a worker whose attempt was
        # declared interrupted (and maybe claimed again since) writes nothing.
        finished = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.RUNNING, attempts=run.attempts).update(
            status=run.status, outputs=run.outputs, error=run.error, finished_at=run.finished_at
        )
        if finished:
            if run.attempts > 1:  # earlier attempts write no node results, but a run's results are its last attempt's
                NodeResult.objects.filter(run=run).delete()
            NodeResult.objects.bulk_create(
                NodeResult(
                    run=run,
                    node_id=n.node_id,
                    component_type=n.type,
                    status=n.status,
                    output=_jsonable(n.output),
                    error=n.error,
                    traceback=n.traceback,
                    duration_ms=n.duration_ms,
                    order=n.order,
                )
                for n in nodes
            )
            RunAttempt.objects.filter(run=run, number=run.attempts).update(outcome=status, error=error, finished_at=run.finished_at)
    if not finished:
        logger.warning("Run %s attempt %d finished after losing its claim; its result is discarded", run.id, run.attempts)
        run.refresh_from_db()
        return run
    _flow_release_waiting(run.flow)
    return run


def _flow_runs_finish_returning(items: list[tuple[FlowRun, RunOutcome]]) -> list[FlowRun]:
    """_flow_run_finish of first attempts: for each run, the run, its node results and its attempt, or nothing.

    The same conditions as the general path (only the current claim's holder writes): on
    PostgreSQL one statement for all the runs, without BEGIN/COMMIT; on SQLite one
    transaction per run. Outputs are written as the JSON text `_jsonable` would have
    produced, without decoding it again.
    """
    if not items:
        return []
    finished_at = timezone.now()
    # Whatever one run's outcome makes fail (its JSON, the database's refusal), that run fails alone.
    alone: dict[str, FlowRun] = {}  # runs finished on their own, or failed for want of a record
    writable, texts = [], []
    for run, outcome in items:
        try:
            texts.append(_json_text(outcome.outputs))
        except Exception as exc:
            alone[str(run.pk)] = _flow_run_finish_unrecorded(run, exc)
        else:
            writable.append((run, outcome))
    finished: set[str] = set()
    if connection.vendor == "postgresql" and writable:
        try:
            finished = _flow_runs_finish_rows_pg(writable, outputs_texts=texts, finished_at=finished_at)
        except Exception as exc:
            if len(writable) == 1:
                alone[str(writable[0][0].pk)] = _flow_run_finish_unrecorded(writable[0][0], exc)
            else:
                logger.exception("The finish of %d runs failed together; each is finished on its own", len(writable))
                for run, outcome in writable:
                    alone[str(run.pk)] = _flow_run_finish(run, **outcome._asdict())
    elif writable:
        for (run, outcome), text in zip(writable, texts, strict=True):
            try:
                if _flow_run_finish_rows_sqlite(
                    run, status=outcome.status, outputs_text=text, error=outcome.error, finished_at=finished_at, nodes=outcome.nodes
                ):
                    finished.add(str(run.pk))
            except Exception as exc:
                alone[str(run.pk)] = _flow_run_finish_unrecorded(run, exc)
    recorded = {}
    for (run, outcome), text in zip(writable, texts, strict=True):
        if str(run.pk) in alone:
            continue
        if str(run.pk) in finished:
            run.status, run.error, run.finished_at = outcome.status, outcome.error, finished_at
            run.outputs = json.loads(text) if text is not None else None
            _flow_release_waiting(run.flow)
        else:
            logger.warning("Run %s attempt %d finished after losing its claim; its result is discarded", run.id, run.attempts)
            run.refresh_from_db()
        recorded[str(run.pk)] = run
    return [alone.get(str(run.pk)) or recorded[str(run.pk)] for run, _ in items]


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
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
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


def _flow_release_waiting(flow: Flow) -> None:
    """A slot of a concurrency-limited flow came free: ring for the runs waiting for it."""
    if not flow.max_concurrent_runs:
        return
    now = timezone.now()
    waiting = (
        FlowRun.objects.unfinished()
        .filter(flow=flow, status=FlowRun.Status.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    )
    for run_id in waiting.order_by("received_at").values_list("pk", flat=True)[: flow.max_concurrent_runs]:
        flow_run_enqueue(run_id=run_id)


def flow_run_wait(*, run_id, timeout: float) -> FlowRun:
    """The run once it is terminal, or as it is after `timeout` seconds (polls the ledger).

    A caller past its account's or its process's share of waiting (langrun.waits) gets the run as it is, at once.
    """
    run = FlowRun.objects.get(pk=run_id)
    if run.status in FlowRun.TERMINAL or timeout <= 0:
        return run
    with wait_slot(owner=str(run.user_id)) as granted:
        return _flow_run_poll(run_id=run_id, timeout=timeout) if granted else run


def _flow_run_poll(*, run_id, timeout: float) -> FlowRun:
    deadline = time.monotonic() + max(timeout, 0)
    delay = 0.02
    while True:
        run = FlowRun.objects.get(pk=run_id)
        remaining = deadline - time.monotonic()
        if run.status in FlowRun.TERMINAL or remaining <= 0:
            return run
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)


def flow_run_execute_sync(*, run: FlowRun, timeout: float) -> FlowRun:
    """Execute a committed, queued run in this process; return it when terminal or after `timeout` seconds.

    The run executes in a thread, so the caller can stop waiting without
    interrupting it: a run still going at the deadline finishes in that thread.
    If a worker claimed the run first (it was also enqueued), this just waits.
    A caller past its share of waiting (langrun.waits) gets the queued run at once: a worker runs it.
    """
    with wait_slot(owner=str(run.user_id)) as granted:
        if not granted:
            return run
        started = time.monotonic()
        thread = threading.Thread(target=_flow_run_execute_thread, kwargs={"run_id": run.id}, name=f"run-{run.id}", daemon=True)
        thread.start()
        thread.join(max(timeout, 0))
        return _flow_run_poll(run_id=run.id, timeout=timeout - (time.monotonic() - started))


def _flow_run_execute_thread(*, run_id) -> None:
    try:
        flow_run_execute(run_id=run_id)
    except Exception:
        logger.exception("Run %s failed to execute in the request thread", run_id)
    finally:
        connection.close()  # the thread's own connection; Django only closes the request thread's


def flow_run_input_payload(*, input_value: str | None) -> Any:
    """The Webhook node's payload for a run started with Langflow's `input_value`.

    Treated like a webhook body: JSON text gives its value, other text
    `{"payload": text}`; no input gives `{}`.
    """
    if input_value is None or input_value == "":
        return {}
    try:
        payload = json.loads(input_value, parse_constant=_reject_json_constant)
    except (ValueError, RecursionError):
        return {"payload": input_value}
    return {"payload": input_value} if json_unstorable(payload) else payload


def _reject_json_constant(name: str) -> None:
    raise ValueError(name)


def flow_runs_requeue_stale(*, older_than: timedelta | None = None, limit: int = 1000) -> int:
    """Enqueue again the queued runs whose last enqueue is older than `older_than`.

    The broker may have lost them (Redis keeps no delivery receipts, and an
    enqueue can fail outright). A duplicate doorbell is harmless: the claim
    lets only one worker run it.
    """
    if older_than is None:
        older_than = timedelta(seconds=settings.LANGRUN_REQUEUE_AFTER)
    now = timezone.now()
    stale = list(
        FlowRun.objects.unfinished()
        .filter(status=FlowRun.Status.QUEUED, enqueued_at__lt=now - older_than)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))  # a retry waiting for its time is not lost
        .order_by("enqueued_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not stale:
        return 0
    FlowRun.objects.filter(pk__in=stale, status=FlowRun.Status.QUEUED).update(enqueued_at=now)
    for run_id in stale:
        flow_run_enqueue(run_id=run_id)
    logger.info("Re-enqueued %d queued runs", len(stale))
    return len(stale)


def flow_runs_recover_interrupted(*, lease: timedelta | None = None, limit: int = 1000) -> int:
    """Runs `running` for longer than their lease lost their worker: queue them again, or fail them.

    A run's lease is its flow's timeout (or LANGRUN_FLOW_TIMEOUT) plus
    LANGRUN_LEASE_MARGIN, and never more than LANGRUN_RUN_TIMEOUT plus the
    margin, where django-q2 stops a task: the engine stops a run at its timeout,
    so a run still `running` after its lease has nobody working on it. `lease`
    overrides it for every run. Each update is conditional on the claim seen
    (`attempts`), so a worker that finishes at the same moment wins or loses cleanly.
    """
    now = timezone.now()
    margin = timedelta(seconds=settings.LANGRUN_LEASE_MARGIN)
    longest = timedelta(seconds=settings.LANGRUN_RUN_TIMEOUT) + margin

    def lease_of(flow_timeout: int | None) -> timedelta:
        if lease is not None:
            return lease
        return min(timedelta(seconds=flow_timeout or settings.LANGRUN_FLOW_TIMEOUT) + margin, longest)

    shortest = lease if lease is not None else min(margin, longest)
    candidates = (
        FlowRun.objects.unfinished()
        .filter(status=FlowRun.Status.RUNNING, started_at__lt=now - shortest)
        .values_list("pk", "attempts", "flow__max_attempts", "started_at", "flow__timeout")
        .order_by("started_at")[:limit]
    )
    stuck = [
        (pk, attempts, max_attempts) for pk, attempts, max_attempts, started, timeout in candidates if started < now - lease_of(timeout)
    ]
    recovered = 0
    for run_id, attempts, max_attempts in stuck:
        interrupted = f"Attempt {attempts} was interrupted: its worker stopped, or it ran past its timeout."
        current = FlowRun.objects.filter(pk=run_id, status=FlowRun.Status.RUNNING, attempts=attempts)
        with transaction.atomic():
            if attempts < max_attempts:
                changed = current.update(status=FlowRun.Status.QUEUED, error=interrupted, enqueued_at=now)
                if changed:
                    transaction.on_commit(lambda run_id=run_id: flow_run_enqueue(run_id=run_id))
            else:
                error = f"{interrupted} No attempts left ({attempts} of {max_attempts})."
                changed = current.update(status=FlowRun.Status.FAILED, error=error, finished_at=now)
            if changed:
                RunAttempt.objects.filter(run_id=run_id, number=attempts).update(
                    outcome=RunAttempt.Outcome.INTERRUPTED, error=interrupted, finished_at=now
                )
        recovered += changed
    if recovered:
        logger.warning("Recovered %d interrupted runs", recovered)
    return recovered


def flow_runs_enqueue_due_retries(*, limit: int = 1000) -> int:
    """Ring for the runs whose retry backoff has passed (each once: `enqueued_at` moves past `next_attempt_at`).

    Returns how many were enqueued.
    """
    now = timezone.now()
    due = list(
        FlowRun.objects.unfinished()
        .filter(status=FlowRun.Status.QUEUED, next_attempt_at__lte=now, enqueued_at__lt=F("next_attempt_at"))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    enqueued = 0
    for run_id in due:
        if FlowRun.objects.filter(pk=run_id, status=FlowRun.Status.QUEUED).update(enqueued_at=now):
            enqueued += flow_run_enqueue(run_id=run_id)  # one the broker refused is left to flow_runs_requeue_stale
    return enqueued


def flow_runs_release_idempotency_keys(*, older_than: timedelta | None = None) -> int:
    """Forget the idempotency keys of runs older than the retention window, so the keys may be used again."""
    if older_than is None:
        older_than = timedelta(seconds=settings.LANGRUN_IDEMPOTENCY_RETENTION)
    return FlowRun.objects.filter(idempotency_key__isnull=False, received_at__lt=timezone.now() - older_than).update(idempotency_key=None)


def flow_runs_sweep() -> dict[str, int]:
    """Everything the periodic sweep does: recover interrupted runs, ring for retries and lost doorbells, expire keys."""
    return {
        "recovered": flow_runs_recover_interrupted(),
        "retried": flow_runs_enqueue_due_retries(),
        "requeued": flow_runs_requeue_stale(),
        "keys_released": flow_runs_release_idempotency_keys(),
    }


def sweep_schedule_ensure(sender=None, using: str = "default", **kwargs: Any) -> None:
    """Install the periodic sweep as a django-q2 schedule (runs after every `migrate`)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={"func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


# --- Variables -----------------------------------------------------------------


class VariableNameTaken(Exception):
    """The owner already has a variable with this name."""


class VariableUndecryptable(Exception):
    """A credential's token does not open with the current key (LANGRUN_VARIABLES_KEY or SECRET_KEY changed)."""


def _fernet():
    """The credential keys: LANGRUN_VARIABLES_KEY's comma-separated list, the first encrypting and every one decrypting.

    The key derived from SECRET_KEY (the default when none is set) stays last as a decrypting key, so that
    setting LANGRUN_VARIABLES_KEY for the first time is a rotation like any other, not a loss.
    """
    import base64
    import hashlib

    from cryptography.fernet import Fernet, MultiFernet

    digest = hashlib.sha256(b"langrun-variables:" + settings.SECRET_KEY.encode()).digest()
    keys = [key.strip() for key in settings.LANGRUN_VARIABLES_KEY.split(",") if key.strip()]
    keys.append(base64.urlsafe_b64encode(digest).decode())
    return MultiFernet([Fernet(key) for key in dict.fromkeys(keys)])


def variable_encrypt(*, value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def variable_value(*, variable: Variable) -> str:
    """The plain value of a variable (decrypting a credential)."""
    if variable.kind != Variable.Kind.CREDENTIAL:
        return variable.value
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(variable.value.encode()).decode()
    except InvalidToken as exc:
        raise VariableUndecryptable(f"Variable {variable.name!r} cannot be decrypted with the current key; set its value again.") from exc


def variables_rotate_key() -> tuple[int, list[Variable]]:
    """Encrypt every credential again with the first key: the count re-encrypted, and those no key opens (left as they are).

    A value changed meanwhile (by its owner) is not overwritten: the update is conditional on the token read.
    """
    from cryptography.fernet import InvalidToken

    keys = _fernet()
    rotated, unreadable = 0, []
    for variable in Variable.objects.filter(kind=Variable.Kind.CREDENTIAL).order_by("pk").iterator(chunk_size=500):
        try:
            token = keys.rotate(variable.value.encode()).decode()
        except InvalidToken:
            unreadable.append(variable)
            continue
        rotated += Variable.objects.filter(pk=variable.pk, value=variable.value).update(value=token)
    return rotated, unreadable


def variable_create(*, user, name: str, value: str, kind: str = Variable.Kind.CREDENTIAL) -> Variable:
    variable = Variable(user=user, name=name, kind=kind)
    variable.value = variable_encrypt(value=value) if kind == Variable.Kind.CREDENTIAL else value
    return _variable_save(variable)


def variable_update(*, variable: Variable, name: str | None = None, value: str | None = None, kind: str | None = None) -> Variable:
    """Rename, re-kind or set the value; changing the kind without a new value converts the stored value."""
    if value is None and kind is not None and kind != variable.kind:
        value = variable_value(variable=variable)
    if name is not None:
        variable.name = name
    if kind is not None:
        variable.kind = kind
    if value is not None:
        variable.value = variable_encrypt(value=value) if variable.kind == Variable.Kind.CREDENTIAL else value
    return _variable_save(variable)


def _variable_save(variable: Variable) -> Variable:
    if Variable.objects.filter(user=variable.user, name=variable.name).exclude(pk=variable.pk).exists():
        raise VariableNameTaken(variable.name)
    try:
        with transaction.atomic():
            variable.save()
    except IntegrityError as exc:
        raise VariableNameTaken(variable.name) from exc
    return variable


def variables_check_exist(*, user, data: Any) -> None:
    """Raise GraphValidationError naming every variable the flow refers to that `user` does not have."""
    refs = engine.variable_references(data)
    if not refs:
        return
    have = set(Variable.objects.filter(user=user, name__in={name for _, name in refs}).values_list("name", flat=True))
    _variables_raise_missing(refs=refs, have=have)


def _variables_raise_missing(*, refs, have) -> None:
    """GraphValidationError naming every reference `(loc, name)` whose name is not in `have`."""
    missing = [
        engine.ValidationIssue(loc, f"Variable {name!r} does not exist; create it under /api/v1/variables/.", "variable_missing")
        for loc, name in refs
        if name not in have
    ]
    if missing:
        raise engine.GraphValidationError(missing)


def flow_run_context(*, flow: Flow, payload: Any, data: Any) -> engine.RunContext:
    """What the engine needs for a run: the payload, the referenced variables' plain values
    (credentials also listed as secrets to mask), and the outbound HTTP allow-list.

    Raises GraphValidationError when a referenced variable is missing or cannot be decrypted.
    """
    # The owner's id is enough (loading `flow.user` cost a query per run).
    return _flow_run_context(user_id=flow.user_id, payload=payload, refs=engine.variable_references(data))


def _flow_run_context(*, user_id, payload: Any, refs) -> engine.RunContext:
    """flow_run_context given the graph's variable references `(loc, name)`: one query, and none without references."""
    values, secrets = {}, set()
    if refs:
        found = {v.name: v for v in Variable.objects.filter(user=user_id, name__in={name for _, name in refs})}
        _variables_raise_missing(refs=refs, have=found)
        for variable in found.values():
            try:
                values[variable.name] = variable_value(variable=variable)
            except VariableUndecryptable as exc:
                raise engine.GraphValidationError([engine.ValidationIssue(("variables", variable.name), str(exc), "variable_key")]) from exc
            if variable.kind == Variable.Kind.CREDENTIAL:
                secrets.add(values[variable.name])
    return engine.RunContext(
        payload=payload,
        variables=values,
        secrets=frozenset(s for s in secrets if s),
        http_allowed_hosts=tuple(settings.LANGRUN_HTTP_ALLOWED_HOSTS),
        max_output_bytes=settings.LANGRUN_MAX_OUTPUT_BYTES or None,
    )


# --- Import and export ---------------------------------------------------------------


def flow_import(*, user, document: Any) -> list[Flow]:
    """Create flows from a Langflow export (one flow, or `{"flows": [...]}`) or a langrun export.

    Every flow is converted and validated before any is saved, so a bad file saves
    nothing; problems raise GraphValidationError (located in the uploaded document).
    An endpoint name the user already has gets a `-1`, `-2` … suffix, as Langflow does.
    """
    from flows.importers import ImportProblem, is_langflow_flow, langflow_to_native

    if isinstance(document, dict) and isinstance(document.get("flows"), list):
        documents, prefix = document["flows"], ("flows",)
    else:
        documents, prefix = [document], ()
    converted, issues = [], []
    for k, doc in enumerate(documents):
        loc = (*prefix, k) if prefix else ()
        if not isinstance(doc, dict):
            issues.append(engine.ValidationIssue(loc, "A flow must be an object with 'name' and 'data'.", "object_type"))
            continue
        try:
            if is_langflow_flow(doc):
                native = langflow_to_native(doc)
            else:
                native = {k2: doc.get(k2) for k2 in ("name", "description", "endpoint_name", "data", "timeout")}
                native["name"] = str(native["name"] or "Imported flow")[:200]
            flow_graph_validate(data=native["data"], user=user)
        except ImportProblem as exc:
            issues += [engine.ValidationIssue((*loc, *i.loc), i.msg, i.type) for i in exc.issues]
            continue
        except engine.GraphValidationError as exc:
            issues += [engine.ValidationIssue((*loc, "data", *i.loc), i.msg, i.type) for i in exc.issues]
            continue
        converted.append(native)
    if issues:
        raise engine.GraphValidationError(issues)
    with transaction.atomic():
        return [
            flow_create(
                user=user,
                name=native["name"],
                description=native.get("description") or "",
                endpoint_name=_free_endpoint_name(user=user, wanted=native.get("endpoint_name")),
                data=native["data"],
                timeout=native.get("timeout") if isinstance(native.get("timeout"), int) and native["timeout"] > 0 else None,
            )
            for native in converted
        ]


def _free_endpoint_name(*, user, wanted: Any) -> str | None:
    import re

    from flows.models import ENDPOINT_NAME_RE

    if not isinstance(wanted, str) or not re.match(ENDPOINT_NAME_RE, wanted):
        return None
    candidate, n = wanted[:100], 0
    while flow_endpoint_name_taken(user=user, endpoint_name=candidate):
        n += 1
        candidate = f"{wanted[: 100 - len(str(n)) - 1]}-{n}"
    return candidate


def flow_export(*, flow: Flow) -> dict[str, Any]:
    """The flow in langrun's native format, ready for `flow_import` (here or on another langrun)."""
    return {
        "name": flow.name,
        "description": flow.description,
        "endpoint_name": flow.endpoint_name,
        "timeout": flow.timeout,
        "data": flow.data,
    }


# --- Flow versions -------------------------------------------------------------


def flow_version_current(*, flow: Flow) -> FlowVersion:
    """The version equal to the flow's graph: its `current_version` (no query when the lookup joined it), else recorded."""
    current = flow.current_version if flow.current_version_id else None
    if current is not None and current.data == flow.data:
        return current
    return flow_version_record(flow=flow)


def flow_version_record(*, flow: Flow, author=None, message: str = "") -> FlowVersion:
    """The flow's current version: the latest one when its graph equals `flow.data`, else a new one.

    Numbering is serialised per flow by locking the flow's row (SQLite's
    IMMEDIATE transactions serialise writers anyway).
    """
    latest = flow.versions.order_by("-number").first()
    if latest is not None and latest.data == flow.data:
        return _flow_version_point(flow, latest)
    with transaction.atomic():
        Flow.objects.select_for_update().filter(pk=flow.pk).first()
        latest = flow.versions.order_by("-number").first()
        if latest is not None and latest.data == flow.data:
            return _flow_version_point(flow, latest)
        version = FlowVersion.objects.create(
            flow=flow, number=(latest.number + 1) if latest else 1, data=flow.data, author=author, message=message[:500]
        )
        Flow.objects.filter(pk=flow.pk).update(current_version=version)
        flow.current_version = version
    logger.info("Flow version %d recorded", version.number, extra={"flow_id": flow.id})
    return version


def _flow_version_point(flow: Flow, version: FlowVersion) -> FlowVersion:
    if flow.current_version_id != version.pk:
        Flow.objects.filter(pk=flow.pk).update(current_version=version)
        flow.current_version = version
    return version


def flow_version_restore(*, flow: Flow, number: int, author=None) -> FlowVersion:
    """Make version `number`'s graph the flow's graph again, as a new version (FlowVersion.DoesNotExist if none).

    The graph is validated again (components may have changed since), raising GraphValidationError.
    Restoring the graph the flow already has records nothing and returns the current version.
    """
    old = flow.versions.get(number=number)
    flow_update(flow=flow, data=old.data, author=author, message=f"Restored version {number}")
    return flow_version_record(flow=flow)


def flow_run_graph_data(*, run: FlowRun) -> dict:
    """The graph a run executes: its version's, or (for a run recorded before versions) the flow's."""
    return run.version.data if run.version_id else run.flow.data


def flow_runs_requeue(
    *,
    status: str = FlowRun.Status.QUEUED,
    flow: Flow | None = None,
    older_than: timedelta = timedelta(0),
    limit: int = 1000,
    dry_run: bool = False,
) -> list[FlowRun]:
    """An operator's requeue (`manage.py requeue_runs`); returns the runs it acted on (or would, with `dry_run`).

    - `queued`: enqueue again (as the sweep does) those last enqueued more than `older_than` ago.
    - `running`: put back to `queued` and enqueue those started more than `older_than` ago, for runs
      whose worker died; a run that is really still running could then run twice, so pick the age with care.
    - `failed`: replay those finished more than `older_than` ago as new linked runs (terminal runs never
      change); runs whose payload retention cleared are left out.
    """
    age_field = {FlowRun.Status.QUEUED: "enqueued_at", FlowRun.Status.RUNNING: "started_at", FlowRun.Status.FAILED: "finished_at"}
    if status not in age_field:
        raise ValueError(f"Runs that are {status!r} cannot be requeued; choose one of {', '.join(age_field)}.")
    now = timezone.now()
    qs = FlowRun.objects.filter(status=status, **{f"{age_field[status]}__lte": now - older_than}).select_related("flow", "version", "user")
    if flow is not None:
        qs = qs.filter(flow=flow)
    if status == FlowRun.Status.FAILED:
        qs = qs.filter(payload_pruned_at__isnull=True)
    else:
        qs = qs.unfinished()
    runs = list(qs.order_by(age_field[status])[:limit])
    if dry_run or not runs:
        return runs
    if status == FlowRun.Status.FAILED:
        replays = [flow_run_replay(run=run, user=run.user) for run in runs]
        logger.info("Replayed %d failed runs", len(replays))
        return replays
    acted = []
    for run in runs:
        moved = FlowRun.objects.filter(pk=run.pk, status=status).update(status=FlowRun.Status.QUEUED, enqueued_at=now)
        if moved:
            flow_run_enqueue(run_id=run.id)
            acted.append(run)
    logger.info("Requeued %d %s runs", len(acted), status)
    return acted


# --- Monitoring --------------------------------------------------------------

VERTEX_BUILDS_RUNS = 100


def flow_vertex_builds(*, flow: Flow, runs: int = VERTEX_BUILDS_RUNS) -> dict[str, list[dict[str, Any]]]:
    """Langflow's vertex builds for a flow, from the node results of its latest `runs` finished runs.

    `{node_id: [build, ...]}`, oldest build first per node; nodes that were
    skipped are left out (they were never built).
    """
    latest = list(
        FlowRun.objects.filter(flow=flow, finished_at__isnull=False).order_by("-received_at").values_list("pk", "version_id")[:runs]
    )
    results = (
        NodeResult.objects.filter(run_id__in=[pk for pk, _ in latest])
        .exclude(status=NodeResult.Status.SKIPPED)
        .select_related("run")
        .order_by("run__received_at", "order")
    )
    # Each run's params are its own version's (a run recorded before versions has only the flow's graph).
    versions = FlowVersion.objects.filter(pk__in={version_id for _, version_id in latest if version_id is not None})
    params_of = {version_id: _params_by_node(data) for version_id, data in versions.values_list("pk", "data")}
    params_of[None] = _params_by_node(flow.data)
    builds: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        tweaks = ((result.run.tweaks or {}).get(result.node_id)) or {}
        params_by_node = params_of.get(result.run.version_id, params_of[None])
        params = {**(params_by_node.get(result.node_id) or {}), **tweaks}
        builds.setdefault(result.node_id, []).append(
            {
                "id": result.node_id,
                "valid": result.status == NodeResult.Status.SUCCEEDED,
                "timestamp": result.run.finished_at,
                "flow_id": flow.id,
                "params": json.dumps(params) if params else None,
                "data": {
                    "results": result.output,
                    "outputs": result.output,
                    "status": result.status,
                    "message": result.error,
                    "duration_ms": result.duration_ms,
                    "component_type": result.component_type,
                },
                "artifacts": {},
                "build_id": result.run_id,
            }
        )
    return builds


def _params_by_node(data: Any) -> dict[str, Any]:
    nodes = data.get("nodes") if isinstance(data, dict) else None
    return {n.get("id"): n.get("params") for n in (nodes if isinstance(nodes, list) else []) if isinstance(n, dict)}
