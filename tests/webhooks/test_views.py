import json
import re
import uuid

import pytest
from django.test.utils import override_script_prefix
from rest_framework.test import APIClient

from flows.models import FlowRun
from langrun.services import api_key_create
from tests.helpers import post
from webhooks import services as webhook_services

ACCEPTED = {"message": "Task started in the background", "status": "in progress"}


@pytest.fixture
def run_commits(django_capture_on_commit_callbacks):
    """Run on_commit callbacks (the enqueue) as a real commit would."""

    def capture(fn):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = fn()
        return response, callbacks

    return capture


# --- success -----------------------------------------------------------------


@pytest.mark.parametrize("by", ["name", "id"])
def test_accepts_by_name_and_by_id(key_client, flow, by, run_commits):
    target = flow.endpoint_name if by == "name" else flow.id
    response, callbacks = run_commits(lambda: post(key_client, target))
    assert response.status_code == 202
    body = response.json()
    assert {k: body[k] for k in ACCEPTED} == ACCEPTED
    run = FlowRun.objects.get(pk=body["run_id"])
    assert body["status_url"] == f"http://testserver/api/v1/runs/{run.id}"
    assert response["Location"] == body["status_url"]
    assert (run.status, run.trigger, run.flow, run.user.username) == ("queued", "webhook", flow, "alice")
    assert run.payload == {"name": "Ada"} and run.body == '{"name": "Ada"}' and run.content_type == "application/json"
    assert len(callbacks) == 1


def test_the_status_url_follows_the_prefix_the_service_is_mounted_under(key_client, flow):
    # Behind a proxy that mounts langrun under a path (SCRIPT_NAME), the links must carry it; the path is
    # built once per prefix, so one mounted and one unmounted request must not share it.
    for prefix in ["/langrun", "", "/other/mount", "/langrun"]:
        with override_script_prefix(f"{prefix}/"):  # what Django's WSGI handler sets from SCRIPT_NAME
            response = post(key_client, flow.endpoint_name)
        run_id = response.json()["run_id"]
        assert response.json()["status_url"] == response["Location"] == f"http://testserver{prefix}/api/v1/runs/{run_id}"


def test_key_in_query_parameter(client, flow, api_key):
    response = post(client, f"{flow.endpoint_name}?x-api-key={api_key}")
    assert response.status_code == 202


def test_header_key_wins_over_query(client, flow, api_key):
    response = post(client, f"{flow.endpoint_name}?x-api-key=sk-wrong", HTTP_X_API_KEY=api_key)
    assert response.status_code == 202


@pytest.mark.parametrize(
    "body, content_type, payload",
    [
        (b'[1, "two", {"3": null}]', "application/json", [1, "two", {"3": None}]),
        (b'"just a string"', "application/json", "just a string"),
        (b"42", "application/json", 42),
        (b"{}", "application/json", {}),
        (b'{"name": "Ada"}', "text/plain", {"name": "Ada"}),
        (b'{"name": "Ada"}', "application/x-www-form-urlencoded", {"name": "Ada"}),
        (b"name=Ada&tag=a&tag=b&empty=", "application/x-www-form-urlencoded", {"name": "Ada", "tag": ["a", "b"], "empty": ""}),
        (b'hello <script>\r\n"quoted"', "text/plain", {"payload": 'hello <script>\r\n"quoted"'}),
        ("unicode ✓ ünïcødé 🚀".encode(), "", {"payload": "unicode ✓ ünïcødé 🚀"}),
        (b'{"event": "push"}', "application/vnd.github+json", {"event": "push"}),
    ],
)
def test_bodies_become_payloads(key_client, flow, body, content_type, payload):
    response = post(key_client, flow.endpoint_name, body, content_type)
    assert response.status_code == 202, response.content
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.payload == payload
    assert run.body == body.decode()


def test_large_payload_accepted(key_client, flow):
    body = json.dumps({"text": "x" * 10_000, "items": list(range(1000))}).encode()
    response = post(key_client, flow.endpoint_name, body)
    assert response.status_code == 202
    assert len(FlowRun.objects.get().payload["items"]) == 1000


