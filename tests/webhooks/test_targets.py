"""A key and flow the web process remembers from an earlier webhook: the run's INSERT checks that they still
hold, so any change to the key, its owner or the flow is seen by the very next webhook."""

import copy
import sys
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from flows.models import Flow, FlowRun
from flows.services.flows import flow_create, flow_update
from langrun.models import ApiKey
from langrun.services import api_key_create, api_key_revoke
from tests.helpers import GREETING_FLOW, github_headers, post
from webhooks import services, targets
from webhooks.signatures import webhook_signing_secret_rotate, webhook_signing_secret_set


@pytest.fixture
def known(client, flow, api_key):
    """The key, once a webhook has made the process remember it and the flow."""
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=api_key).status_code == 202
    assert any(identifier == flow.endpoint_name for _, identifier in targets._known_targets.keys())
    return api_key


def _statements(captured) -> list[str]:
    return [q["sql"].split()[0] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]


def test_a_revoked_key_is_refused_at_once(client, flow, known):
    api_key_revoke(api_key=ApiKey.objects.get(prefix=known[:11]))
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=known)
    assert (response.status_code, response.json()) == (403, {"detail": "Invalid API key"})
    assert FlowRun.objects.count() == 1


def test_a_deactivated_owner_is_refused_at_once(client, flow, user, known):
    user.is_active = False
    user.save()
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 403
    assert FlowRun.objects.count() == 1


def test_a_signing_secret_set_since_is_required_at_once(client, flow, known):
    secret = webhook_signing_secret_rotate(flow=Flow.objects.get(pk=flow.pk))
    with CaptureQueriesContext(connection) as captured:
        response = post(client, flow.endpoint_name, HTTP_X_API_KEY=known)
    assert response.status_code == 401
    statements = _statements(captured)
    assert statements.index("INSERT") < statements.index("SELECT")  # the checked INSERT wrote nothing; the lookup again
    assert FlowRun.objects.count() == 1
    body = b'{"name": "Ada"}'
    assert post(client, flow.endpoint_name, body, HTTP_X_API_KEY=known, **github_headers(secret, body)).status_code == 202
    assert FlowRun.objects.count() == 2


def test_a_rotated_secret_is_checked_against_the_new_one(client, flow, known):
    body = b'{"name": "Ada"}'
    old = webhook_signing_secret_rotate(flow=Flow.objects.get(pk=flow.pk), grace_seconds=0)
    assert post(client, flow.endpoint_name, body, HTTP_X_API_KEY=known, **github_headers(old, body)).status_code == 202
    new = webhook_signing_secret_rotate(flow=Flow.objects.get(pk=flow.pk), grace_seconds=0)
    assert post(client, flow.endpoint_name, body, HTTP_X_API_KEY=known, **github_headers(old, body)).status_code == 401
    assert post(client, flow.endpoint_name, body, HTTP_X_API_KEY=known, **github_headers(new, body)).status_code == 202
    assert FlowRun.objects.count() == 3


def test_a_new_version_is_the_one_that_runs(client, flow, known):
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["params"]["template"] = "Hi {name}!"
    flow_update(flow=Flow.objects.get(pk=flow.pk), data=data)
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 202
    newest = FlowRun.objects.order_by("-received_at").first()
    assert newest.version.number == 2 and newest.version_id == Flow.objects.get(pk=flow.pk).current_version_id


def test_an_endpoint_name_given_to_another_flow_runs_that_flow(client, flow, user, known):
    flow_update(flow=Flow.objects.get(pk=flow.pk), endpoint_name="greet-old")
    other = flow_create(user=user, name="Other", endpoint_name="greet", data=GREETING_FLOW)
    assert post(client, "greet", HTTP_X_API_KEY=known).status_code == 202
    assert FlowRun.objects.order_by("-received_at").first().flow_id == other.pk
    assert post(client, "greet-old", HTTP_X_API_KEY=known).status_code == 202
    assert FlowRun.objects.filter(flow=flow).count() == 2


def test_a_deleted_flow_is_not_found(client, flow, known):
    Flow.objects.filter(pk=flow.pk).delete()
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 404
    assert not FlowRun.objects.exists()


def test_a_flow_given_to_another_owner_is_refused(client, flow, make_user, known):
    assert post(client, flow.id, HTTP_X_API_KEY=known).status_code == 202  # now remembered by its id too
    Flow.objects.filter(pk=flow.pk).update(user=make_user())
    response = post(client, flow.id, HTTP_X_API_KEY=known)
    assert (response.status_code, response.json()["detail"]) == (403, targets.ACCESS_DENIED)
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 404  # by name: none of the caller's
    assert FlowRun.objects.count() == 2


