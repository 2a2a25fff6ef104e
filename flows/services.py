"""Flow and run services: the one place where flows are saved and runs are created, executed and swept.

The webhook, the REST API, the admin and the worker all call these functions.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from flows import engine
from flows.models import Flow, FlowRun, FlowVersion, NodeResult
from langrun.logs import log_context

logger = logging.getLogger(__name__)

EXECUTE_TASK = "flows.tasks.execute_run"
SWEEP_TASK = "flows.tasks.sweep"
SWEEP_SCHEDULE_NAME = "langrun-sweep"


class EndpointNameTaken(Exception):
    """The owner already has a flow with this endpoint name."""


class RunNotCancellable(Exception):
    """Only a run that is still `queued` can be cancelled."""


class RunPayloadPruned(Exception):
    """Retention deleted this run's payload, so it cannot be replayed."""


# --- Flows -------------------------------------------------------------------


def flow_graph_validate(*, data: Any) -> engine.Graph:
    """Parse a flow's graph; raises engine.GraphValidationError listing every problem."""
    return engine.parse_graph(data)


def flow_endpoint_name_taken(*, user, endpoint_name: str | None, exclude: Flow | None = None) -> bool:
    if not endpoint_name:
        return False
    qs = Flow.objects.filter(user=user, endpoint_name=endpoint_name)
    if exclude is not None:
        qs = qs.exclude(pk=exclude.pk)
    return qs.exists()


def flow_create(
    *, user, name: str, data: dict, description: str = "", endpoint_name: str | None = None, author=None, message: str = ""
) -> Flow:
    flow_graph_validate(data=data)
    flow = Flow(user=user, name=name, description=description, endpoint_name=endpoint_name or None, data=data)
    with transaction.atomic():  # the flow and its first version, or neither
        _flow_save(flow)
        flow_version_record(flow=flow, author=author or user, message=message)
    return flow


def flow_update(*, flow: Flow, author=None, message: str = "", **fields: Any) -> Flow:
    """Change a flow's fields; a changed graph also records a new FlowVersion."""
    if "data" in fields:
        flow_graph_validate(data=fields["data"])
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
    version: FlowVersion | None = None,
) -> FlowRun:
    """Record a run as `queued` and enqueue it once the transaction commits.

    When this returns, the run is committed (or the surrounding transaction
    will commit it); a failure to enqueue is left to the sweep. `tweaks` are
    checked against the flow's graph first (GraphValidationError). The run
    records `version` (default: the flow's current version) and executes it.
    """
    if version is None:
        version = flow_version_record(flow=flow)
    if tweaks:
        engine.parse_graph(engine.apply_tweaks(version.data, tweaks))
    with transaction.atomic():
        run = FlowRun.objects.create(
            flow=flow,
            user=user,
            trigger=trigger,
            payload=payload,
            body=body,
            content_type=content_type[:255],
            enqueued_at=timezone.now(),
            replay_of=replay_of,
            tweaks=tweaks or None,
            version=version,
        )
        transaction.on_commit(lambda: _flow_run_enqueue_logged(run))
    logger.info("Run accepted (trigger %s, version %s)", trigger, version.number, extra={"run_id": run.id, "flow_id": flow.id})
    return run


def _flow_run_enqueue_logged(run: FlowRun) -> None:
    with log_context(run_id=run.id, flow_id=run.flow_id):
        flow_run_enqueue(run_id=run.id)


def flow_run_replay(*, run: FlowRun, user, current_version: bool = False) -> FlowRun:
    """A new run of the same flow with the same request, linked to the original.

    It executes the version the original ran, or the flow's current graph
    with `current_version=True`. A run whose payload retention cleared cannot be replayed.
    """
    if run.payload_pruned_at is not None:
        raise RunPayloadPruned(
            f"Run {run.id}'s payload was deleted by retention on {run.payload_pruned_at:%Y-%m-%d}; it cannot be replayed."
        )
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


def flow_run_enqueue(*, run_id) -> bool:
    """Ring the doorbell for a run. Never raises: a run that could not be enqueued stays `queued` for the sweep."""
    from django_q.tasks import async_task

    try:
        async_task(EXECUTE_TASK, str(run_id), broker=_get_broker(), task_name=f"run-{run_id}")
    except Exception:
        logger.exception("Could not enqueue run %s; the sweep will enqueue it again", run_id)
        return False
    return True


def flow_run_claim(*, run_id) -> bool:
    """Move a run from `queued` to `running` in one conditional update; False if someone else has it."""
    claimed = FlowRun.objects.filter(pk=run_id, status=FlowRun.Status.QUEUED).update(
        status=FlowRun.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    return claimed == 1


def flow_run_execute(*, run_id) -> FlowRun | None:
    """Claim a queued run and execute its flow, recording every node's result.

    Returns None (and does nothing) when the run is not `queued`: a duplicate
    delivery, or a run another worker already has.
    """
    if not flow_run_claim(run_id=run_id):
        logger.info("Run %s is not queued any more; nothing to do", run_id)
        return None
    run = FlowRun.objects.select_related("flow", "version").get(pk=run_id)
    try:
        graph = engine.parse_graph(engine.apply_tweaks(flow_run_graph_data(run=run), run.tweaks))
    except engine.GraphValidationError as exc:
        return _flow_run_finish(run, status=FlowRun.Status.FAILED, outputs=None, error=f"The flow's graph is invalid: {exc}", nodes=[])
    result = engine.run_graph(graph, payload=run.payload)
    return _flow_run_finish(run, status=result.status, outputs=result.outputs, error=result.error, nodes=result.nodes)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _flow_run_finish(run: FlowRun, *, status: str, outputs, error: str, nodes: list[engine.NodeResult]) -> FlowRun:
    run.status = status
    run.outputs = _jsonable(outputs)
    run.error = error
    run.finished_at = timezone.now()
    with transaction.atomic():
        NodeResult.objects.bulk_create(
            NodeResult(
                run=run,
                node_id=n.node_id,
                component_type=n.type,
                status=n.status,
                output=_jsonable(n.output),
                error=n.error,
                duration_ms=n.duration_ms,
                order=n.order,
            )
            for n in nodes
        )
        FlowRun.objects.filter(pk=run.pk, status=FlowRun.Status.RUNNING).update(
            status=run.status, outputs=run.outputs, error=run.error, finished_at=run.finished_at
        )
    return run


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
        FlowRun.objects.filter(status=FlowRun.Status.QUEUED, enqueued_at__lt=now - older_than)
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


def sweep_schedule_ensure(sender=None, using: str = "default", **kwargs: Any) -> None:
    """Install the periodic sweep as a django-q2 schedule (runs after every `migrate`)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={"func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


# --- Flow versions -------------------------------------------------------------


def flow_version_record(*, flow: Flow, author=None, message: str = "") -> FlowVersion:
    """The flow's current version: the latest one when its graph equals `flow.data`, else a new one.

    Numbering is serialised per flow by locking the flow's row (SQLite's
    IMMEDIATE transactions serialise writers anyway).
    """
    latest = flow.versions.order_by("-number").first()
    if latest is not None and latest.data == flow.data:
        return latest
    with transaction.atomic():
        Flow.objects.select_for_update().filter(pk=flow.pk).first()
        latest = flow.versions.order_by("-number").first()
        if latest is not None and latest.data == flow.data:
            return latest
        version = FlowVersion.objects.create(
            flow=flow, number=(latest.number + 1) if latest else 1, data=flow.data, author=author, message=message[:500]
        )
    logger.info("Flow version %d recorded", version.number, extra={"flow_id": flow.id})
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
