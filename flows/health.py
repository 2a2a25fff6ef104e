"""The workers' side of /health_check: the clusters seen lately, and how long the oldest queued run has waited.

Also the embedded profile's broker, which keeps those heartbeats long enough (here rather than in flows/broker.py,
whose Redis modules the embedded profile never needs to load).
"""

from django.conf import settings
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.status import Stat

from flows.models import FlowRun


class StatsKept:
    """A cluster's stats (its heartbeat, saved every half second) kept LANGRUN_HEALTH_WORKER_TIMEOUT seconds, not django-q2's 3.

    /health_check counts a cluster as alive while its last stats are younger than that (worker_health below): a guard
    loop held up for a few seconds (its scheduler waiting for the database) must not read as a dead worker.
    """

    def set_stat(self, key: str, value: str, timeout: int):
        return super().set_stat(key, value, max(timeout, settings.LANGRUN_HEALTH_WORKER_TIMEOUT))


class KeptStatsORM(StatsKept, ORM):
    """The embedded profile's database broker; its stats go to the shared cache (a database table)."""


def worker_health() -> dict:
    """`worker` is "ok" while a cluster that is not stopping reported within LANGRUN_HEALTH_WORKER_TIMEOUT seconds.

    Every cluster's sentinel saves its stats twice a second, to Redis or to the shared cache (the database on the
    embedded profile); the broker keeps them that long (StatsKept).
    """
    now = timezone.now()
    clusters = [
        {
            "cluster_id": str(stat.cluster_id),
            "host": stat.host,
            "status": str(stat.status),
            "workers": len(stat.workers),
            "seen_s": round((now - stat.timestamp).total_seconds(), 1),
        }
        for stat in Stat.get_all()
    ]
    stopped = {str(Conf.STOPPED), str(Conf.STOPPING)}
    alive = [c for c in clusters if c["status"] not in stopped and c["seen_s"] <= settings.LANGRUN_HEALTH_WORKER_TIMEOUT]
    oldest = FlowRun.objects.unfinished().filter(status=FlowRun.Status.QUEUED).order_by("received_at").values_list("received_at", flat=True)
    oldest = oldest.first()
    return {
        "worker": "ok" if alive else "error",
        "worker_last_seen_s": min((c["seen_s"] for c in clusters), default=None),
        "workers": sorted(clusters, key=lambda c: c["seen_s"]),
        "oldest_queued_s": None if oldest is None else round((now - oldest).total_seconds(), 1),
    }
