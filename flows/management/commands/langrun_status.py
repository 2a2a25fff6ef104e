import json
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import Count
from django.utils import timezone

from flows.health import worker_health
from flows.metrics import SWEEP_LAST_RUN
from flows.models import FlowRun, MetricCounter


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


class Command(BaseCommand):
    help = (
        "Show what langrun is doing: queue depth, runs by status received in the last hour, the oldest queued run, "
        "and the worker clusters' heartbeat (the last periodic sweep, and each cluster's own stats, as /health_check reads them)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object instead of text.")

    def status(self) -> dict:
        now = timezone.now()
        by_status = dict(
            FlowRun.objects.filter(received_at__gte=now - timedelta(hours=1)).order_by().values_list("status").annotate(n=Count("id"))
        )
        depth = dict(FlowRun.objects.filter(status__in=["queued", "running"]).order_by().values_list("status").annotate(n=Count("id")))
        oldest = FlowRun.objects.filter(status=FlowRun.Status.QUEUED).order_by("received_at").first()
        beat = MetricCounter.objects.filter(name=SWEEP_LAST_RUN).values_list("value", flat=True).first()
        try:
            clusters = worker_health()["workers"]
        except Exception as exc:
            clusters = [{"error": str(exc)}]
        return {
            "queue_depth": depth.get("queued", 0),
            "running": depth.get("running", 0),
            "last_hour": {s: by_status.get(s, 0) for s in FlowRun.Status.values},
            "oldest_queued": None
            if oldest is None
            else {"run_id": str(oldest.id), "flow_id": str(oldest.flow_id), "age_s": round((now - oldest.received_at).total_seconds(), 1)},
            "last_sweep_age_s": None if beat is None else round(now.timestamp() - beat, 1),
            "clusters": clusters,
        }

    def handle(self, *args, as_json: bool = False, **options):
        s = self.status()
        if as_json:
            self.stdout.write(json.dumps(s))
            return
        self.stdout.write(f"Queue depth: {s['queue_depth']} queued, {s['running']} running")
        self.stdout.write("Runs received in the last hour: " + ", ".join(f"{k} {v}" for k, v in s["last_hour"].items()))
        o = s["oldest_queued"]
        self.stdout.write(
            f"Oldest queued run: {o['run_id']} (flow {o['flow_id']}), received {_ago(o['age_s'])}" if o else "Oldest queued run: none"
        )
        age = s["last_sweep_age_s"]
        self.stdout.write(
            f"Cluster heartbeat: last sweep {_ago(age)}" + (" (late: is a qcluster running?)" if age > 180 else "")
            if age is not None
            else "Cluster heartbeat: no sweep has run yet (is a qcluster running?)"
        )
        if s["clusters"]:
            for c in s["clusters"]:
                self.stdout.write("  cluster " + ", ".join(f"{k}={v}" for k, v in c.items()))
        else:
            self.stdout.write(
                f"  no cluster has reported in the last {settings.LANGRUN_HEALTH_WORKER_TIMEOUT} s (LANGRUN_HEALTH_WORKER_TIMEOUT)"
            )
