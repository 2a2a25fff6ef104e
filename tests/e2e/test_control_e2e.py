"""Run control on real processes: a paused flow holds its runs and releases them in order; bulk replay with progress."""

import re
import time

import pytest
import requests
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from flows.models import FlowRun
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import Service, wait_for_runs
from tests.helpers import GREETING_FLOW

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.env["LANGRUN_WORKERS"] = "1"  # one worker: the order runs start in is the order they are released in
    svc.env["LOG_LEVEL"] = "INFO"  # the worker logs the runs it leaves queued
    svc.start_web()
    svc.start_cluster()
    yield svc
    svc.stop()


def refused(log: str) -> int:
    """How many doorbells the worker answered by leaving the run queued: one by one, or a batch's held runs at once."""
    batches = re.findall(r"Runs left queued, their flow paused: (\d+)", log)
    return log.count("is not claimable now") + sum(int(count) for count in batches)


def test_a_paused_flow_holds_100_runs_then_releases_them_in_order(service):
    user = User.objects.create_user("operator")
    flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    headers = {"x-api-key": api_key_create(user=user).key}
    api = f"{service.url}/api/v1"
    assert requests.post(f"{api}/flows/{flow.pk}/pause", headers=headers, timeout=10).json()["paused"] is True

    ids = []
    for i in range(100):
        response = requests.post(f"{api}/webhook/greet", json={"name": f"n{i}"}, headers=headers, timeout=30)
        assert response.status_code == 202, response.text
        ids.append(response.json()["run_id"])
    # Every doorbell answered (each claim refused, as the worker logs), so that a late one cannot start a run out of
    # turn after the resume: the cluster may hold tasks it took from the broker for a while on a busy machine.
    deadline = time.monotonic() + 90
    while refused(service.log("cluster")) < 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert refused(service.log("cluster")) >= 100, service.log("cluster")[-3000:]
    statuses = list(FlowRun.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert set(statuses) == {"queued"}, (statuses, service.log("cluster")[-3000:])
    assert FlowRun.objects.filter(pk__in=ids, started_at__isnull=False).count() == 0
    assert requests.get(f"{api}/runs/{ids[-1]}", headers=headers, timeout=10).json()["waiting_for"] == "flow_paused"

    resumed = requests.post(f"{api}/flows/{flow.pk}/resume", headers=headers, timeout=30).json()
    assert resumed["paused"] is False and resumed["released"] == 100, (
        resumed,
        list(FlowRun.objects.filter(pk__in=ids).values_list("received_at", "enqueued_at", "status")),
    )
    assert wait_for_runs(ids, timeout=120) == {"succeeded": 100}, service.log("cluster")
    started = dict(FlowRun.objects.filter(pk__in=ids).values_list("id", "started_at"))
    in_received_order = [started[FlowRun._meta.pk.to_python(i)] for i in ids]
    out_of_turn = [(i, t) for i, (t, u) in enumerate(zip(in_received_order, in_received_order[1:], strict=False)) if t > u]
    assert not out_of_turn, (out_of_turn, service.log("cluster")[-3000:])


def test_a_resumed_backlog_holds_another_accounts_run_behind_a_page_of_it_not_all_of_it(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.env.update({"LANGRUN_WORKERS": "1", "LOG_LEVEL": "INFO", "LANGRUN_RELEASE_BATCH": "50"})
    svc.start_web()
    svc.start_cluster()
    try:
        alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
        backlog = flow_create(user=alice, name="Backlog", endpoint_name="greet", data=GREETING_FLOW)
        flow_create(user=bob, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        api = f"{svc.url}/api/v1"
        alice_key, bob_key = ({"x-api-key": api_key_create(user=u).key} for u in (alice, bob))
        assert requests.post(f"{api}/flows/{backlog.pk}/pause", headers=alice_key, timeout=10).ok
        held = [flow_run_create(flow=backlog, user=alice, trigger="webhook", payload={"name": f"n{i}"}).pk for i in range(1500)]
        deadline = time.monotonic() + 120  # every doorbell answered: the backlog is all in the database, none in the queue
        while refused(svc.log("cluster")) < len(held) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert refused(svc.log("cluster")) >= len(held), svc.log("cluster")[-3000:]

        assert requests.post(f"{api}/flows/{backlog.pk}/resume", headers=alice_key, timeout=30).json()["released"] == 50
        time.sleep(0.5)  # the release has gone on by a few pages
        answer = requests.post(f"{api}/webhook/greet", json={"name": "Bob"}, headers=bob_key, timeout=30)
        assert answer.status_code == 202, answer.text
        bobs = FlowRun.objects.get(pk=answer.json()["run_id"])
        assert wait_for_runs([*held, bobs.pk], timeout=180) == {"succeeded": len(held) + 1}
        bobs.refresh_from_db()
        ahead = FlowRun.objects.filter(pk__in=held, started_at__gt=bobs.received_at, started_at__lt=bobs.started_at).count()
        assert ahead <= 150, (ahead, svc.log("cluster")[-2000:])  # a page or two of alice's, not the rest of her backlog
        assert FlowRun.objects.filter(pk__in=held, started_at__gt=bobs.started_at).count() > 500  # bob did not wait for it all
    finally:
        svc.stop()


def test_a_bulk_replay_of_2000_runs_reports_progress_at_a_bounded_rate(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.env.update({"LANGRUN_REPLAY_RATE": "500", "LANGRUN_REPLAY_BATCH": "100"})
    svc.start_web()
    svc.start_cluster()
    try:
        user = User.objects.create_user("operator")
        flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        headers = {"x-api-key": api_key_create(user=user).key}
        now = timezone.now()
        FlowRun.objects.bulk_create(
            FlowRun(
                flow=flow, user=user, status="failed", payload={"name": f"n{i}"}, version=flow.current_version,
                error="the downstream system was down", finished_at=now,
            )
            for i in range(2000)
        )  # fmt: skip
        api = f"{svc.url}/api/v1"
        dry = requests.post(
            f"{api}/runs/replay", json={"flow": str(flow.pk), "status": "failed", "dry_run": True}, headers=headers, timeout=10
        )
        assert dry.json() == {"matched": 2000, "dry_run": True}
        started = time.monotonic()
        response = requests.post(f"{api}/runs/replay", json={"flow": str(flow.pk), "status": "failed"}, headers=headers, timeout=10)
        assert response.status_code == 202 and time.monotonic() - started < 5, response.text
        job_url = response.json()["status_url"]
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = requests.get(job_url, headers=headers, timeout=10).json()
            seen.append(job["created"])
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        assert (job["status"], job["matched"], job["created"], job["failed"]) == ("succeeded", 2000, 2000, 0), (job, svc.log("cluster"))
        assert seen == sorted(seen) and any(0 < c < 2000 for c in seen), seen  # progress, as it went
        took = parse_datetime(job["finished_at"]) - parse_datetime(job["started_at"])
        assert took.total_seconds() >= 2000 / 500 * 0.9  # the rate bounded it
        replays = list(FlowRun.objects.filter(trigger="replay").values_list("pk", flat=True))
        assert len(replays) == 2000 and FlowRun.objects.filter(trigger="replay").values("replay_of").distinct().count() == 2000
        assert wait_for_runs(replays, timeout=300) == {"succeeded": 2000}, svc.log("cluster")
    finally:
        svc.stop()


def test_a_schedule_fires_once_a_minute_with_two_clusters(transactional_db, tmp_path):
    svc = Service(tmp_path)
    svc.start_web()
    svc.start_cluster("cluster-a")
    svc.start_cluster("cluster-b")
    try:
        user = User.objects.create_user("operator")
        flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
        headers = {"x-api-key": api_key_create(user=user).key}
        body = {"flow": str(flow.pk), "cron": "* * * * *", "payload": {"name": "Clock"}}
        response = requests.post(f"{svc.url}/api/v1/schedules/", json=body, headers=headers, timeout=10)
        assert response.status_code == 201, response.text
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and FlowRun.objects.filter(trigger="schedule").count() < 2:
            time.sleep(1)
        time.sleep(5)  # a second firing of the same minute, had there been one, would be in by now
        runs = list(FlowRun.objects.filter(trigger="schedule").order_by("received_at"))
        assert len(runs) >= 2, (svc.log("cluster-a"), svc.log("cluster-b"))
        minutes = [r.idempotency_key.split(":", 2)[2] for r in runs]  # schedule:<id>:<when it was due>
        assert len(set(minutes)) == len(runs)  # one run per minute it was due
        gaps = [(b.received_at - a.received_at).total_seconds() for a, b in zip(runs, runs[1:], strict=False)]
        assert all(gap > 30 for gap in gaps), gaps
        assert wait_for_runs([r.pk for r in runs]) == {"succeeded": len(runs)}
        assert FlowRun.objects.get(pk=runs[0].pk).outputs == {"greeting": "Hello Clock!"}
    finally:
        svc.stop()
