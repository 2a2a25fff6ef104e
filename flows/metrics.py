"""Prometheus metrics, derived from the database at scrape time.

Every web and worker process writes to the same database, so counts taken
from the run ledger (plus the `MetricCounter` rows for what the ledger cannot
tell) are right however many gunicorn and qcluster processes run, on however
many machines; no process keeps a counter of its own.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.http import Http404, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.utils import floatToGoString

from flows.models import FlowRun, MetricCounter, NodeResult

logger = logging.getLogger(__name__)

RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
NODE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)

WEBHOOKS = "langrun_webhooks_received"
# Runs of `?wait=` webhooks: counted under the code they were answered with, so taken back from the ledger's 202s.
WEBHOOKS_WAITED = "langrun_webhooks_waited"
RECOVERED = "langrun_runs_recovered"
SWEEP_LAST_RUN = "langrun_sweep_last_run_timestamp_seconds"

# family name -> (type, help)
FAMILIES = {
    WEBHOOKS: ("counter", "Webhook calls answered, by HTTP status code (202: runs accepted)."),
    "langrun_runs_accepted": ("counter", "Runs accepted, by flow."),
    "langrun_runs_finished": ("counter", "Runs that ended, by flow and status (succeeded, failed, cancelled, filtered)."),
    "langrun_run_duration_seconds": ("histogram", "Time from a worker's claim to the end of a run."),
    "langrun_run_queue_wait_seconds": ("histogram", "Time from accepting a run to a worker claiming it."),
    "langrun_node_duration_seconds": ("histogram", "Time one node took, by component type."),
    RECOVERED: ("counter", "Interrupted runs (running past their lease) the periodic sweep queued again or failed."),
    "langrun_queue_depth": ("gauge", "Runs waiting for a worker (status queued)."),
    "langrun_runs_running": ("gauge", "Runs a worker is executing now."),
    SWEEP_LAST_RUN: ("gauge", "Unix time of the last periodic sweep: a heartbeat of the worker cluster."),
}
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")

Samples = dict[tuple[str, str], float]


def _labels_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True) if labels else ""


def _duration(start: str, end: str) -> ExpressionWrapper:
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def _histogram(samples: Samples, family: str, labels: dict, row: dict, buckets) -> None:
    for i, bound in enumerate(buckets):
        samples[(f"{family}_bucket", _labels_key({**labels, "le": floatToGoString(bound)}))] += row[f"le{i}"] or 0
    samples[(f"{family}_bucket", _labels_key({**labels, "le": "+Inf"}))] += row["n"] or 0
    samples[(f"{family}_count", _labels_key(labels))] += row["n"] or 0
    samples[(f"{family}_sum", _labels_key(labels))] += row["total"] or 0


def _seconds(value) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value or 0)


def runs_metric_samples(runs: QuerySet) -> Samples:
    """What a set of runs adds to the counters and histograms (the whole ledger at scrape time, or a batch being pruned)."""
    samples: Samples = defaultdict(float)
    for row in runs.order_by().values("flow_id", "status", "trigger").annotate(n=Count("id")):
        flow = str(row["flow_id"])
        samples[("langrun_runs_accepted_total", _labels_key({"flow": flow}))] += row["n"]
        if row["status"] in FlowRun.TERMINAL:
            samples[("langrun_runs_finished_total", _labels_key({"flow": flow, "status": row["status"]}))] += row["n"]
        if row["trigger"] == FlowRun.Trigger.WEBHOOK:  # a filtered delivery was answered 200
            code = "200" if row["status"] == FlowRun.Status.FILTERED else "202"
            samples[(f"{WEBHOOKS}_total", _labels_key({"code": code}))] += row["n"]

    for family, start, end, buckets, scope in (
        (
            "langrun_run_duration_seconds",
            "started_at",
            "finished_at",
            RUN_BUCKETS,
            Q(status__in=[FlowRun.Status.SUCCEEDED, FlowRun.Status.FAILED]),
        ),
        ("langrun_run_queue_wait_seconds", "received_at", "started_at", WAIT_BUCKETS, Q()),
    ):
        qs = runs.order_by().filter(scope, **{f"{start}__isnull": False, f"{end}__isnull": False}).annotate(d=_duration(start, end))
        row = qs.aggregate(
            n=Count("id"), total=Sum("d"), **{f"le{i}": Count("id", filter=Q(d__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)}
        )
        row["total"] = _seconds(row["total"])
        _histogram(samples, family, {}, row, buckets)

    nodes = NodeResult.objects.filter(run__in=runs.order_by().values("pk")).exclude(status=NodeResult.Status.SKIPPED).order_by()
    for row in nodes.values("component_type").annotate(
        n=Count("id"),
        total_ms=Sum("duration_ms"),
        **{f"le{i}": Count("id", filter=Q(duration_ms__lte=b * 1000)) for i, b in enumerate(NODE_BUCKETS)},
    ):
        row["total"] = (row["total_ms"] or 0) / 1000
        _histogram(samples, "langrun_node_duration_seconds", {"component": row["component_type"]}, row, NODE_BUCKETS)
    return samples


def _counter_add(*, name: str, key: str, amount: float, set_value: bool = False) -> None:
    update = {"value": amount} if set_value else {"value": F("value") + amount}
    if not MetricCounter.objects.filter(name=name, labels=key).update(**update):
        try:
            with transaction.atomic():
                MetricCounter.objects.create(name=name, labels=key, value=amount)
        except IntegrityError:  # another process created it first
            MetricCounter.objects.filter(name=name, labels=key).update(**update)


def metric_counter_add(*, name: str, labels: dict[str, str] | None = None, amount: float = 1, set_value: bool = False) -> None:
    """Add to (or set) a database-kept counter shared by every process; never raises (metrics must not break a request)."""
    try:
        _counter_add(name=name, key=_labels_key(labels or {}), amount=amount, set_value=set_value)
    except Exception:
        logger.exception("Could not update metric %s", name)


def metric_counters_add_many(samples: Samples) -> None:
    """Fold many samples into the database counters (retention keeps what it deletes this way).

    Raises on a database error, so that the caller's transaction (which deletes the runs) is rolled back too.
    """
    for (name, key), value in samples.items():
        if value:
            _counter_add(name=name, key=key, amount=value)


class LedgerCollector:
    """A prometheus_client collector that reads the database on every scrape."""

    def collect(self):
        samples: Samples = runs_metric_samples(FlowRun.objects.all())
        for counter in MetricCounter.objects.all():
            samples[(counter.name, counter.labels)] += counter.value
        samples[(f"{WEBHOOKS}_total", _labels_key({"code": "202"}))] -= samples.pop((WEBHOOKS_WAITED, ""), 0)
        counts = dict(FlowRun.objects.unfinished().order_by().values_list("status").annotate(n=Count("id")))
        samples[("langrun_queue_depth", "")] = counts.get("queued", 0)
        samples[("langrun_runs_running", "")] = counts.get("running", 0)

        families = {name: Metric(name, doc, kind) for name, (kind, doc) in FAMILIES.items()}
        for (sample, key), value in sorted(samples.items()):
            family = sample
            for suffix in _SUFFIXES:
                if sample.endswith(suffix) and sample[: -len(suffix)] in families:
                    family = sample[: -len(suffix)]
            if family in families:
                families[family].add_sample(sample, json.loads(key) if key else {}, value)
        yield from families.values()


def metrics_view(request):
    """GET /metrics: off (404), open, or a bearer token, per LANGRUN_METRICS."""
    mode = settings.LANGRUN_METRICS
    if mode == "off":
        raise Http404
    if mode != "open":
        header = request.headers.get("Authorization", "")
        token = header[7:] if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), mode.encode()):
            response = HttpResponse(
                "Unauthorized: send the LANGRUN_METRICS token as a bearer token.\n", status=401, content_type="text/plain"
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class WebhookMetricsMiddleware:
    """Counts webhook calls the ledger does not: every answer but the 202 of a run recorded without waiting."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path_info.startswith("/api/v1/webhook/"):
            webhook_answer_count(response, waits=getattr(request, "langrun_webhook_waits", False))
        return response


def webhook_answer_count(response, *, waits: bool = False) -> None:
    """Count a webhook call's answer, unless it is the 202 of a new run the ledger counts.

    A replayed delivery (no new run) is counted here, as is every answer to a request that waited.
    """
    if getattr(response, "langrun_counted_by_ledger", False):
        return
    if response.status_code != 202 or waits or response.get("Idempotent-Replayed") == "true":
        metric_counter_add(name=f"{WEBHOOKS}_total", labels={"code": str(response.status_code)})


def webhook_waits(request) -> None:
    """Mark a webhook request that waits for its run (`?wait=`): its answer is counted under its own code."""
    request.langrun_webhook_waits = True


def webhook_wait_recorded() -> None:
    """Call in the transaction that records a new run of a waiting webhook: takes back the ledger's 202 for it
    at the same commit (a scrape never counts it twice). Never raises; the savepoint keeps the run's transaction."""
    try:
        with transaction.atomic():
            _counter_add(name=WEBHOOKS_WAITED, key="", amount=1)
    except Exception:
        logger.exception("Could not update metric %s", WEBHOOKS_WAITED)
