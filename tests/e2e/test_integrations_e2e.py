"""Integrations through a real gunicorn and a real qcluster: the whole request reaches the flow, masked."""

import pytest
import requests

from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import wait_for_runs
from tests.helpers import REQUEST_FLOW

pytestmark = pytest.mark.e2e


@pytest.fixture
def request_flow(transactional_db):
    user = User.objects.create_user("e2e-integrations")
    flow = flow_create(user=user, name="Whole request", endpoint_name="whole", data=REQUEST_FLOW, methods=["GET", "POST"])
    return flow, api_key_create(user=user).key


def test_headers_query_and_method_reach_the_flow_masked(service, request_flow):
    flow, key = request_flow
    service.start_cluster()
    url = f"{service.url}/api/v1/webhook/whole"
    posted = requests.post(f"{url}?tag=a&tag=b", json={"n": 1}, headers={"x-api-key": key, "X-GitHub-Event": "push"}, timeout=10)
    got = requests.get(f"{url}?x-api-key={key}&hub=1", timeout=10)
    refused = requests.put(url, json={}, headers={"x-api-key": key}, timeout=10)
    assert (posted.status_code, got.status_code) == (202, 202), (posted.text, got.text)
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET, POST, OPTIONS"
    ids = [posted.json()["run_id"], got.json()["run_id"]]
    assert wait_for_runs(ids) == {"succeeded": 2}, service.log("cluster")
    post_run = requests.get(posted.json()["status_url"], headers={"x-api-key": key}, timeout=10).json()
    assert post_run["outputs"]["method"] == "POST" and post_run["outputs"]["query"] == {"tag": ["a", "b"]}
    assert post_run["outputs"]["headers"]["x-github-event"] == "push" and post_run["outputs"]["headers"]["x-api-key"] == "***"
    assert post_run["request"]["headers"]["x-api-key"] == "***" and key not in str(post_run)
    get_run = requests.get(got.json()["status_url"], headers={"x-api-key": key}, timeout=10).json()
    assert get_run["outputs"]["data"] == {"hub": "1"} and get_run["outputs"]["method"] == "GET"
    assert key not in str(get_run)
