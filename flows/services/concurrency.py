"""Run control by key: how many runs of one key may execute at once (concurrency), and start per period (throttle).

A flow's `concurrency_key` and `throttle_key` are JMESPath expressions over the request (`{headers, query,
payload}`), evaluated once when a run is recorded (run_control_keys); their values are stored on the run. A
run that may not start yet is never refused: it stays `queued`, its attempts untouched. The worker's claim
(flows/services/execution.py) asks run_control_wait under the flow's row lock (SQLite's write lock does the
same), so two workers claiming two runs of one key cannot both pass the count. A key's runs start in the
order they were received: a run waits while an older run of its key could start.

Who rings a waiting run: the finish of a run of its key (run_control_release), the start of a throttled run
(the next of its key), the cancel of a queued run of its key (run_control_withdrawn), a throttled run's own timer
for when its window opens (queue.flow_run_enqueue_later), and the sweep for anything those missed
(flows/services/sweep.py). The throttle window slides: a run may
start when fewer than `limit` runs of its key started in the last `period` seconds. Without a key, the
concurrency limit is the flow's `max_concurrent_runs` as it always was (runs counted per flow, no order).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import operator
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Count, Exists, F, Min, OuterRef, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from flows.exceptions import WebhookSettingInvalid
from flows.models import Flow, FlowRun
from flows.services import queue
from flows.services.webhook_settings import webhook_dedupe_key_parse

logger = logging.getLogger(__name__)

# A key's value longer than this (the column's size), or not printable, is stored as its SHA-256.
MAX_KEY = 255


@functools.lru_cache(maxsize=256)
def jmespath_compiled(expression: str):
    """A flow's JMESPath setting, compiled once per process (it was checked when the flow was saved)."""
    import jmespath

    return jmespath.compile(expression)


# Seconds one of a flow's expressions (a key, `dedupe_key`, `accept_if`) may take on one request, in the web process.
EXPRESSION_SECONDS = 1.0


def jmespath_search(expression: str, data: Any) -> Any:
    """A flow's JMESPath setting applied to one request, bounded as a run's Extract is.

    The expression runs in the process that takes the request (`[@, @][]` doubles a list: forty of them would hold
    a web process for hours and take all its memory), so it fails, like an expression given the wrong type, as soon
    as a value it builds passes LANGRUN_MAX_OUTPUT_BYTES (its default when that is 0) or after EXPRESSION_SECONDS.
    """
    from flows.engine.components.data import search_bounded
    from flows.engine.limits import DEFAULT_MAX_OUTPUT_BYTES

    limit = settings.LANGRUN_MAX_OUTPUT_BYTES or DEFAULT_MAX_OUTPUT_BYTES
    return search_bounded(jmespath_compiled(expression), data, limit=limit, deadline=time.monotonic() + EXPRESSION_SECONDS)


def run_control_key_value(expression: str, *, request: dict | None, payload: Any) -> str:
    """The value of a key expression for one request, as stored: text as it is, anything else as compact JSON.

    Nothing found (or an expression that fails on this request) is the empty key "": such runs share one key.
    """
    request = request or {}
    data = {"headers": request.get("headers") or {}, "query": request.get("query") or {}, "payload": payload}
    try:
        value = jmespath_search(expression, data)
    except Exception:  # a function given the wrong type: this request has no value  # noqa: BLE001
        value = None
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_KEY or not text.isprintable():
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def run_control_keys(*, flow: Flow, request: dict | None, payload: Any) -> dict[str, str | None]:
    """The run's `concurrency_key` and `throttle_key` columns: NULL when the flow has no such limit by key
    (a throttle without a key stores "", so that its window is found through the same index)."""
    concurrency = None
    if flow.concurrency_key and flow.max_concurrent_runs:
        concurrency = run_control_key_value(flow.concurrency_key, request=request, payload=payload)
    throttle = None
    if flow.throttle_limit:
        throttle = run_control_key_value(flow.throttle_key, request=request, payload=payload) if flow.throttle_key else ""
    return {"concurrency_key": concurrency, "throttle_key": throttle}


