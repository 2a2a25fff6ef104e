"""Run intake: recording a run (webhook, API, admin, replay), cancelling one, a run's input payload."""

from __future__ import annotations

import functools
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.http import Http404
from django.utils import timezone

from flows import engine
from flows.exceptions import RunNotCancellable, RunNotReplayable, RunPayloadPruned
from flows.models import Flow, FlowRun, FlowVersion, RunAttempt
from flows.services import queue
from flows.services.concurrency import run_control_keys, run_control_release, run_control_withdrawn
from flows.services.variables import request_variables_encrypt, request_variables_of, variables_check_exist
from flows.services.versions import flow_run_graph_data, flow_version_current
from langrun.logs import log_context
from langrun.parsers import json_unstorable

logger = logging.getLogger(__name__)


class RunConditionFailed(Exception):
    """The condition set on recording a run did not hold when its INSERT ran: nothing was written."""


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
    request: dict | None = None,
    filtered: bool = False,
    request_variables: dict[str, str] | None = None,
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

    A `filtered` run (the flow's `accept_if` was falsy) is recorded as finished with status `filtered`
    and never enqueued.

    `request` is the webhook request's `{method, headers, query}`, masked (webhooks/inbound.py); the
    Webhook node gives it to the flow. With it and the payload the flow's concurrency and throttle keys are
    evaluated, once (flows/services/concurrency.py).

    `request_variables` (Langflow's X-LANGFLOW-GLOBAL-VAR-* headers) set variables for this run only,
    over the owner's; they are recorded encrypted on the run, never as variables.

    `only_if` is an SQL condition and its parameters that the INSERT itself checks: when
    it does not hold, nothing is written and RunConditionFailed is raised (the webhook
    states so what it assumed of a key and a flow it did not read again).
    """
    if version is None:
        version = flow_version_current(flow=flow)
    if tweaks:
        tweaked = engine.apply_tweaks(version.data, tweaks)
        engine.parse_graph(tweaked)
        variables_check_exist(user=flow.user, data=tweaked, provided=set(request_variables or ()))
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
        "request": request,
        "request_variables": request_variables_encrypt(values=request_variables),
    }
    if filtered:
        fields.update(status=FlowRun.Status.FILTERED, finished_at=timezone.now())
    elif flow.max_concurrent_runs or flow.throttle_limit:
        fields.update(run_control_keys(flow=flow, request=request, payload=payload))
    if not idempotency_key:
        try:
            return _flow_run_insert(fields, only_if)
        except (IntegrityError, OperationalError) as exc:
            flow_run_flow_found(flow, exc)
            raise
    for _ in range(3):
        try:
            return _flow_run_insert(fields, only_if)
        except OperationalError as exc:
            flow_run_flow_found(flow, exc)
            raise
        except IntegrityError:
            original = FlowRun.objects.filter(flow=flow, idempotency_key=idempotency_key).first()
            if original is None:  # its key expired between our insert and this read, or its flow was deleted
                flow_run_flow_found(flow)
                continue
            if original.received_at >= timezone.now() - timedelta(seconds=settings.LANGRUN_IDEMPOTENCY_RETENTION):
                original.deduplicated = True
                return original
            # Past the retention window the key is free again.
            FlowRun.objects.filter(pk=original.pk, idempotency_key=idempotency_key).update(idempotency_key=None)
    raise RuntimeError(f"Could not record a run for idempotency key {idempotency_key!r}")


# PostgreSQL's code for a transaction it aborted to end a deadlock.
DEADLOCK = "40P01"


def flow_run_flow_found(flow: Flow, exc: Exception | None = None) -> None:
    """Http404 when the flow was deleted while its run was being recorded, as a lookup of the flow would answer now:
    the run's references are checked when it commits, and then broke (`exc` an IntegrityError), or ran into the
    delete's in a deadlock that PostgreSQL ended by aborting the run. A delete still committing is waited for. Any
    other OperationalError is not this, and is left to the caller."""
    if isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) != DEADLOCK:
        return
    with transaction.atomic():
        if not Flow.objects.select_for_update().filter(pk=flow.pk).exists():
            raise Http404(f"Flow {flow.pk} not found.")


def _flow_run_insert(fields: dict[str, Any], only_if: tuple[str, list] | None) -> FlowRun:
    # One INSERT is atomic by itself: outside a transaction it commits at once and
    # on_commit rings the doorbell right after; inside a caller's transaction both
    # wait for its commit. (An atomic block here cost a BEGIN and a COMMIT per webhook.)
    # With an idempotency key the insert may hit the unique constraint, so it gets a
    # savepoint that keeps a caller's transaction usable.
    filtered = fields.get("status") == FlowRun.Status.FILTERED
    run = FlowRun(enqueued_at=None if filtered else timezone.now(), **fields)
    if fields.get("idempotency_key"):
        with transaction.atomic():
            _flow_run_insert_row(run, only_if)
    else:
        _flow_run_insert_row(run, only_if)
    if filtered:  # never executed: nothing to enqueue
        logger.info("Run filtered by the flow's accept_if", extra={"run_id": run.id, "flow_id": run.flow_id})
        run.deduplicated = False
        return run
    transaction.on_commit(lambda: _flow_run_enqueue_logged(run))
    logger.info("Run accepted (trigger %s, version %s)", run.trigger, run.version.number, extra={"run_id": run.id, "flow_id": run.flow_id})
    run.deduplicated = False
    return run


# The run's INSERT is written once per process: Django's create() builds the same statement again for every
# webhook, each field through the generic save path (what it buys: docs/performance.md). Fields still convert
# their values for the database, except text and number fields, which are sent as they are (as Django's own
# conversion would leave them), and empty values (NULL for every field type); `auto_now` fields always take their
# value from pre_save.
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
        queue.flow_run_ring(run.id, run.flow_id, run.version_id, run.user_id)


def flow_run_replay(*, run: FlowRun, user, current_version: bool = False) -> FlowRun:
    """A new run of the same flow with the same request, linked to the original.

    It executes the version the original ran, or the flow's current graph
    with `current_version=True`. A run whose payload retention cleared cannot be replayed. A run deleted since it
    was looked up (retention, its flow deleted) raises Http404, as its lookup would now.
    """
    if run.payload_pruned_at is not None:
        raise RunPayloadPruned(
            f"Run {run.id}'s payload was deleted by retention on {run.payload_pruned_at:%Y-%m-%d}; it cannot be replayed."
        )
    try:
        flow = run.flow
    except Flow.DoesNotExist:
        raise Http404(f"Run {run.pk} not found.") from None
    try:
        return flow_run_create(
            flow=flow,
            user=user,
            trigger=FlowRun.Trigger.REPLAY,
            payload=run.payload,
            body=run.body,
            content_type=run.content_type,
            replay_of=run,
            tweaks=run.tweaks,
            request=run.request,
            version=None if current_version else run.version,
            request_variables=request_variables_of(run=run),
        )
    except IntegrityError:  # the replay's link to its original broke: the run was deleted while it was recorded
        if FlowRun.objects.filter(pk=run.pk).exists():
            raise
        raise Http404(f"Run {run.pk} not found.") from None
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
    """Stop a queued or running run; raises RunNotCancellable for a run already finished.

    A running run ends `cancelled` here and now, conditional on the claim seen (its attempt number):
    its worker learns of it within a fraction of a second (flows/services/inflight_ledger.py), stops
    the work in flight (an HTTP call is closed) and records what its nodes did. Its own finish, being
    conditional on the run still `running`, writes nothing.
    """
    now = timezone.now()
    cancelled = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.QUEUED).update(
        status=FlowRun.Status.CANCELLED, finished_at=now, error="Cancelled before it started."
    )
    if cancelled and (run.concurrency_key is not None or run.throttle_key is not None):
        transaction.on_commit(lambda: run_control_withdrawn(run=run))  # the next of its keys may have waited behind it
    if not cancelled:
        current = FlowRun.objects.filter(pk=run.pk).values_list("status", "attempts").first()
        if current is not None and current[0] == FlowRun.Status.RUNNING:
            error = "Cancelled while running."
            with transaction.atomic():
                cancelled = FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.RUNNING, attempts=current[1]).update(
                    status=FlowRun.Status.CANCELLED, finished_at=now, error=error
                )
                if cancelled:
                    RunAttempt.objects.filter(run_id=run.pk, number=current[1]).update(
                        outcome=RunAttempt.Outcome.CANCELLED, error=error, finished_at=now
                    )
                    transaction.on_commit(lambda: run_control_release(run=run))  # its slot is free
    try:
        run.refresh_from_db()
    except FlowRun.DoesNotExist:  # deleted since it was looked up (retention, its flow deleted): as its lookup would now
        raise Http404(f"Run {run.pk} not found.") from None
    if not cancelled:
        raise RunNotCancellable(f"Run {run.id} is {run.status}; only a queued or running run can be cancelled.")
    return run


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
