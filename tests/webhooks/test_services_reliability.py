"""The webhook's defences: duplicate deliveries, signatures, body and rate limits, and secrets kept out of sight."""

import base64
import io
import logging
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.http import Http404
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from flows.models import Flow, FlowRun
from langrun.exceptions import PayloadTooLarge
from langrun.services import api_key_create
from tests.helpers import github_headers
from webhooks import services, signatures, targets

BODY = b'{"name": "Ada"}'


def post(client, target, body=BODY, content_type="application/json", **extra):
    return client.generic("POST", f"/api/v1/webhook/{target}", body, content_type=content_type, **extra)


def standard_headers(secret, body=BODY, msg_id="msg_1", timestamp=None, extra_signatures=()):
    ts = timezone.now() if timestamp is None else timestamp
    signature = Webhook(secret).sign(msg_id, ts, body.decode())
    return {
        "HTTP_WEBHOOK_ID": msg_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(ts.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": " ".join([*extra_signatures, signature]),
    }


@pytest.fixture
def secret(flow):
    return signatures.webhook_signing_secret_rotate(flow=flow)


# --- duplicate deliveries ----------------------------------------------------------


@pytest.mark.parametrize("header", ["HTTP_IDEMPOTENCY_KEY", "HTTP_WEBHOOK_ID"])
def test_repeated_key_returns_the_original_202(key_client, flow, header):
    first = post(key_client, flow.endpoint_name, **{header: "delivery-1"})
    again = post(key_client, flow.endpoint_name, body=b'{"name": "Other"}', **{header: "delivery-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert FlowRun.objects.get().payload == {"name": "Ada"}
    fresh = post(key_client, flow.endpoint_name, **{header: "delivery-2"})
    assert fresh.json()["run_id"] != first.json()["run_id"]


def test_idempotency_key_wins_over_webhook_id(key_client, flow):
    a = post(key_client, flow.endpoint_name, HTTP_IDEMPOTENCY_KEY="k", HTTP_WEBHOOK_ID="x")
    b = post(key_client, flow.endpoint_name, HTTP_IDEMPOTENCY_KEY="k", HTTP_WEBHOOK_ID="y")
    assert a.json()["run_id"] == b.json()["run_id"]


@pytest.mark.parametrize("with_key", [False, True])
def test_a_captured_signed_request_cannot_be_replayed_with_a_new_idempotency_key(client, key_client, flow, secret, with_key):
    # The signature covers webhook-id, not Idempotency-Key: the signed id is the delivery's identity.
    sender = key_client if with_key else client
    headers = standard_headers(secret, msg_id="msg_signed")
    runs = {post(sender, flow.endpoint_name, HTTP_IDEMPOTENCY_KEY=f"k-{i}", **headers).json()["run_id"] for i in range(3)}
    assert len(runs) == 1 and FlowRun.objects.count() == 1
    assert FlowRun.objects.get().idempotency_key == "msg_signed"


def test_a_github_delivery_is_deduplicated_by_its_delivery_id(client, flow, secret):
    headers = github_headers(secret)
    first = post(client, flow.endpoint_name, HTTP_X_GITHUB_DELIVERY="d-1", HTTP_IDEMPOTENCY_KEY="k-1", **headers)
    again = post(client, flow.endpoint_name, HTTP_X_GITHUB_DELIVERY="d-1", HTTP_IDEMPOTENCY_KEY="k-2", **headers)
    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true" and again.json()["run_id"] == first.json()["run_id"]
    assert post(client, flow.endpoint_name, HTTP_X_GITHUB_DELIVERY="d-2", **headers).status_code == 202
    assert FlowRun.objects.count() == 2


def test_a_bad_signed_id_is_422(client, flow, secret):
    response = post(client, flow.endpoint_name, HTTP_X_GITHUB_DELIVERY="caf\u00e9", **github_headers(secret))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["header", "X-Github-Delivery"]
    assert not FlowRun.objects.exists()


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "a\tb"])
def test_bad_idempotency_key_is_422_without_a_run(key_client, flow, value):
    response = post(key_client, flow.endpoint_name, HTTP_IDEMPOTENCY_KEY=value)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert not FlowRun.objects.exists()


# --- signatures ----------------------------------------------------------------------


def test_signing_secret_endpoint_creates_and_rotates(key_client, flow):
    response = key_client.post(f"/api/v1/flows/{flow.id}/signing-secret")
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    first = response.json()["signing_secret"]
    assert first.startswith("whsec_") and response.json()["previous_secret_valid_until"] is None
    rotated = key_client.post(f"/api/v1/flows/{flow.id}/signing-secret").json()
    assert rotated["signing_secret"] != first and rotated["previous_secret_valid_until"] is not None
    # Shown once: the flow's API representation never contains it.
    assert "whsec_" not in key_client.get(f"/api/v1/flows/{flow.id}").content.decode()
    assert key_client.delete(f"/api/v1/flows/{flow.id}/signing-secret").status_code == 204
    assert Flow.objects.get(pk=flow.pk).signing_secret == ""


def test_signing_secret_endpoint_of_another_users_flow_is_404(make_user, make_flow, key_client):
    other = make_flow(make_user("mallory"))
    assert key_client.post(f"/api/v1/flows/{other.id}/signing-secret").status_code == 404
    assert key_client.delete(f"/api/v1/flows/{other.id}/signing-secret").status_code == 404
    assert APIClient().post(f"/api/v1/flows/{other.id}/signing-secret").status_code == 403
    assert Flow.objects.get(pk=other.pk).signing_secret == ""


@pytest.mark.parametrize("change", ["rotate", "set", "remove"])
def test_a_signing_secret_change_of_a_flow_deleted_meanwhile_is_404(flow, change):
    """The endpoint looked the flow up, then it was deleted: 404 as its lookup would now answer, never a 500."""
    Flow.objects.filter(pk=flow.pk).delete()
    calls = {
        "rotate": lambda: signatures.webhook_signing_secret_rotate(flow=flow),
        "set": lambda: signatures.webhook_signing_secret_set(flow=flow, secret="whsec_" + "a" * 32),
        "remove": lambda: signatures.webhook_signing_secret_remove(flow=flow),
    }
    with pytest.raises(Http404):
        calls[change]()
    assert not Flow.objects.filter(pk=flow.pk).exists()


def test_a_rotation_keeps_the_secret_stored_now_as_the_previous_one(flow):
    """Two rotations of one flow read before either: the second keeps the first's new secret valid, not the one read."""
    stale = Flow.objects.get(pk=flow.pk)
    first = signatures.webhook_signing_secret_rotate(flow=flow)
    signatures.webhook_signing_secret_rotate(flow=stale)
    assert Flow.objects.get(pk=flow.pk).signing_secret_previous == first


def test_standard_webhooks_signature_stands_in_for_the_api_key(client, flow, secret):
    response = post(client, f"{flow.id}", **standard_headers(secret))
    assert response.status_code == 202, response.content
    run = FlowRun.objects.get()
    assert run.user == flow.user and run.idempotency_key == "msg_1"
    # By endpoint name too (unique among users here).
    assert post(client, flow.endpoint_name, **standard_headers(secret, msg_id="msg_2")).status_code == 202


def test_several_signatures_one_valid(client, flow, secret):
    headers = standard_headers(secret, extra_signatures=["v1,bm90IGl0", "v2,whatever", "garbage"])
    assert post(client, f"{flow.id}", **headers).status_code == 202


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, s: {**h, "HTTP_WEBHOOK_SIGNATURE": "v1," + base64.b64encode(b"x" * 32).decode()},
        lambda h, s: standard_headers(s, timestamp=timezone.now() - timedelta(minutes=6)),
        lambda h, s: standard_headers(s, timestamp=timezone.now() + timedelta(minutes=6)),
        lambda h, s: {**h, "HTTP_WEBHOOK_ID": "msg_other"},
        lambda h, s: {**h, "HTTP_WEBHOOK_TIMESTAMP": "not-a-number"},
        lambda h, s: {k: v for k, v in h.items() if k != "HTTP_WEBHOOK_TIMESTAMP"},
        lambda h, s: standard_headers("whsec_" + base64.b64encode(b"k" * 32).decode()),
        lambda h, s: {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + "0" * 64},
        lambda h, s: {"HTTP_X_HUB_SIGNATURE_256": "sha1=abc"},
        lambda h, s: {"HTTP_X_HUB_SIGNATURE_256": "sha256=\u00e9"},
    ],
)
def test_bad_signature_is_401_and_creates_no_run(client, key_client, flow, secret, tamper):
    headers = tamper(standard_headers(secret), secret)
    response = post(key_client, f"{flow.id}", **headers)  # an API key does not excuse a bad signature
    assert response.status_code == 401, response.content
    assert response.json() == {"detail": signatures.SIGNATURE_INVALID}
    # Without a key the answer does not tell that the flow exists and is signed.
    response = post(client, f"{flow.id}", **headers)
    assert (response.status_code, response.json()) == (403, {"detail": targets.MISSING_API_KEY})
    assert not FlowRun.objects.exists()


