"""Flow and run services: the one place where flows are saved and runs are created, executed and swept.

The webhook, the REST API, the admin and the worker all call these functions.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from flows import engine
from flows.models import Flow, FlowRun, NodeResult

logger = logging.getLogger(__name__)

EXECUTE_TASK = "flows.tasks.execute_run"
SWEEP_TASK = "flows.tasks.sweep"
SWEEP_SCHEDULE_NAME = "langrun-sweep"


class EndpointNameTaken(Exception):
    """The owner already has a flow with this endpoint name."""


class RunNotCancellable(Exception):
    """Only a run that is still `queued` can be cancelled."""


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


def flow_create(*, user, name: str, data: dict, description: str = "", endpoint_name: str | None = None) -> Flow:
    flow_graph_validate(data=data)
    flow = Flow(user=user, name=name, description=description, endpoint_name=endpoint_name or None, data=data)
    return _flow_save(flow)


def flow_update(*, flow: Flow, **fields: Any) -> Flow:
    if "data" in fields:
        flow_graph_validate(data=fields["data"])
    if "endpoint_name" in fields:
        fields["endpoint_name"] = fields["endpoint_name"] or None
    for name, value in fields.items():
        setattr(flow, name, value)
    return _flow_save(flow)


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
) -> FlowRun:
    """Record a run as `queued` and enqueue it once the transaction commits.

    When this returns, the run is committed (or the surrounding transaction
    will commit it); a failure to enqueue is left to the sweep. `tweaks` are
    checked against the flow's graph first (GraphValidationError).
    """
    if tweaks:
        engine.parse_graph(engine.apply_tweaks(flow.data, tweaks))
    # One INSERT is atomic by itself: outside a transaction it commits at once and
    # on_commit rings the doorbell right after; inside a caller's transaction both
    # wait for its commit. (An atomic block here cost a BEGIN and a COMMIT per webhook.)
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
    )
    transaction.on_commit(lambda: flow_run_enqueue(run_id=run.id))
    return run


def flow_run_replay(*, run: FlowRun, user) -> FlowRun:
    """A new run of the same flow with the same request, linked to the original."""
    return flow_run_create(
        flow=run.flow,
        user=user,
        trigger=FlowRun.Trigger.REPLAY,
        payload=run.payload,
        body=run.body,
        content_type=run.content_type,
        replay_of=run,
        tweaks=run.tweaks,
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


def _worker_name() -> str:
    """host:pid of this process, recorded on the runs it claims (which machine and process did the work)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def flow_run_claim(*, run_id) -> bool:
    """Move a run from `queued` to `running` in one conditional update; False if someone else has it."""
    claimed = FlowRun.objects.filter(pk=run_id, status=FlowRun.Status.QUEUED).update(
        status=FlowRun.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1, worker=_worker_name()
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
    run = FlowRun.objects.select_related("flow").get(pk=run_id)
    try:
        graph = engine.parse_graph(engine.apply_tweaks(run.flow.data, run.tweaks))
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