def test_three_calls_three_runs(key_client, flow):
    ids = {post(key_client, flow.endpoint_name).json()["run_id"] for _ in range(3)}
    assert len(ids) == 3 and FlowRun.objects.count() == 3


# --- bad requests: clear 4xx, nothing stored ------------------------------------


def assert_nothing_stored():
    assert FlowRun.objects.count() == 0


def test_empty_body_is_400(key_client, flow):
    response = post(key_client, flow.endpoint_name, b"")
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is empty. You should provide a JSON payload containing the flow ID."}
    assert_nothing_stored()


def test_invalid_json_is_422_with_position(key_client, flow):
    response = post(key_client, flow.endpoint_name, b'{"name": ')
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"] and error["type"] == "json_invalid"
    assert "line 1 column 10 (char 9)" in error["msg"]
    assert_nothing_stored()


def test_invalid_utf8_is_422_not_500(key_client, flow):
    response = post(key_client, flow.endpoint_name, b'{"name": "\xff\xfe"}', "text/plain")
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body"], "msg": "Request body is not valid UTF-8: invalid start byte at byte 10.", "type": "unicode_decode"}
    ]
    assert_nothing_stored()


@pytest.mark.parametrize(
    "body",
    [b'{"a": NaN}', b'{"a": "\\u0000"}', b"text with \x00 nul", b'{"a": "\\ud800"}', b"[" * 100_000 + b"]" * 100_000],
)
def test_values_no_database_can_store_are_422(key_client, flow, body):
    response = post(key_client, flow.endpoint_name, body, "text/plain")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert_nothing_stored()


def test_body_over_limit_is_413(key_client, flow, settings):
    settings.LANGRUN_MAX_BODY_BYTES = 100
    response = post(key_client, flow.endpoint_name, b'{"x": "' + b"a" * 200 + b'"}')
    assert response.status_code == 413
    assert "larger than 100 bytes" in response.json()["detail"]
    assert_nothing_stored()


def test_unknown_flow_is_404(key_client, flow):
    for target in ["nope", "00000000-0000-0000-0000-000000000000"]:
        response = post(key_client, target)
        assert response.status_code == 404
        assert response.json() == {"detail": f"Flow identifier {target} not found"}
    assert_nothing_stored()


def test_malformed_user_id_is_422(key_client, flow):
    response = post(key_client, f"{flow.endpoint_name}?user_id=not-a-uuid")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "user_id"] and error["type"] == "uuid_parsing"


def test_get_is_405(key_client, flow):
    response = key_client.get(f"/api/v1/webhook/{flow.endpoint_name}")
    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert "detail" in response.json()


# --- authentication and ownership ---------------------------------------------


def test_missing_key_is_403(client, flow):
    response = post(client, flow.endpoint_name)
    assert response.status_code == 403
    assert response.json() == {"detail": "API key required when webhook authentication is enabled"}
    assert_nothing_stored()


@pytest.mark.parametrize("key", ["sk-not-a-real-key-at-all", "garbage", "sk-" + "x" * 500])
def test_invalid_key_is_403(client, flow, key):
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=key)
    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid API key"}
    assert_nothing_stored()


def test_revoked_key_is_403(client, flow, user):
    new = api_key_create(user=user)
    new.api_key.is_active = False
    new.api_key.save()
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=new.key)
    assert response.status_code == 403


def test_other_users_key_cannot_run_flow_by_id_or_name(client, flow, make_user, make_flow):
    bob = make_user("bob")
    bob_key = api_key_create(user=bob).key
    by_id = post(client, flow.id, HTTP_X_API_KEY=bob_key)
    assert by_id.status_code == 403
    assert by_id.json() == {"detail": "Access denied: You can only execute webhooks for flows you own"}
    by_name = post(client, flow.endpoint_name, HTTP_X_API_KEY=bob_key)
    assert by_name.status_code == 404
    by_user_id = post(client, f"{flow.endpoint_name}?user_id={flow.user_id}", HTTP_X_API_KEY=bob_key)
    assert by_user_id.status_code == 403
    assert_nothing_stored()