def test_signature_over_a_different_body_is_401(key_client, flow, secret):
    assert post(key_client, f"{flow.id}", body=b'{"name": "Eve"}', **standard_headers(secret)).status_code == 401
    assert post(key_client, f"{flow.id}", body=b'{"name": "Eve"}', **github_headers(secret)).status_code == 401
    assert not FlowRun.objects.exists()


def test_flow_with_secret_refuses_unsigned_requests_even_with_api_key(key_client, flow, secret):
    response = post(key_client, flow.endpoint_name)
    assert response.status_code == 401 and response.json() == {"detail": signatures.SIGNATURE_REQUIRED}
    assert not FlowRun.objects.exists()


@pytest.mark.parametrize("scheme", ["standard", "github"])
def test_without_a_key_a_signature_tells_nothing_of_what_exists(client, user, make_user, make_flow, settings, scheme):
    # Every unauthenticated answer is Langflow's missing-key 403, whatever the name or id names.
    settings.LANGRUN_MAX_BODY_BYTES = 64
    signed = make_flow(user, endpoint_name="signed")
    signatures.webhook_signing_secret_rotate(flow=signed)
    make_flow(user, endpoint_name="plain")
    make_flow(user, endpoint_name="shared")
    make_flow(make_user(), endpoint_name="shared")
    guess = "whsec_" + base64.b64encode(b"g" * 32).decode()
    headers = standard_headers(guess) if scheme == "standard" else github_headers(guess)
    names = ["nope", str(uuid.uuid4()), "plain", "shared", "signed", str(signed.id), "bad name!"]
    answers = {(r.status_code, r.content) for r in (post(client, name, **headers) for name in names)}
    assert answers == {(403, b'{"detail":"%s"}' % targets.MISSING_API_KEY.encode())}
    # A body too large for the limit, sent without its length, answers alike too.
    big = b'{"x": "' + b"y" * 100 + b'"}'
    answers = {
        (r.status_code, r.content) for r in (post(client, target, body=big, **headers, CONTENT_LENGTH="") for target in ["nope", "signed"])
    }
    assert len(answers) == 1
    assert not FlowRun.objects.exists()