class Wait(NamedTuple):
    """Why a queued run may not start now. `next_start_at`: when a throttle's window lets the run start."""

    reason: str  # "concurrency" or "throttle"
    key: str | None
    limit: int
    running: int | None = None
    period: int | None = None
    next_start_at: datetime | None = None
    behind: bool = False  # an older run of the key starts first

    def as_dict(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"reason": self.reason, "key": self.key, "limit": self.limit}
        if self.reason == "concurrency":
            detail["running"] = self.running
        else:
            detail["period"] = self.period
            detail["next_start_at"] = self.next_start_at
        detail["behind_older_run"] = self.behind
        return detail


def _startable(now) -> Q:
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def _older(received_at, pk) -> Q:
    """Runs received before this one (by id on a tie): the order a key's runs start in. Values or OuterRefs."""
    return Q(received_at__lt=received_at) | Q(received_at=received_at, pk__lt=pk)


def _older_waiting(runs, run: FlowRun, now) -> bool:
    """Whether an older run among `runs` (of the same key) is queued and could start: it goes first."""
    return runs.filter(_older(run.received_at, run.pk), status=FlowRun.Status.QUEUED).filter(_startable(now)).exclude(pk=run.pk).exists()


def _wait(
    run: FlowRun, flow: Flow, *, running: Callable[[], int], behind: Callable[[str], bool], starts: Callable[[], list]
) -> Wait | None:
    """The rule of run_control_wait, over what it reads: `running()`, the runs of the run's concurrency (its key's, or
    the flow's) running; `behind(key_field)`, whether an older run of its key could start; `starts()`, the start
    times of its throttle key's other runs in the window, oldest first. Each is asked only when the rule needs it."""
    limit = flow.max_concurrent_runs
    if limit:
        count = running()
        if count >= limit:
            return Wait("concurrency", run.concurrency_key, limit, running=count)
        if run.concurrency_key is not None and behind("concurrency_key"):
            return Wait("concurrency", run.concurrency_key, limit, running=count, behind=True)
    if flow.throttle_limit and flow.throttle_period and run.throttle_key is not None:
        recent = starts()
        late = behind("throttle_key")
        if len(recent) >= flow.throttle_limit:
            # The window slides: the run may start once enough of these starts are older than the period.
            next_start_at = recent[len(recent) - flow.throttle_limit] + timedelta(seconds=flow.throttle_period)
        elif late:
            next_start_at = None
        else:
            return None
        return Wait(
            "throttle", run.throttle_key, flow.throttle_limit, period=flow.throttle_period, next_start_at=next_start_at, behind=late
        )
    return None


def run_control_wait(*, run: FlowRun, flow: Flow, now: datetime | None = None) -> Wait | None:
    """What keeps a queued run from starting now under its flow's concurrency and throttle; None when nothing does.

    The claim asks this holding the flow's row lock; the run's status body asks it as it is.
    """
    now = now or timezone.now()
    unfinished = FlowRun.objects.unfinished().filter(flow_id=flow.pk)

    def running() -> int:
        counted = unfinished.filter(status=FlowRun.Status.RUNNING)
        if run.concurrency_key is not None:  # per key; without one per flow, as max_concurrent_runs always was
            counted = counted.filter(concurrency_key=run.concurrency_key)
        return counted.count()

    def starts() -> list:
        window = FlowRun.objects.filter(
            flow_id=flow.pk, throttle_key=run.throttle_key, started_at__gt=now - timedelta(seconds=flow.throttle_period)
        )
        return list(window.exclude(pk=run.pk).order_by("started_at").values_list("started_at", flat=True))

    def behind(key_field: str) -> bool:
        return _older_waiting(unfinished.filter(**{key_field: getattr(run, key_field)}), run, now)

    return _wait(run, flow, running=running, behind=behind, starts=starts)


