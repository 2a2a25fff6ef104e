"""Flows: create, update and validate a flow's graph, its endpoint name, restore a version."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.http import Http404

from flows import engine
from flows.exceptions import EndpointNameTaken
from flows.models import ENDPOINT_NAME_UNIQUE, Flow, FlowRun, FlowVersion
from flows.services.concurrency import run_control_settings_stored
from flows.services.variables import variables_check_exist
from flows.services.versions import flow_version_record
from flows.services.webhook_settings import webhook_response_graph_check, webhook_settings_stored


def flow_graph_validate(*, data: Any, user=None) -> engine.Graph:
    """Parse a flow's graph; raises engine.GraphValidationError listing every problem.

    With `user`, every variable the params refer to must be one of theirs. At most LANGRUN_MAX_FLOW_NODES nodes, and
    as many edges: each node of a run is scheduled on its worker's loop and recorded as a row, so a graph of tens of
    thousands would hold the worker, and every account's runs it has taken, for seconds a run.
    """
    limit = settings.LANGRUN_MAX_FLOW_NODES
    if limit and isinstance(data, dict):
        over = [
            engine.ValidationIssue(
                (part,), f"A flow may have at most {limit} {part} (LANGRUN_MAX_FLOW_NODES); this one has {len(items)}.", "too_long"
            )
            for part in ("nodes", "edges")
            if isinstance(items := data.get(part), list) and len(items) > limit
        ]
        if over:
            raise engine.GraphValidationError(over)
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
    **webhook_settings: Any,
) -> Flow:
    """A new flow and its first version. `webhook_settings`: `methods`, `verification`, `response` … (flows/services/
    webhook_settings.py), `concurrency` and `throttle` (flows/services/concurrency.py), and `signing_secret` (an
    import's: one its provider issued)."""
    flow_graph_validate(data=data, user=user)
    webhook_settings = webhook_settings_stored(webhook_settings, has_secret=bool(webhook_settings.get("signing_secret")))
    webhook_response_graph_check(response=webhook_settings.get("response", ""), data=data)
    webhook_settings = run_control_settings_stored({"max_concurrent_runs": max_concurrent_runs, **webhook_settings})
    flow = Flow(
        user=user,
        name=name,
        description=description,
        endpoint_name=endpoint_name or None,
        data=data,
        timeout=timeout,
        max_attempts=max_attempts,
        **webhook_settings,
    )
    with transaction.atomic():  # the flow and its first version, or neither
        _flow_save(flow)
        flow_version_record(flow=flow, author=author or user, message=message)
    return flow


def flow_update(*, flow: Flow, author=None, message: str = "", **fields: Any) -> Flow:
    """Change a flow's fields; a changed graph also records a new FlowVersion. A new owner (`user`) takes the flow's
    schedules too, within its share (ScheduleLimitReached)."""
    if "data" in fields:
        flow_graph_validate(data=fields["data"], user=fields.get("user", flow.user))
    has_secret = bool(flow.signing_secret)
    needs_secret = {name: fields[name] for name in ("verification", "handshakes") if name in fields}
    fields = webhook_settings_stored(fields, has_secret=has_secret)
    if "data" in fields or "response" in fields:
        webhook_response_graph_check(response=fields.get("response", flow.response), data=fields.get("data", flow.data))
    fields = run_control_settings_stored(fields)
    if "endpoint_name" in fields:
        fields["endpoint_name"] = fields["endpoint_name"] or None
    for name, value in fields.items():
        setattr(flow, name, value)
    with transaction.atomic():
        # The flow was read before its new graph was checked; meanwhile it may have been paused, given a signing
        # secret, changed by another update or deleted. Only the fields given are written, and a deleted flow
        # stays deleted (a whole-row save wrote the rest back as it was read, or inserted the flow again).
        stored = Flow.objects.select_for_update().filter(pk=flow.pk).values_list("signing_secret", "user_id").first()
        if stored is None:
            raise Http404(f"Flow {flow.pk} not found.")
        secret, owner_id = stored
        if has_secret and not secret:
            # The secret was removed since the flow was read: a preset that needs it is refused as it would be now.
            webhook_settings_stored(needs_secret, has_secret=False)
        if "user" in fields and flow.user_id != owner_id:
            from flows.services.schedules import flow_schedules_move_check  # schedules.py imports this module

            flow_schedules_move_check(flow_id=flow.pk, user_id=flow.user_id, lock=True)
        _flow_save(flow, update_fields=[*fields, "updated_at"])
        if "data" in fields:
            flow_version_record(flow=flow, author=author, message=message)
    return flow


def _flow_save(flow: Flow, *, update_fields: list[str] | None = None) -> Flow:
    if flow_endpoint_name_taken(user=flow.user, endpoint_name=flow.endpoint_name, exclude=flow):
        raise EndpointNameTaken(flow.endpoint_name)
    try:
        with transaction.atomic():
            flow.save(update_fields=update_fields)
    except IntegrityError as exc:
        # A concurrent save may take the name between the check and the insert; any other constraint is a bug.
        if _endpoint_name_clash(exc):
            raise EndpointNameTaken(flow.endpoint_name) from exc
        raise
    return flow


def _endpoint_name_clash(exc: IntegrityError) -> bool:
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
    if constraint is not None:  # PostgreSQL names the constraint
        return constraint == ENDPOINT_NAME_UNIQUE
    message = str(exc)  # SQLite names the index's columns (or the index) in its message
    return message.startswith("UNIQUE constraint failed:") and (
        f"{Flow._meta.db_table}.endpoint_name" in message or ENDPOINT_NAME_UNIQUE in message
    )


def flow_version_restore(*, flow: Flow, number: int, author=None) -> FlowVersion:
    """Make version `number`'s graph the flow's graph again, as a new version (FlowVersion.DoesNotExist if none).

    The graph is validated again (components may have changed since), raising GraphValidationError.
    Restoring the graph the flow already has records nothing and returns the current version.
    """
    old = flow.versions.get(number=number)
    flow_update(flow=flow, data=old.data, author=author, message=f"Restored version {number}")
    return flow_version_record(flow=flow)


def flow_runs_delete(*, flow: Flow, batch: int | None = None) -> int:
    """Delete a flow's runs (with their node results, attempts, deliveries), `LANGRUN_PRUNE_BATCH` at a time, each
    batch its own short transaction, as retention does; how many were deleted.

    One transaction for all of a busy flow's runs held SQLite's only write lock for seconds (16,000 runs: 9.6 s,
    past 30 s the busy timeout fails other writers), and every user's webhooks waited on it.
    """
    batch = batch or settings.LANGRUN_PRUNE_BATCH
    deleted = 0
    while ids := list(FlowRun.objects.filter(flow=flow).order_by().values_list("pk", flat=True)[:batch]):
        deleted += _flow_runs_delete_batch(ids)
        if len(ids) < batch:
            break
    return deleted


def _flow_runs_delete_batch(ids: list) -> int:
    def delete() -> int:
        # Locked before what refers to them is collected: a worker recording a run's nodes, attempt or alerts
        # meanwhile waits for this delete (and then finds its run gone), instead of adding rows the delete
        # missed, which broke the foreign key at the commit (a 500, the flow half deleted).
        locked = list(FlowRun.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
        return FlowRun.objects.filter(pk__in=locked).delete()[1].get(FlowRun._meta.label, 0)

    return deleted_despite_writers(delete)


# PostgreSQL's deadlock_detected and foreign_key_violation: what a delete meets when others write to its rows meanwhile.
_DELETE_RETRIED = frozenset({"40P01", "23503"})


def deleted_despite_writers(delete, attempts: int = 3):
    """`delete()` in a transaction of its own, tried again when PostgreSQL ends a deadlock with it (a replay or a
    worker locking the same rows in another order) or it meets a row added after all: on what is there now.
    Retention's deletes go through it too (flows/retention.py)."""
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                return delete()
        except (OperationalError, IntegrityError) as exc:
            if attempt == attempts or getattr(exc.__cause__, "sqlstate", None) not in _DELETE_RETRIED:
                raise
    return None  # not reached: the last attempt returns or raises


def flows_kept(*, flow_ids) -> set:
    """Of these flows, the ids of those that still exist, each kept from a delete until the caller's transaction ends
    (locked in id order, as a delete locks them first). Something written that names a flow deleted meanwhile would
    break its foreign key at the commit; the lock is the weaker one, so the flows' webhooks still record runs."""
    kept = Flow.objects.select_for_update(no_key=True).filter(pk__in=set(flow_ids)).order_by("pk")
    return set(kept.values_list("pk", flat=True))


def flow_kept(*, flow: Flow) -> None:
    """The flow kept from a delete until the caller's transaction ends (as flows_kept does), or Http404 when it was
    deleted or moved to another owner since it was looked up, as the API's owner-scoped lookup would answer now."""
    if not Flow.objects.select_for_update(no_key=True).filter(pk=flow.pk, user_id=flow.user_id).exists():
        raise Http404("Flow not found")


def flow_delete(*, flow: Flow) -> None:
    """Delete a flow: its runs first in short transactions (flow_runs_delete), then the flow with whatever is left."""
    flow_runs_delete(flow=flow)

    def delete() -> None:
        # Locked first: a webhook recording a run meanwhile waits for this delete (and then finds its flow gone)
        # instead of adding a run the delete missed, which broke the foreign key at the commit; then the runs
        # that came in meanwhile, as a batch locks its runs.
        Flow.objects.select_for_update().filter(pk=flow.pk).exists()
        late = list(FlowRun.objects.select_for_update().filter(flow_id=flow.pk).order_by("pk").values_list("pk", flat=True))
        FlowRun.objects.filter(pk__in=late).delete()
        Flow.objects.filter(pk=flow.pk).delete()  # not flow.delete(): a failed attempt has set its pk to None

    deleted_despite_writers(delete)