def test_github_signature(client, flow, secret):
    assert post(client, f"{flow.id}", **github_headers(secret)).status_code == 202


def test_signature_does_not_replace_the_key_on_a_flow_without_secret(client, flow):
    response = post(client, f"{flow.id}", **github_headers("whsec_anything"))
    assert response.status_code == 403 and response.json() == {"detail": targets.MISSING_API_KEY}


@pytest.mark.parametrize("with_key", [False, True], ids=["signature-only", "api-key-and-signature"])
def test_rotation_keeps_the_old_secret_for_the_grace_period(client, key_client, flow, secret, with_key):
    client = key_client if with_key else client  # with a key, the webhook's one-query lookup finds the flow
    new = signatures.webhook_signing_secret_rotate(flow=flow)
    assert post(client, f"{flow.id}", **standard_headers(secret, msg_id="old")).status_code == 202
    assert post(client, f"{flow.id}", **standard_headers(new, msg_id="new")).status_code == 202
    Flow.objects.filter(pk=flow.pk).update(signing_secret_previous_expires_at=timezone.now() - timedelta(seconds=1))
    refused = 401 if with_key else 403  # without a key, as a request without credentials
    assert post(client, f"{flow.id}", **standard_headers(secret, msg_id="old-late")).status_code == refused
    assert post(client, f"{flow.id}", **github_headers(secret)).status_code == refused


def test_rotation_without_grace_revokes_at_once(client, flow, secret):
    signatures.webhook_signing_secret_rotate(flow=flow, grace_seconds=0)
    assert post(client, f"{flow.id}", **standard_headers(secret)).status_code == 403


def test_management_command_rotates_and_removes(flow, capsys):
    call_command("rotate_signing_secret", str(flow.id))
    printed = capsys.readouterr().out.strip()
    flow.refresh_from_db()
    assert printed == flow.signing_secret and printed.startswith("whsec_")
    call_command("rotate_signing_secret", str(flow.id), "--remove")
    flow.refresh_from_db()
    assert flow.signing_secret == "" and flow.signing_secret_previous == ""


@pytest.mark.parametrize("remove", [False, True])
def test_management_command_on_a_flow_deleted_after_its_lookup_says_so(flow, monkeypatch, remove):
    from webhooks.management.commands import rotate_signing_secret as command

    real = command.Flow.objects.get

    def looked_up_then_deleted(**lookup):
        found = real(**lookup)
        Flow.objects.filter(pk=found.pk).delete()
        return found

    monkeypatch.setattr(command.Flow.objects, "get", looked_up_then_deleted)
    with pytest.raises(CommandError, match="No flow with id"):
        call_command("rotate_signing_secret", str(flow.id), *(["--remove"] if remove else []))