def test_keys_of_two_owners_with_the_same_endpoint_name_each_reach_their_own(client, flow, make_user, make_flow, known):
    bob = make_user()
    bobs = make_flow(bob, endpoint_name=flow.endpoint_name)
    bobs_key = api_key_create(user=bob).key
    for _ in range(2):
        assert post(client, flow.endpoint_name, HTTP_X_API_KEY=bobs_key).status_code == 202
        assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 202
    assert FlowRun.objects.filter(flow=bobs, user=bob).count() == 2
    assert FlowRun.objects.filter(flow=flow, user=flow.user).count() == 3


def test_a_wrong_key_with_a_known_prefix_is_still_refused(client, flow, known):
    wrong = known[:-4] + ("AAAA" if not known.endswith("AAAA") else "BBBB")
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=wrong).status_code == 403
    assert FlowRun.objects.count() == 1


def test_the_process_remembers_a_bounded_number_of_targets(client, flow, user, monkeypatch):
    monkeypatch.setattr(targets, "_known_targets", targets.KnownTargets(size=2))
    keys = [api_key_create(user=user).key for _ in range(3)]
    for key in keys:
        assert post(client, flow.endpoint_name, HTTP_X_API_KEY=key).status_code == 202
    remembered = targets._known_targets
    assert len(remembered) == 2
    assert [digest for digest, _ in remembered.keys()] == [targets.api_key_digest(key) for key in keys[1:]]  # the oldest went first


def test_the_remembered_targets_are_shared_safely_by_threads(monkeypatch):
    # gunicorn's threaded workers share one process's targets: remembering, reading and forgetting at once
    # must never raise (a dict changed while it is iterated) nor let the bound slip.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    known = targets.KnownTargets(size=4)
    errors = []
    start = threading.Barrier(8)

    def hammer(n):
        try:
            start.wait()
            for i in range(3000):
                key = (f"digest-{n}-{i % 7}", "greet")
                known.remember(key, (n, i))
                known.get(key)
                if i % 5 == 0:
                    known.forget(key)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(known) <= 4


def test_a_revoked_keys_use_is_not_counted(client, flow, known):
    api_key = ApiKey.objects.get(prefix=known[:11])
    uses = api_key.use_count
    api_key_revoke(api_key=api_key)
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 403
    assert ApiKey.objects.get(pk=api_key.pk).use_count == uses


def test_a_remembered_keys_accepted_use_is_counted_once(client, flow, known):
    uses = ApiKey.objects.get(prefix=known[:11]).use_count
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 202
    assert ApiKey.objects.get(prefix=known[:11]).use_count == uses + 1


# Whatever a request's answer depends on is decided on the flow read now when the remembered one changed: a
# refusal, or an INSERT whose condition no longer holds, starts the request again from the key and flow read now.


def test_a_meta_handshake_added_since_is_answered(client, flow, known):
    webhook_signing_secret_set(flow=flow, secret="meta-verify-token")
    flow_update(flow=flow, handshakes=["meta"])
    query = f"hub.mode=subscribe&hub.verify_token=meta-verify-token&hub.challenge=1158201444&x-api-key={known}"
    response = client.get(f"/api/v1/webhook/{flow.endpoint_name}?{query}")
    assert (response.status_code, response.content) == (200, b"1158201444")
    assert FlowRun.objects.count() == 1


def test_a_graph_handshake_added_since_is_answered(client, flow, known):
    flow_update(flow=flow, handshakes=["graph"])
    response = client.post(f"/api/v1/webhook/{flow.endpoint_name}?validationToken=Testing", content_type="text/plain", HTTP_X_API_KEY=known)
    assert (response.status_code, response.content) == (200, b"Testing")
    assert FlowRun.objects.count() == 1


def test_a_token_preset_set_since_is_masked_in_the_recorded_request(client, flow, known):
    webhook_signing_secret_set(flow=flow, secret="tok-123456")
    flow_update(flow=flow, verification={"provider": "token", "query": "token"})
    response = post(client, f"{flow.endpoint_name}?token=tok-123456&a=1", HTTP_X_API_KEY=known)
    assert response.status_code == 202, response.content
    assert FlowRun.objects.get(pk=response.json()["run_id"]).request["query"] == {"token": "***", "a": "1"}


def test_a_request_decided_again_counts_once_against_the_rate_limit(client, flow, known, settings, monkeypatch):
    start = (time.time() // 60 + 1) * 60 + 1  # the start of a rate-limit window, so that the test never straddles two
    monkeypatch.setattr(services.time, "time", lambda: start)
    settings.LANGRUN_RATE_LIMIT_FLOW = 2
    flow_update(flow=flow, handshakes=["graph"])  # the INSERT's condition no longer holds for the remembered flow
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 202
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 202
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=known).status_code == 429
