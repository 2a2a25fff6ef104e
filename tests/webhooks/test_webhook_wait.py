"""The webhook's `?wait=<seconds>`: answer with the finished run, or the usual 202 when it takes longer."""

import time

import pytest

from flows.models import FlowRun


def post(client, query=""):
    return client.post(f"/api/v1/webhook/greet{query}", {"name": "Ada"}, format="json")


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "1e999"])
def test_bad_wait_is_422_and_stores_nothing(key_client, flow, raw):
    response = post(key_client, f"?wait={raw}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "wait"]
    assert not FlowRun.objects.exists()


def test_run_not_finished_within_the_wait_is_the_usual_202(key_client, flow):
    # No worker runs in this test: the run stays queued.
    started = time.monotonic()
    response = post(key_client, "?wait=0.3")
    assert 0.3 <= time.monotonic() - started < 3
    assert response.status_code == 202 and response.json()["status"] == "in progress"


def test_wait_is_capped_by_the_setting(key_client, flow, settings):
    settings.LANGRUN_WEBHOOK_MAX_WAIT = 0.2
    started = time.monotonic()
    assert post(key_client, "?wait=600").status_code == 202
    assert time.monotonic() - started < 3


def test_wait_zero_or_empty_does_not_wait(key_client, flow):
    for query in ["?wait=0", "?wait="]:
        started = time.monotonic()
        assert post(key_client, query).status_code == 202
        assert time.monotonic() - started < 1


def test_a_caller_past_its_share_of_waits_is_answered_at_once(key_client, flow, user, make_user, settings):
    from langrun.waits import wait_slot

    settings.LANGRUN_WAITS_PER_USER = 1
    with wait_slot(owner=str(user.pk)) as held:  # another request of this account is waiting
        assert held
        started = time.monotonic()
        response = post(key_client, "?wait=10")
        assert time.monotonic() - started < 2
    assert response.status_code == 202 and response.json()["status"] == "in progress"
    assert FlowRun.objects.get(pk=response.json()["run_id"]).status == "queued"  # accepted, for the worker
    # Once the slot is free, the next caller waits as asked.
    started = time.monotonic()
    assert post(key_client, "?wait=0.3").status_code == 202
    assert time.monotonic() - started >= 0.3
