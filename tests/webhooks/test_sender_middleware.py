"""WebhookSenderMiddleware: a sender's POST skips the middleware after it, and gets the answer the whole chain gives."""

import re

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import MiddlewareNotUsed
from django.middleware.csrf import CsrfViewMiddleware
from django.test.utils import override_script_prefix
from django.urls import get_urlconf, include, path, set_script_prefix, set_urlconf
from rest_framework.test import APIClient

from flows.models import FlowRun
from tests.flows.test_metrics import scrape
from tests.webhooks.test_hot_path import _answer, _schema_flow
from tests.webhooks.test_webhook import post
from webhooks import services as webhook_services
from webhooks.middleware import WebhookSenderMiddleware

SENDER = "webhooks.middleware.WebhookSenderMiddleware"

# A URLconf of its own, which a request may carry (test_a_requests_own_urlconf_is_the_one_its_answer_is_built_with).
urlpatterns = [path("", include("langrun.urls"))]


@pytest.fixture
def whole_chain(settings):
    """A client whose requests all go through every middleware (the sender's middleware left out)."""

    def make(**credentials) -> APIClient:
        assert SENDER in settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != SENDER]
        client = APIClient()
        client.credentials(**credentials)
        return client

    return make


@pytest.fixture
def calls(monkeypatch):
    """The requests that reached the session and CSRF middleware, by path."""
    seen = []
    for cls in (SessionMiddleware, CsrfViewMiddleware):
        original = cls.process_request

        def spy(self, request, _original=original, _name=cls.__name__):
            seen.append((_name, request.get_full_path()))
            return _original(self, request)

        monkeypatch.setattr(cls, "process_request", spy)
    return seen