def run_control_waits(*, runs: list[FlowRun], flows: dict, now: datetime | None = None, running: Counter | None = None) -> dict:
    """run_control_wait for many queued runs (a page of the runs list), by run id, in three queries whatever their
    number. `flows`: the runs' flows by id; `running`: their _running_counts, when the caller has read them."""
    now = now or timezone.now()
    runs = [run for run in runs if run.flow_id in flows and (flows[run.flow_id].max_concurrent_runs or flows[run.flow_id].throttle_limit)]
    if not runs:
        return {}
    if running is None:
        running = _running_counts({flows[run.flow_id] for run in runs})

    def older_waiting(key_field: str) -> Exists:
        of_key = FlowRun.objects.unfinished().filter(flow_id=OuterRef("flow_id"), **{key_field: OuterRef(key_field)})
        older = of_key.filter(_older(OuterRef("received_at"), OuterRef("pk")), status=FlowRun.Status.QUEUED)
        return Exists(older.filter(_startable(now)).exclude(pk=OuterRef("pk")))

    behind = {
        pk: {"concurrency_key": concurrency, "throttle_key": throttle}
        for pk, concurrency, throttle in FlowRun.objects.filter(pk__in=[run.pk for run in runs])
        .annotate(concurrency=older_waiting("concurrency_key"), throttle=older_waiting("throttle_key"))
        .values_list("pk", "concurrency", "throttle")
    }
    throttled = defaultdict(set)  # a flow's keys: one term per flow, as a long OR is too deep for SQLite
    for run in runs:
        flow = flows[run.flow_id]
        if flow.throttle_limit and flow.throttle_period and run.throttle_key is not None:
            throttled[flow.pk].add(run.throttle_key)
    windows = [
        Q(flow_id=flow_id, throttle_key__in=keys, started_at__gt=now - timedelta(seconds=flows[flow_id].throttle_period))
        for flow_id, keys in throttled.items()
    ]
    started = defaultdict(list)
    if windows:
        window = FlowRun.objects.filter(functools.reduce(operator.or_, windows)).order_by("started_at")
        for flow_id, key, pk, started_at in window.values_list("flow_id", "throttle_key", "pk", "started_at"):
            started[flow_id, key].append((pk, started_at))

    def wait(run: FlowRun) -> Wait | None:
        return _wait(
            run,
            flows[run.flow_id],
            running=lambda: running[(run.flow_id, run.concurrency_key) if run.concurrency_key is not None else run.flow_id],
            behind=lambda key_field: behind.get(run.pk, {}).get(key_field, False),
            starts=lambda: [at for pk, at in started[run.flow_id, run.throttle_key] if pk != run.pk],
        )

    return {run.pk: wait(run) for run in runs}


def run_control_release(*, run: FlowRun) -> int:
    """A run of a concurrency-limited flow ended (or went back to wait for a retry): ring for the oldest runs
    waiting for its slot. Per key, in received order; without a key, the flow's oldest (as always). Returns how many."""
    flow = run.flow
    if not flow.max_concurrent_runs:
        return 0
    now = timezone.now()
    waiting = FlowRun.objects.unfinished().filter(flow_id=flow.pk, status=FlowRun.Status.QUEUED).filter(_startable(now))
    key = run.concurrency_key
    if key is not None:
        waiting = waiting.filter(concurrency_key=key)
    rung = 0
    for row in waiting.order_by("received_at", "id").values_list(*queue.RING_FIELDS)[: flow.max_concurrent_runs]:
        rung += queue.flow_run_ring(*row)
    return rung


def run_control_started(*, run: FlowRun) -> None:
    """A run limited by key started: ring for the next of its key, which a younger run's doorbell may have found
    waiting behind this one. It starts now, or (throttled) sets its timer for when its window opens."""
    # With a concurrency limit of 1 no slot is left.
    _ring_next_of_keys(run, concurrency=(run.flow.max_concurrent_runs or 0) > 1, throttle=bool(run.flow.throttle_limit))


def run_control_withdrawn(*, run: FlowRun) -> None:
    """A queued run limited by key left the queue without starting (cancelled): ring for the next of its keys, which a
    younger run's doorbell may have found waiting behind it (such a doorbell rings again for no one)."""
    _ring_next_of_keys(run, concurrency=True, throttle=True)


def _ring_next_of_keys(run: FlowRun, *, concurrency: bool, throttle: bool) -> None:
    now = timezone.now()
    queued = FlowRun.objects.unfinished().filter(flow_id=run.flow_id, status=FlowRun.Status.QUEUED).filter(_startable(now))
    following = set()
    if concurrency and run.concurrency_key is not None:
        following.add(
            queued.filter(concurrency_key=run.concurrency_key).order_by("received_at", "id").values_list(*queue.RING_FIELDS).first()
        )
    if throttle and run.throttle_key is not None:
        following.add(queued.filter(throttle_key=run.throttle_key).order_by("received_at", "id").values_list(*queue.RING_FIELDS).first())
    for row in following - {None}:
        queue.flow_run_ring(*row)


