"""/health_check's worker report: a cluster seen within LANGRUN_HEALTH_WORKER_TIMEOUT seconds, and the oldest queued run."""

import uuid
from datetime import UTC, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat, Status

from flows.models import FlowRun
from flows.services.runs import flow_run_create


def cluster_reports(*, status=None, ago: float = 0.0, workers: int = 2) -> uuid.UUID:
    """What a running cluster's sentinel saves every half second (django_q.status.Stat), as of `ago` seconds ago."""
    stat = Status(pid=1234, cluster_id=uuid.uuid4())
    stat.status = status or Conf.IDLE
    stat.workers = list(range(workers))
    stat.tob = stat.timestamp = timezone.now() - timedelta(seconds=ago)
    get_broker().set_stat(Stat.get_key(stat.cluster_id), SignedPackage.dumps(stat, True), 3)
    return stat.cluster_id


@pytest.fixture(autouse=True)
def _no_clusters(db):
    """Each test starts with no cluster stats for this test run's cluster name (they live in the cache or in Redis)."""
    broker = get_broker()
    if Conf.ORM:
        broker.cache.delete(Conf.Q_STAT)
    else:
        for key in broker.connection.keys(f"{Conf.Q_STAT}:*"):
            broker.connection.delete(key)


def test_no_worker_seen_is_503_with_the_reason(client):
    response = client.get("/health_check")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "error" and body["worker"] == "error"
    assert body["db"] == "ok" and body["chat"] == "ok" and body["queue"] == "ok"
    assert body["workers"] == [] and body["worker_last_seen_s"] is None


def test_a_cluster_seen_lately_is_healthy(client):
    cluster_id = cluster_reports(ago=1.5, workers=3)
    response = client.get("/health_check")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["worker"] == "ok"
    assert 1 <= body["worker_last_seen_s"] < 10
    (worker,) = body["workers"]
    assert worker["cluster_id"] == str(cluster_id) and worker["workers"] == 3 and worker["status"] == "Idle"


def test_a_cluster_silent_for_longer_than_the_timeout_is_not_a_worker(client, settings):
    settings.LANGRUN_HEALTH_WORKER_TIMEOUT = 30
    cluster_reports(ago=31)
    response = client.get("/health_check")
    assert response.status_code == 503 and response.json()["worker"] == "error"
    assert response.json()["worker_last_seen_s"] >= 31


def test_a_stopped_cluster_is_not_a_worker(client):
    cluster_reports(status=Conf.STOPPED)
    assert client.get("/health_check").status_code == 503


def test_the_oldest_queued_runs_age_is_reported(client, flow, user):
    cluster_reports()
    assert client.get("/health_check").json()["oldest_queued_s"] is None
    old = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "A"})
    flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "B"})
    FlowRun.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(seconds=90))
    age = client.get("/health_check").json()["oldest_queued_s"]
    assert 90 <= age < 100


def test_the_broker_keeps_a_clusters_stats_as_long_as_the_health_check_looks_back(settings):
    # django-q2 keeps them 3 s: a guard loop held up longer (its scheduler waiting on the database) would read as a dead worker.
    settings.LANGRUN_HEALTH_WORKER_TIMEOUT = 45
    broker = get_broker()
    key = Stat.get_key(uuid.uuid4())
    broker.set_stat(key, "stat", 3)
    if Conf.ORM:
        with connection.cursor() as cursor:
            cursor.execute("SELECT expires FROM langrun_cache WHERE cache_key = %s", [broker.cache.make_key(key)])
            expires = parse_datetime(str(cursor.fetchone()[0]))
        ttl = (expires.replace(tzinfo=expires.tzinfo or UTC) - timezone.now()).total_seconds()
    else:
        ttl = broker.connection.ttl(key)
        broker.connection.delete(key)
    assert 40 < ttl <= 45