CASES = {
    "accepted": ("orders", b'{"id": 1}', {}),
    "no key": ("orders", b'{"id": 1}', {"HTTP_X_API_KEY": ""}),
    "wrong key": ("orders", b'{"id": 1}', {"HTTP_X_API_KEY": "lr_wrong"}),
    "unknown flow": ("missing", b'{"id": 1}', {}),
    "bad json": ("orders", b"{not json", {}),
    "not a schema match": ("orders", b'{"id": "one"}', {}),
    "too large": ("orders", b'{"id": "' + b"x" * 100 + b'"}', {}),
    "NUL in the query": ("orders?note=a%00b", b'{"id": 1}', {}),
    "replayed delivery": ("orders", b'{"id": 1}', {"HTTP_IDEMPOTENCY_KEY": "delivery-1"}),
    "disallowed host": ("orders", b'{"id": 1}', {"HTTP_HOST": "evil.example.com"}),
    "forbidden user agent": ("orders", b'{"id": 1}', {"HTTP_USER_AGENT": "BadBot/1.0"}),
    "too many query fields": ("orders?" + "&".join(f"f{i}=1" for i in range(1001)), b'{"id": 1}', {}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_senders_answer_is_the_whole_chains_byte_for_byte(client, api_key, make_flow, user, settings, whole_chain, case):
    settings.LANGRUN_MAX_BODY_BYTES = 64
    settings.DISALLOWED_USER_AGENTS = [re.compile(r"^BadBot")]
    make_flow(user, endpoint_name="orders", data=_schema_flow())
    target, body, headers = CASES[case]
    headers = {"HTTP_X_API_KEY": api_key, **headers}
    if case == "replayed delivery":
        post(client, target, body, **headers)
    fast = post(client, target, body, **headers)
    chain = post(whole_chain(), target, body, **headers)
    ids = [r.json()["run_id"] for r in (fast, chain) if r.status_code == 202]
    assert _answer(fast, ids) == _answer(chain, ids)
    assert fast["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware, before this one, still answers
    if case in ("disallowed host", "forbidden user agent", "too many query fields"):  # refused before the view
        assert fast.status_code in (400, 403) and not FlowRun.objects.exists()
    else:
        assert fast["Content-Length"] == str(len(fast.content)) and fast["X-Frame-Options"] == "DENY"
    if case == "accepted":
        assert fast.status_code == 202 and FlowRun.objects.count() == 2


def test_the_middleware_after_it_never_see_a_senders_post(key_client, flow, calls):
    assert post(key_client, flow.endpoint_name).status_code == 202
    assert calls == []
    # Everything else goes through them: waiting, the browsable API, other methods, other paths.
    assert post(key_client, f"{flow.endpoint_name}?wait=0").status_code == 202
    assert key_client.get(f"/api/v1/webhook/{flow.endpoint_name}", HTTP_ACCEPT="text/html").status_code == 405
    assert post(key_client, f"{flow.endpoint_name}?format=json").status_code == 202
    assert key_client.get("/api/v1/flows/").status_code == 200
    paths = [path for name, path in calls if name == "SessionMiddleware"]
    assert paths == [
        f"/api/v1/webhook/{flow.endpoint_name}?wait=0",
        f"/api/v1/webhook/{flow.endpoint_name}",
        f"/api/v1/webhook/{flow.endpoint_name}?format=json",
        "/api/v1/flows/",
    ]
    assert FlowRun.objects.count() == 3


def test_a_path_under_the_webhooks_that_is_not_one_passes_on(key_client, flow, calls):
    response = post(key_client, f"{flow.endpoint_name}/more")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
    assert ("SessionMiddleware", f"/api/v1/webhook/{flow.endpoint_name}/more") in calls


def test_refused_webhooks_are_counted_once(client, flow, api_key, settings):
    settings.LANGRUN_METRICS = "open"
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY="lr_wrong").status_code == 403
    assert post(client, f"{flow.endpoint_name}?x=%00", HTTP_X_API_KEY=api_key).status_code == 422
    assert post(client, flow.endpoint_name, HTTP_X_API_KEY=api_key).status_code == 202
    m = scrape(client)
    assert m[("langrun_webhooks_received_total", (("code", "403"),))] == 1
    assert m[("langrun_webhooks_received_total", (("code", "422"),))] == 1
    assert ("langrun_webhooks_received_total", (("code", "500"),)) not in m


def test_an_unexpected_error_is_the_same_500_and_is_counted(api_key, flow, monkeypatch, settings, whole_chain, caplog):
    settings.LANGRUN_METRICS = "open"

    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(webhook_services, "webhook_payload_decode", boom)
    fast = APIClient(raise_request_exception=False)
    fast.credentials(HTTP_X_API_KEY=api_key)
    first = post(fast, flow.endpoint_name)
    chain = whole_chain(HTTP_X_API_KEY=api_key)
    chain.raise_request_exception = False
    second = post(chain, flow.endpoint_name)
    assert _answer(first) == _answer(second)
    assert first.status_code == 500
    # Django's handler logs each 500 once, with its exception, on both paths.
    logged = [r for r in caplog.records if r.name == "django.request" and r.levelname == "ERROR"]
    assert len(logged) == 2 and all(r.exc_info and r.exc_info[0] is RuntimeError for r in logged)
    assert scrape(APIClient())[("langrun_webhooks_received_total", (("code", "500"),))] == 2
    assert FlowRun.objects.count() == 0


def test_https_redirects_still_apply(key_client, flow, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = post(key_client, flow.endpoint_name)
    assert response.status_code == 301 and response["Location"].startswith("https://")
    assert not FlowRun.objects.exists()


def test_it_finds_the_webhook_urls_prefix_from_the_urlconf():
    assert WebhookSenderMiddleware(lambda request: None).prefix == "/api/v1/webhook/"
    set_script_prefix("/mounted/")  # as a deployment under a path sets it: the prefix is still path_info's
    try:
        assert WebhookSenderMiddleware(lambda request: None).prefix == "/api/v1/webhook/"
    finally:
        set_script_prefix("/")


def test_it_steps_aside_when_every_view_gets_a_transaction(key_client, flow, calls, monkeypatch, settings):
    monkeypatch.setitem(settings.DATABASES["default"], "ATOMIC_REQUESTS", True)
    with pytest.raises(MiddlewareNotUsed):
        WebhookSenderMiddleware(lambda request: None)
    client = APIClient()  # a new handler loads the middleware again, without this one
    client.credentials(HTTP_X_API_KEY=key_client._credentials["HTTP_X_API_KEY"])
    assert post(client, flow.endpoint_name).status_code == 202
    assert ("SessionMiddleware", f"/api/v1/webhook/{flow.endpoint_name}") in calls


def test_under_a_script_prefix_it_still_answers_guards_and_counts(key_client, flow, settings):
    # Behind a proxy that mounts langrun under a path, `path` carries the prefix and `path_info` does not.
    settings.LANGRUN_METRICS = "open"
    with override_script_prefix("/mounted/"):  # what Django's WSGI handler sets from SCRIPT_NAME
        accepted = post(key_client, flow.endpoint_name, SCRIPT_NAME="/mounted")
        refused = post(key_client, f"{flow.endpoint_name}?x=%00", SCRIPT_NAME="/mounted")
    assert accepted.status_code == 202
    assert accepted.json()["status_url"].startswith("http://testserver/mounted/api/v1/runs/")
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "x"]
    assert scrape(APIClient())[("langrun_webhooks_received_total", (("code", "422"),))] == 1
    assert FlowRun.objects.count() == 1


def test_a_requests_own_urlconf_is_the_one_its_answer_is_built_with(api_key, flow, rf):
    # A middleware before this one may give a request its own URLconf; the handler makes it current before
    # resolving, and the run's status URL is reversed with it.
    request = rf.post(f"/api/v1/webhook/{flow.endpoint_name}", b'{"name": "Ada"}', content_type="application/json")
    request.META["HTTP_X_API_KEY"] = api_key
    request.urlconf = __name__
    try:
        response = WebhookSenderMiddleware(lambda request: pytest.fail("the whole chain was not expected"))(request)
        assert get_urlconf() == __name__
    finally:
        set_urlconf(None)
    assert response.status_code == 202 and FlowRun.objects.count() == 1