# --- limits --------------------------------------------------------------------------


class CountingStream:
    def __init__(self, size):
        self.stream, self.read_bytes = io.BytesIO(b"x" * size), 0

    def read(self, n=-1):
        data = self.stream.read(n)
        self.read_bytes += len(data)
        return data


@pytest.mark.parametrize("content_length", [None, "", "10", "garbage"])
def test_body_read_stops_at_the_limit_whatever_content_length_says(settings, content_length):
    settings.LANGRUN_MAX_BODY_BYTES = 1000
    stream = CountingStream(10_000_000)
    with pytest.raises(PayloadTooLarge):
        services.webhook_body_read(stream=stream, content_length=content_length)
    assert stream.read_bytes == 1001


def test_body_at_the_limit_is_read_whole(settings):
    settings.LANGRUN_MAX_BODY_BYTES = 1000
    assert services.webhook_body_read(stream=CountingStream(1000), content_length="1000") == b"x" * 1000


def test_declared_oversized_body_is_413_without_reading(key_client, flow, settings):
    settings.LANGRUN_MAX_BODY_BYTES = 100
    response = post(key_client, flow.endpoint_name, body=b"{}", CONTENT_LENGTH="101")
    assert response.status_code == 413 and not FlowRun.objects.exists()


@pytest.fixture
def frozen_minute(monkeypatch):
    """Pin the clock at the start of a rate-limit window, so a test never straddles two."""
    start = (time.time() // 60 + 1) * 60 + 1
    monkeypatch.setattr(services.time, "time", lambda: start)
    return start


def test_rate_limit_per_flow(key_client, flow, settings, frozen_minute):
    settings.LANGRUN_RATE_LIMIT_FLOW = 3
    codes = [post(key_client, flow.endpoint_name).status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    limited = post(key_client, flow.endpoint_name)
    assert limited.status_code == 429 and limited["Retry-After"] == "59"
    assert "3 webhook requests per minute for this flow" in limited.json()["detail"]
    assert FlowRun.objects.count() == 3


def test_rate_limit_per_key(key_client, user, make_flow, settings, frozen_minute):
    settings.LANGRUN_RATE_LIMIT_KEY = 2
    a, b = make_flow(user, endpoint_name="a"), make_flow(user, endpoint_name="b")
    assert [post(key_client, "a").status_code, post(key_client, "b").status_code, post(key_client, "a").status_code] == [202, 202, 429]
    other = APIClient()
    other.credentials(HTTP_X_API_KEY=api_key_create(user=user).key)
    assert post(other, "b").status_code == 202  # another key has its own budget
    assert FlowRun.objects.filter(flow__in=[a, b]).count() == 3


def test_rate_limit_off_by_default(key_client, flow, settings):
    assert settings.LANGRUN_RATE_LIMIT_FLOW == 0 and settings.LANGRUN_RATE_LIMIT_KEY == 0
    assert {post(key_client, flow.endpoint_name).status_code for _ in range(20)} == {202}


def test_deeply_nested_json_is_422(key_client, flow):
    response = post(key_client, flow.endpoint_name, body=b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 422 and not FlowRun.objects.exists()


# --- secrets stay secret --------------------------------------------------------------


def test_secrets_never_reach_logs_or_run_records(key_client, api_key, flow, caplog):
    caplog.set_level(logging.DEBUG)
    secret = key_client.post(f"/api/v1/flows/{flow.id}/signing-secret").json()["signing_secret"]
    ok = post(key_client, f"{flow.id}", HTTP_IDEMPOTENCY_KEY="d1", **standard_headers(secret, msg_id="d1"))
    bad = post(key_client, f"{flow.id}", **github_headers(secret + "x"))
    wrong_key = post(APIClient(), f"{flow.id}?x-api-key={api_key[:-2]}zz")
    assert (ok.status_code, bad.status_code, wrong_key.status_code) == (202, 401, 403)
    run = FlowRun.objects.get()
    record = " ".join(str(v) for v in FlowRun.objects.filter(pk=run.pk).values().get().values())
    for text in (caplog.text, record, bad.content.decode(), wrong_key.content.decode()):
        assert api_key not in text and api_key[3:] not in text
        assert secret not in text and secret.removeprefix("whsec_") not in text


def test_admin_pages_never_show_the_signing_secret(admin_client, flow, secret):
    signatures.webhook_signing_secret_rotate(flow=flow)  # a previous secret too
    flow.refresh_from_db()
    for url in (f"/admin/flows/flow/{flow.id}/change/", "/admin/flows/flow/"):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert flow.signing_secret not in page.content.decode() and secret not in page.content.decode()