def test_same_endpoint_name_resolves_to_callers_own_flow(client, flow, make_user, make_flow):
    bob = make_user("bob")
    bobs_flow = make_flow(bob, endpoint_name=flow.endpoint_name)
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=api_key_create(user=bob).key)
    assert response.status_code == 202
    run = FlowRun.objects.get()
    assert run.flow == bobs_flow and run.user == bob


def test_auth_off_runs_as_owner_and_user_id_picks_among_names(client, flow, make_user, make_flow, settings):
    settings.LANGRUN_WEBHOOK_AUTH = False
    response = post(client, flow.endpoint_name)
    assert response.status_code == 202
    assert FlowRun.objects.get().user == flow.user

    bob = make_user("bob")
    bobs_flow = make_flow(bob, endpoint_name=flow.endpoint_name)
    ambiguous = post(client, flow.endpoint_name)
    assert ambiguous.status_code == 409 and "user_id" in ambiguous.json()["detail"]
    chosen = post(client, f"{flow.endpoint_name}?user_id={bob.pk}")
    assert chosen.status_code == 202
    assert FlowRun.objects.get(pk=chosen.json()["run_id"]).flow == bobs_flow
    wrong_owner = post(client, f"{flow.id}?user_id={uuid.uuid4()}")
    assert wrong_owner.status_code == 404


# --- durability ----------------------------------------------------------------


def test_broker_down_still_accepts_and_run_stays_queued(key_client, flow, monkeypatch, run_commits):
    """A broker that refuses connections: the 202 still means the run is stored; the sweep enqueues it later."""
    import redis
    from django_q.brokers.redis_broker import Redis as RedisBroker

    from flows.services import queue

    broker = RedisBroker(list_key="unreachable")
    broker.connection = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(queue, "_broker", broker)
    response, callbacks = run_commits(lambda: post(key_client, flow.endpoint_name))
    assert response.status_code == 202 and len(callbacks) == 1
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert run.status == "queued" and run.enqueued_at is not None


@pytest.mark.parametrize("accept", ["application/xml", "image/png;q=0.5", "*/*", "application/json", ""])
def test_any_accept_header_but_html_gets_json(client, flow, api_key, accept):
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=api_key, HTTP_ACCEPT=accept)
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"] == "in progress"
    refused = post(client, flow.endpoint_name, HTTP_X_API_KEY="sk-wrong-key-123456", HTTP_ACCEPT=accept)
    assert (refused.status_code, refused["Content-Type"], refused.json()) == (403, "application/json", {"detail": "Invalid API key"})


def test_a_browser_asking_for_html_gets_the_browsable_api(client, flow, api_key):
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=api_key, HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 202
    assert response["Content-Type"].startswith("text/html")
    assert b"Task started in the background" in response.content
    as_json = client.generic(
        "POST",
        f"/api/v1/webhook/{flow.endpoint_name}?format=json",
        b'{"name": "Ada"}',
        content_type="application/json",
        HTTP_X_API_KEY=api_key,
        HTTP_ACCEPT="text/html",
    )
    assert (as_json.status_code, as_json["Content-Type"]) == (202, "application/json")


# --- Django's middleware chain ---------------------------------------------------


def test_the_answer_carries_the_chains_headers(key_client, flow):
    response = post(key_client, flow.endpoint_name)
    assert response.status_code == 202
    assert response["X-Content-Type-Options"] == "nosniff" and response["X-Frame-Options"] == "DENY"
    assert response["Content-Type"] == "application/json"


def test_the_chain_refuses_before_the_view(key_client, flow, settings):
    settings.DISALLOWED_USER_AGENTS = [re.compile(r"^BadBot")]
    assert post(key_client, flow.endpoint_name, HTTP_HOST="evil.example.com").status_code == 400
    assert post(key_client, flow.endpoint_name, HTTP_USER_AGENT="BadBot/1.0").status_code == 403
    too_many = "&".join(f"f{i}=1" for i in range(1001))
    assert post(key_client, f"{flow.endpoint_name}?{too_many}").status_code == 400
    assert not FlowRun.objects.exists()