def run_controlled() -> Q:
    """Runs (a FlowRun filter) that their flow's concurrency or throttle may hold: the sweep rings them per key, here."""
    return (
        Q(concurrency_key__isnull=False)
        | Q(throttle_key__isnull=False)
        | Q(flow__max_concurrent_runs__gt=0)
        | Q(flow__throttle_limit__gt=0)
    )


# What run_control_release_keys reads of a waiting run.
RING_READ = ("id", "flow_id", "version_id", "user_id", "received_at", "enqueued_at", "concurrency_key", "throttle_key")


def run_control_release_keys(*, older_than: timedelta = timedelta(0), limit: int = 1000) -> int:
    """For the sweep: ring for the oldest waiting runs of every key (a flow's, without one) that may start now and
    were rung longer than `older_than` ago (a finish's doorbell lost, a throttle's timer gone with its process); the
    keys whose runs have waited longest first, `limit` keys at most. A run that must still wait for a slot or its
    window is not rung: a ring would only cost a worker a claim. Each run rung is marked rung (`enqueued_at`).
    Returns how many were rung. Its reads are the same few queries however many keys wait."""
    now = timezone.now()
    rung_before = now - older_than
    groups = list(
        FlowRun.objects.unfinished()
        .outside_releases(since=rung_before)
        .filter(run_controlled(), status=FlowRun.Status.QUEUED, flow__paused_at__isnull=True)
        .filter(enqueued_at__lt=rung_before)
        .filter(_startable(now))
        .values("flow_id", "concurrency_key", "throttle_key")
        .annotate(oldest=Min("received_at"))
        .order_by("oldest", "flow_id", "concurrency_key", "throttle_key")
        .values_list("flow_id", "concurrency_key", "throttle_key")[:limit]
    )
    if not groups:
        return 0
    flows = Flow.objects.only("max_concurrent_runs", "throttle_limit", "throttle_period").in_bulk({group[0] for group in groups})
    running = _running_counts(flows.values())
    heads = _heads(groups, flows, running, now=now, limit=limit)
    waits = run_control_waits(runs=[run for runs in heads.values() for run in runs], flows=flows, now=now, running=running)
    due = []
    for group in groups:
        for run in heads.get(group, ()):
            if run.enqueued_at >= rung_before:
                continue  # its doorbell may yet come
            if waits.get(run.pk) is not None:
                break  # the rest of the key come after it
            due.append(run)
    if not due:
        return 0
    # Marked with this sweep's time, then read back: a run another sweep marked meanwhile is its to ring.
    FlowRun.objects.filter(pk__in=[run.pk for run in due], status=FlowRun.Status.QUEUED, enqueued_at__lt=rung_before).update(
        enqueued_at=now
    )
    marked = set(FlowRun.objects.filter(pk__in=[run.pk for run in due], enqueued_at=now).values_list("pk", flat=True))
    rung = sum(queue.flow_run_ring(run.pk, run.flow_id, run.version_id, run.user_id) for run in due if run.pk in marked)
    if rung:
        logger.info("Rang for %d runs waiting for a free slot of their key", rung)
    return rung


def _running_counts(flows) -> Counter:
    """The runs running of these flows' concurrency limits: by (flow id, key), and by flow id for the keyless limit."""
    running: Counter = Counter()
    limited = [flow.pk for flow in flows if flow.max_concurrent_runs]
    counted = (
        FlowRun.objects.unfinished()
        .filter(flow_id__in=limited, status=FlowRun.Status.RUNNING)
        .values("flow_id", "concurrency_key")
        .annotate(n=Count("pk"))
        .values_list("flow_id", "concurrency_key", "n")
        .order_by()
    )
    for flow_id, key, n in counted:  # no query without a limited flow (an empty `in`)
        running[flow_id, key] += n
        running[flow_id] += n
    return running


