"""The worker's side of a run: claim it, execute its graph, record its outcome (or send it back for a retry)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from flows import engine
from flows.models import Flow, FlowRun, NodeResult, RunAttempt
from flows.services import pause, queue
from flows.services.concurrency import run_control_release, run_control_started, run_control_wait
from flows.services.execution_sql import _flow_run_finish_rows_sqlite, _flow_runs_claim_returning, _flow_runs_finish_rows_pg, _worker_name
from flows.services.storable import RunOutcome, _json_text, _jsonable, _outcome_storable, _text_storable, node_result_row
from flows.services.variables import flow_run_context
from flows.services.versions import flow_run_graph_data
from langrun.db import connection_give_back
from langrun.logs import log_context
from webhooks.alerts.services import outbox

logger = logging.getLogger(__name__)


def flow_run_claim(*, run_id) -> bool:
    """Move a run from `queued` to `running` in one conditional update; False if someone else has it.

    A run waiting for a retry's backoff is not claimed before its time, nor a
    run its flow's concurrency or throttle holds back (flows/services/concurrency.py:
    it stays queued, and is rung again when it may start). Each claim opens
    a RunAttempt; `attempts` doubles as the fencing token of the claim.
    """
    run = FlowRun.objects.select_related("flow").filter(pk=run_id).first()
    if run is None:
        return False
    return _flow_run_claim(run=run, attempts=run.attempts) is not None


def _flow_run_claim(*, run: FlowRun, attempts: int) -> dict[str, Any] | None:
    """The claim itself, given what was read of the run (and its flow); returns the fields it set, or None."""
    now = timezone.now()
    run_id, flow = run.pk, run.flow
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
        # Run control: a paused flow's runs stay queued (flows/services/pause.py). A query of its own: joined
        # into the update, PostgreSQL's plan found the run through the flow's runs, not its primary key.
        if Flow.objects.filter(pk=flow.pk, paused_at__isnull=False).exists():
            return None
        if flow.max_concurrent_runs or flow.throttle_limit:
            # Claims of this flow's runs take turns (a row lock; SQLite's write lock already serializes them),
            # so that two of one key cannot both find a free slot.
            list(Flow.objects.select_for_update().filter(pk=flow.pk).values_list("pk"))
            wait = run_control_wait(run=run, flow=flow, now=now)
            if wait is not None:
                logger.info("Run %s waits for its %s (key %r, limit %d)", run_id, wait.reason, wait.key, wait.limit)
                if wait.next_start_at is not None and not wait.behind:  # the next of its key: rung when its window opens
                    queue.flow_run_enqueue_later(run_id=run_id, at=wait.next_start_at)
                return None
        if claimable.update(**fields) != 1:
            return None
        RunAttempt.objects.create(run_id=run_id, number=attempts + 1, started_at=now)
        if run.concurrency_key is not None or run.throttle_key is not None:
            transaction.on_commit(lambda: run_control_started(run=run))
    return fields


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
        taken = _flow_run_claim_general(run_id=run_id)
        if taken is None:
            return None
        run, parse = taken
    # In a web process (a synchronous run) the pool's connections are few and shared: none is held while nodes run.
    connection_give_back()
    outcome = _flow_run_outcome(run, parse)
    if outcome is None:
        return run
    return _flow_run_finish(run, **outcome._asdict())


def _flow_run_claim_general(*, run_id) -> tuple[FlowRun, Any] | None:
    """The general claim: a flow with a concurrency limit, a run not claimable now, or a database without
    UPDATE … RETURNING (SQLite before 3.35). The run is read once, before the claim (which is conditional on
    what was read), not again after it. Returns the claimed run and a callable parsing its graph, or None."""
    run = FlowRun.objects.select_related("flow", "version").filter(pk=run_id).first()
    fields = None
    # A paused flow's run is left as it is without the claim's transaction (SQLite's write lock, which every insert
    # needs); the claim checks the pause again, for a flow paused since this read.
    if run is not None and run.status == FlowRun.Status.QUEUED and run.flow.paused_at is None:
        fields = _flow_run_claim(run=run, attempts=run.attempts)
    if fields is None:
        logger.info("Run %s is not claimable now; nothing to do", run_id)
        return None
    for name, value in fields.items():
        setattr(run, name, value)

    def parse():
        return _graph_of(flow_run_graph_data(run=run), run.tweaks)

    return run, parse


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
    if len(run_ids) == 1:
        return [run for run in (flow_run_execute(run_id=run_id) for run_id in run_ids) if run is not None]
    claimed, held = flow_runs_claim_batch(run_ids=run_ids)
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
    taken = {str(run.pk) for run, _, _ in claimed} | held
    for run_id in run_ids:
        if run_id not in taken:
            run = flow_run_execute(run_id=run_id)
            if run is not None:
                executed.append(run)
    return executed


def flow_runs_claim_batch(*, run_ids: list[str]) -> tuple[list[tuple[FlowRun, str, str | None]], set[str]]:
    """The batched claim of these runs (_flow_runs_claim_returning), and which of them a paused flow holds.

    The held runs stay queued without a claim of their own (resume rings for them). The others the batched claim
    leaves out go through the general claim one by one. On PostgreSQL the batch is one statement, and only the runs
    it left out are looked at; elsewhere each run is a claim of its own, so the held ones are told apart first.
    """
    if connection.vendor == "postgresql" and _returning_sql():
        claimed = _flow_runs_claim_returning(run_ids=run_ids)
        taken = {str(run.pk) for run, _, _ in claimed}
        return claimed, pause.flow_runs_held(run_ids=[run_id for run_id in run_ids if run_id not in taken])
    held = pause.flow_runs_held(run_ids=run_ids)
    claimable = [run_id for run_id in run_ids if run_id not in held]
    return (_flow_runs_claim_returning(run_ids=claimable) if claimable and _returning_sql() else []), held


def _flow_run_outcome(run: FlowRun, parse) -> RunOutcome | None:
    """Execute a claimed run: its outcome, or None when a retryable failure sent it back to the queue.

    `parse()` gives the graph the run executes and its variable references.
    """
    prepared = _flow_run_prepared(run, parse)
    if isinstance(prepared, RunOutcome):
        return prepared
    graph, context = prepared
    return _flow_run_concluded(run, engine.run_graph(graph, context=context, timeout=_flow_run_timeout(run)))


def _flow_run_timeout(run: FlowRun) -> float:
    """The run's time limit: its flow's timeout, never past LANGRUN_RUN_TIMEOUT (where django-q2 stopped a task
    executed in it, and where the sweep's lease of any run ends)."""
    return min(run.flow.timeout or settings.LANGRUN_FLOW_TIMEOUT, settings.LANGRUN_RUN_TIMEOUT)


def _flow_run_prepared(run: FlowRun, parse) -> tuple[engine.Graph, engine.RunContext] | RunOutcome:
    """The graph a claimed run executes and its context (the owner's variables: a query), or the failed
    outcome of a run that cannot start."""
    try:
        graph, refs = parse()
    except engine.GraphValidationError as exc:
        return RunOutcome(FlowRun.Status.FAILED, None, f"The flow's graph is invalid: {exc}", [])
    try:
        context = flow_run_context(user_id=run.flow.user_id, payload=run.payload, refs=refs, run=run)
    except engine.GraphValidationError as exc:
        return RunOutcome(FlowRun.Status.FAILED, None, f"The flow cannot run: {exc}", [])
    return graph, context


def _flow_run_concluded(run: FlowRun, result: engine.RunResult) -> RunOutcome | None:
    """What the engine's result makes of a run: its storable outcome, or None when a retryable failure sent it
    back to the queue (a write)."""
    if result.status == FlowRun.Status.FAILED and result.retryable and run.attempts < run.flow.max_attempts:
        _flow_run_retry_later(run, error=_text_storable(result.error))
        return None
    return _outcome_storable(RunOutcome(result.status, result.outputs, result.error, result.nodes))


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
        run_control_release(run=run)
    return run


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
                if outbox.runs_wanting_events([run]):
                    outbox.run_events_record(ends=[(run, FlowRun.Status.FAILED, error)])
        run.refresh_from_db()
    except Exception:
        logger.exception("Run %s's failure could not be recorded either; it stays running until the sweep recovers it", run.id)
        return run
    if finished:
        run_control_release(run=run)
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
            # Rows written while the run ran (its progress), or by an earlier attempt: a run's results are its last attempt's.
            NodeResult.objects.filter(run=run).delete()
            NodeResult.objects.bulk_create(node_result_row(run.pk, n) for n in nodes)
            RunAttempt.objects.filter(run=run, number=run.attempts).update(outcome=status, error=error, finished_at=run.finished_at)
            if outbox.runs_wanting_events([run]):  # the run's alerts commit with its finish, or not at all
                outbox.run_events_record(ends=[(run, status, error)])
    if not finished:
        logger.warning("Run %s attempt %d finished after losing its claim; its result is discarded", run.id, run.attempts)
        run.refresh_from_db()
        return run
    run_control_release(run=run)
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
    # Runs someone wants to hear of finish in a transaction with their alerts (outbox rows); the others as before.
    wanted = outbox.runs_wanting_events(run for run, _ in writable)
    if connection.vendor == "postgresql" and writable:
        try:
            with transaction.atomic() if wanted else contextlib.nullcontext():
                finished = _flow_runs_finish_rows_pg(writable, outputs_texts=texts, finished_at=finished_at)
                _flow_runs_alert(writable, finished & wanted)
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
                with transaction.atomic() if str(run.pk) in wanted else contextlib.nullcontext():
                    if _flow_run_finish_rows_sqlite(
                        run, status=outcome.status, outputs_text=text, error=outcome.error, finished_at=finished_at, nodes=outcome.nodes
                    ):
                        finished.add(str(run.pk))
                        _flow_runs_alert([(run, outcome)], {str(run.pk)} & wanted)
            except Exception as exc:
                alone[str(run.pk)] = _flow_run_finish_unrecorded(run, exc)
    recorded = {}
    for (run, outcome), text in zip(writable, texts, strict=True):
        if str(run.pk) in alone:
            continue
        if str(run.pk) in finished:
            run.status, run.error, run.finished_at = outcome.status, outcome.error, finished_at
            run.outputs = json.loads(text) if text is not None else None
            run_control_release(run=run)
        else:
            logger.warning("Run %s attempt %d finished after losing its claim; its result is discarded", run.id, run.attempts)
            run.refresh_from_db()
        recorded[str(run.pk)] = run
    return [alone.get(str(run.pk)) or recorded[str(run.pk)] for run, _ in items]


def _flow_runs_alert(items: list[tuple[FlowRun, RunOutcome]], run_ids: set[str]) -> None:
    """The alerts of the runs among `items` that just finished and that someone wants to hear of."""
    if run_ids:
        outbox.run_events_record(ends=[(run, outcome.status, outcome.error) for run, outcome in items if str(run.pk) in run_ids])
