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
from flows.models import Flow, FlowRun, NodeResult, Variable

logger = logging.getLogger(__name__)

EXECUTE_TASK = "flows.tasks.execute_run"
SWEEP_TASK = "flows.tasks.sweep"
SWEEP_SCHEDULE_NAME = "langrun-sweep"


class EndpointNameTaken(Exception):
    """The owner already has a flow with this endpoint name."""


class RunNotCancellable(Exception):
    """Only a run that is still `queued` can be cancelled."""


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
    *, user, name: str, data: dict, description: str = "", endpoint_name: str | None = None, timeout: int | None = None
) -> Flow:
    flow_graph_validate(data=data, user=user)
    flow = Flow(user=user, name=name, description=description, endpoint_name=endpoint_name or None, data=data, timeout=timeout)
    return _flow_save(flow)


def flow_update(*, flow: Flow, **fields: Any) -> Flow:
    if "data" in fields:
        flow_graph_validate(data=fields["data"], user=fields.get("user", flow.user))
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
        tweaked = engine.apply_tweaks(flow.data, tweaks)
        engine.parse_graph(tweaked)
        variables_check_exist(user=flow.user, data=tweaked)
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
    run = FlowRun.objects.select_related("flow").get(pk=run_id)
    try:
        graph = engine.parse_graph(engine.apply_tweaks(run.flow.data, run.tweaks))
    except engine.GraphValidationError as exc:
        return _flow_run_finish(run, status=FlowRun.Status.FAILED, outputs=None, error=f"The flow's graph is invalid: {exc}", nodes=[])
    try:
        context = flow_run_context(flow=run.flow, payload=run.payload, data=engine.apply_tweaks(run.flow.data, run.tweaks))
    except engine.GraphValidationError as exc:
        return _flow_run_finish(run, status=FlowRun.Status.FAILED, outputs=None, error=f"The flow cannot run: {exc}", nodes=[])
    result = engine.run_graph(graph, context=context, timeout=run.flow.timeout or settings.LANGRUN_FLOW_TIMEOUT)
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
                traceback=n.traceback,
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


# --- Variables -----------------------------------------------------------------


class VariableNameTaken(Exception):
    """The owner already has a variable with this name."""


class VariableUndecryptable(Exception):
    """A credential's token does not open with the current key (LANGRUN_VARIABLES_KEY or SECRET_KEY changed)."""


def _fernet():
    import base64
    import hashlib

    from cryptography.fernet import Fernet

    key = settings.LANGRUN_VARIABLES_KEY
    if not key:
        digest = hashlib.sha256(b"langrun-variables:" + settings.SECRET_KEY.encode()).digest()
        key = base64.urlsafe_b64encode(digest).decode()
    return Fernet(key)


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
    variables_check_exist(user=flow.user, data=data)
    names = {name for _, name in engine.variable_references(data)}
    values, secrets = {}, set()
    for variable in Variable.objects.filter(user=flow.user, name__in=names):
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