def test_https_redirects_apply(key_client, flow, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = post(key_client, flow.endpoint_name)
    assert response.status_code == 301 and response["Location"].startswith("https://")
    assert not FlowRun.objects.exists()


def test_a_nul_in_the_query_is_422_under_a_script_prefix(key_client, flow):
    with override_script_prefix("/mounted/"):
        refused = post(key_client, f"{flow.endpoint_name}?x=%00", SCRIPT_NAME="/mounted")
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "x"]
    assert not FlowRun.objects.exists()


def test_an_unexpected_error_is_a_500_logged_once(api_key, flow, monkeypatch, caplog):
    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(webhook_services, "webhook_payload_decode", boom)
    client = APIClient(raise_request_exception=False)
    response = post(client, flow.endpoint_name, HTTP_X_API_KEY=api_key)
    assert response.status_code == 500
    logged = [r for r in caplog.records if r.name == "django.request" and r.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info[0] is RuntimeError
    assert FlowRun.objects.count() == 0


# --- What cannot be stored and read back is refused at the door --------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "body, content_type",
    [
        (_nested(101), "application/json"),
        (b"[" * 940 + b"]" * 940, "application/json"),
        (b'{"x": 1e999}', "application/json"),
        (b"[-1E400]", "text/plain"),
        (b'{"x": [1, {"y": 2.5e308}]}', "application/json"),
        (b"a=%00", "application/x-www-form-urlencoded"),
        (b"a=1&b%00=2", "application/x-www-form-urlencoded"),
    ],
    ids=["depth-101", "depth-940", "1e999", "-1E400", "inner-inf", "form-nul-value", "form-nul-name"],
)
def test_what_cannot_be_stored_and_read_back_is_422(key_client, flow, body, content_type):
    response = post(key_client, flow.endpoint_name, body, content_type)
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body"] and error["msg"] and error["type"]
    assert not FlowRun.objects.exists()


def test_a_payload_at_the_depth_limit_is_accepted_and_read_back_everywhere(key_client, flow, settings):
    from flows.services.execution import flow_run_execute

    assert settings.LANGRUN_MAX_JSON_DEPTH == 100
    response = post(key_client, flow.endpoint_name, _nested(100))
    assert response.status_code == 202, response.content
    run_id = response.json()["run_id"]
    flow_run_execute(run_id=run_id)
    for url in [
        "/api/v1/runs/",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/task/{run_id}",
        f"/api/v1/monitor/builds?flow_id={flow.id}",
        f"/api/v1/runs/{run_id}/attempts",
    ]:
        assert key_client.get(url).status_code == 200, url
    assert key_client.post(f"/api/v1/runs/{run_id}/replay").status_code in (201, 202)


# --- Langflow's per-request global variables ------------------------------------------------------------------


def test_global_variable_headers_reach_the_run_encrypted_and_nowhere_else(key_client, flow):
    from flows.services.variables import request_variables_of

    response = key_client.post(
        f"/api/v1/webhook/{flow.endpoint_name}",
        data=json.dumps({"name": "Ada"}),
        content_type="application/json",
        HTTP_X_LANGFLOW_GLOBAL_VAR_OPENAI_API_KEY="sk-per-request",
        HTTP_X_LANGFLOW_GLOBAL_VAR_REGION="eu",
    )
    assert response.status_code == 202, response.content
    run = FlowRun.objects.get(pk=response.json()["run_id"])
    assert request_variables_of(run=run) == {"OPENAI_API_KEY": "sk-per-request", "REGION": "eu"}
    assert "sk-per-request" not in run.request_variables and "sk-per-request" not in run.body
    detail = key_client.get(f"/api/v1/runs/{run.id}").content.decode()
    assert "sk-per-request" not in detail and "request_variables" not in detail
    plain = key_client.post(f"/api/v1/webhook/{flow.endpoint_name}", data="{}", content_type="application/json")
    assert FlowRun.objects.get(pk=plain.json()["run_id"]).request_variables == ""