def _heads(groups, flows, running: Counter, *, now, limit: int) -> dict:
    """The queued runs of each group (flow, concurrency key, throttle key) that may be rung, oldest first: as many as
    its concurrency has free slots (`limit` without one), and only the first where its key's runs start in order (a
    concurrency or throttle by key): the second waits behind the first, rung or not. One query for every group."""
    caps = {}
    for group in groups:
        flow_id, concurrency_key, throttle_key = group
        flow = flows.get(flow_id)
        if flow is None:
            continue
        free = limit
        if flow.max_concurrent_runs:  # at most the slots free now (per key, or the flow's without one)
            free = flow.max_concurrent_runs - running[(flow_id, concurrency_key) if concurrency_key is not None else flow_id]
        in_order = (flow.max_concurrent_runs and concurrency_key is not None) or (
            flow.throttle_limit and flow.throttle_period and throttle_key is not None
        )
        caps[group] = min(free, 1) if in_order else free
    caps = {group: cap for group, cap in caps.items() if cap > 0}
    if not caps:
        return {}
    order = Window(RowNumber(), partition_by=[F("flow_id"), F("concurrency_key"), F("throttle_key")], order_by=[F("received_at"), F("id")])
    queued = (
        FlowRun.objects.unfinished()
        .filter(flow_id__in={group[0] for group in caps}, status=FlowRun.Status.QUEUED)
        .filter(_startable(now))
        # What run_control_waits and the ring read of a run: never its body and payload (a key's backlog may be large).
        .only(*RING_READ)
        .annotate(place=order)
        .filter(place__lte=max(caps.values()))
        .order_by("received_at", "id")
    )
    heads = defaultdict(list)
    for run in queued:
        group = (run.flow_id, run.concurrency_key, run.throttle_key)
        if run.place <= caps.get(group, 0):
            heads[group].append(run)
    return heads


def flow_run_waiting_by_key(*, run: FlowRun, flow: Flow) -> Wait | None:
    """What a queued run of an unpaused flow waits for under its flow's concurrency and throttle, if anything."""
    if run.status != FlowRun.Status.QUEUED or not (flow.max_concurrent_runs or flow.throttle_limit):
        return None
    return run_control_wait(run=run, flow=flow)


# --- Settings: the API's objects and the flow's columns ---------------------------------------------------------


# The largest limit or period a column holds (PostgreSQL's integer).
MAX_SETTING = 2_147_483_647


def _positive(field: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WebhookSettingInvalid(f"{field}.{name}", f"{field}.{name} must be an integer of at least 1.", "greater_than_equal")
    if value > MAX_SETTING:
        raise WebhookSettingInvalid(f"{field}.{name}", f"{field}.{name} must be at most {MAX_SETTING}.", "less_than_equal")
    return value


def _settings_object(field: str, value: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise WebhookSettingInvalid(field, f"Give an object with {', '.join(allowed)}, or null.", "dict_type")
    extra = sorted(set(value) - set(allowed))
    if extra:
        raise WebhookSettingInvalid(field, f"Unknown field {', '.join(extra)}: use {', '.join(allowed)}.", "extra_forbidden")
    if "limit" not in value:
        raise WebhookSettingInvalid(field, f"{field} needs a limit.", "missing")
    return value


def run_control_settings_stored(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with the API's `concurrency` and `throttle` objects (or null) turned into the flow's columns, checked:
    a key that is not a JMESPath expression is a 422 naming the field. `max_concurrent_runs` alone is the keyless
    concurrency; setting it to null drops a key with it."""
    fields = dict(fields)
    if "concurrency" in fields:
        value = fields.pop("concurrency")
        if value is None:
            fields.update(max_concurrent_runs=None, concurrency_key="")
        else:
            value = _settings_object("concurrency", value, ("limit", "key"))
            fields["max_concurrent_runs"] = _positive("concurrency", "limit", value["limit"])
            fields["concurrency_key"] = webhook_dedupe_key_parse(value.get("key"), field="concurrency.key")
    elif "max_concurrent_runs" in fields and not fields["max_concurrent_runs"]:
        fields["concurrency_key"] = ""
    if "throttle" in fields:
        value = fields.pop("throttle")
        if value is None:
            fields.update(throttle_limit=None, throttle_period=None, throttle_key="")
        else:
            value = _settings_object("throttle", value, ("limit", "period", "key"))
            if "period" not in value:
                raise WebhookSettingInvalid("throttle", "throttle needs a period (seconds).", "missing")
            fields["throttle_limit"] = _positive("throttle", "limit", value["limit"])
            fields["throttle_period"] = _positive("throttle", "period", value["period"])
            fields["throttle_key"] = webhook_dedupe_key_parse(value.get("key"), field="throttle.key")
    return fields
