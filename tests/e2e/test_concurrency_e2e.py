"""Run control by key on real processes (flows/services/concurrency.py): gunicorn and two clusters execute 3 keys × 20
runs with a concurrency limit of 1 per key, never two of one key at once and each key's in received order; a throttle
lets no more than its limit start per period, and its waiting runs start by themselves when the window opens."""

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests

from flows.models import FlowRun
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import wait_for_runs
from tests.helpers import SlowAPI, http_flow

pytestmark = pytest.mark.e2e


@pytest.fixture
def owner(transactional_db):
    user = User.objects.create_user("keyed")
    return user, api_key_create(user=user).key


@pytest.fixture
def api():
    with SlowAPI(delay=0.15) as server:
        yield server


def post_webhooks(service, key: str, endpoint: str, payloads: list[dict]) -> list[str]:
    session = requests.Session()

    def post(payload):
        response = session.post(f"{service.url}/api/v1/webhook/{endpoint}", json=payload, headers={"x-api-key": key}, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["run_id"]

    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(post, payloads))


def test_3_keys_x_20_runs_with_a_limit_of_1_never_overlap_within_a_key(service, owner, api):
    user, key = owner
    service.env.update(LANGRUN_HTTP_ALLOWED_HOSTS="127.0.0.1", LANGRUN_WORKERS="2")
    flow = flow_create(user=user, name="keyed", endpoint_name="keyed", data=http_flow(api.url + "/slow"))
    flow.max_concurrent_runs, flow.concurrency_key = 1, "payload.customer"
    flow.save()
    service.start_cluster("cluster1")
    service.start_cluster("cluster2")  # two clusters: claims of one key race across processes too
    run_ids = post_webhooks(service, key, "keyed", [{"i": i, "customer": f"cus_{i % 3}"} for i in range(60)])
    assert wait_for_runs(run_ids, timeout=180) == {"succeeded": 60}, service.log("cluster1") + service.log("cluster2")

    runs = FlowRun.objects.filter(pk__in=run_ids).values_list("concurrency_key", "received_at", "started_at", "finished_at", "attempts")
    by_key = defaultdict(list)
    for concurrency_key, received, started, finished, attempts in runs:
        assert attempts == 1  # waiting never burned an attempt
        by_key[concurrency_key].append((received, started, finished))
    assert sorted(by_key) == ["cus_0", "cus_1", "cus_2"] and all(len(v) == 20 for v in by_key.values())
    overlaps = []
    for concurrency_key, intervals in by_key.items():
        intervals.sort(key=lambda r: r[1])
        for (_, _, finished), (_, started, _) in zip(intervals, intervals[1:], strict=False):
            if started < finished:
                overlaps.append((concurrency_key, started, finished))
        assert [r[0] for r in intervals] == sorted(r[0] for r in intervals), f"{concurrency_key} did not start in received order"
    assert overlaps == []
    # The keys themselves ran side by side: a limit per key is not one for the flow.
    assert api.peak >= 2


def test_a_throttle_starts_at_most_its_limit_per_period_and_the_rest_by_themselves(service, owner, api):
    user, key = owner
    service.env.update(LANGRUN_HTTP_ALLOWED_HOSTS="127.0.0.1", LANGRUN_WORKERS="2")
    api.delay = 0.01
    flow = flow_create(user=user, name="throttled", endpoint_name="throttled", data=http_flow(api.url + "/fast"))
    flow.throttle_limit, flow.throttle_period, flow.throttle_key = 2, 2, "payload.customer"
    flow.save()
    service.start_cluster()
    run_ids = post_webhooks(service, key, "throttled", [{"i": i, "customer": "cus_1"} for i in range(6)])
    # Six runs, two per two seconds: the last two start about four seconds after the first two (no sweep needed).
    assert wait_for_runs(run_ids, timeout=30) == {"succeeded": 6}, service.log("cluster")
    starts = sorted(FlowRun.objects.filter(pk__in=run_ids).values_list("started_at", flat=True))
    for i, start in enumerate(starts[2:], start=2):
        assert start - starts[i - 2] >= timedelta(seconds=2), starts  # never a third start within the period
    assert starts[-1] - starts[0] < timedelta(seconds=10), starts
