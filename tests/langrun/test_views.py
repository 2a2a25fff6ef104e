"""API keys and users over the REST API, error shapes, the schema and the browsable API."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from langrun.models import ApiKey
from langrun.services import api_key_authenticate, api_key_create
from tests.helpers import grant


@pytest.fixture
def session_client(user):
    c = APIClient()
    c.force_login(user)
    return c


def test_session_user_creates_lists_and_deletes_keys(session_client, user):
    created = session_client.post("/api/v1/api_key/", {"name": "ci"}, format="json")
    assert created.status_code == 201
    body = created.json()
    key = body["api_key"]
    assert key.startswith("sk-") and body["name"] == "ci"
    assert api_key_authenticate(key=key).user == user

    listed = session_client.get("/api/v1/api_key/").json()
    assert listed["count"] == 1
    row = listed["results"][0]
    assert row["id"] == body["id"] and row["api_key"] == key[:11] + "********" and key not in str(listed)

    assert session_client.delete(f"/api/v1/api_key/{body['id']}").status_code == 204
    assert api_key_authenticate(key=key) is None and not ApiKey.objects.exists()


def test_a_new_key_is_answered_not_to_be_cached(session_client):
    # As a new signing secret, ingest token or subscription secret is: the answer holds the key in clear (a browser
    # on the browsable API kept it in its cache).
    created = session_client.post("/api/v1/api_key/", {"name": "ci"}, format="json")
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"


def test_api_key_validation_and_isolation(session_client, make_user):
    long_name = session_client.post("/api/v1/api_key/", {"name": "x" * 101}, format="json")
    assert long_name.status_code == 422 and long_name.json()["detail"][0]["loc"] == ["body", "name"]
    theirs = api_key_create(user=make_user(), name="theirs").api_key
    assert session_client.delete(f"/api/v1/api_key/{theirs.id}").status_code == 404
    assert session_client.get("/api/v1/api_key/").json()["count"] == 0
    assert ApiKey.objects.filter(pk=theirs.pk).exists()
    assert APIClient().get("/api/v1/api_key/").status_code == 403


def test_key_authenticated_clients_manage_keys_too(key_client):
    assert key_client.post("/api/v1/api_key/", {}, format="json").status_code == 201
    assert key_client.get("/api/v1/api_key/").json()["count"] == 2


def test_whoami_and_staff_only_user_list(key_client, user, make_user):
    me = key_client.get("/api/v1/users/whoami").json()
    assert me["id"] == str(user.pk) and me["username"] == "alice" and me["is_staff"] is False and "password" not in me
    forbidden = key_client.get("/api/v1/users/")
    assert forbidden.status_code == 403 and forbidden.json() == {"detail": "Only staff allowed to view users can list them."}
    # Staff list users as the admin lets them see users: with Django's view_user permission (superusers have it).
    staff = make_user("root", is_staff=True)
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key_create(user=staff).key)
    denied = c.get("/api/v1/users/")
    assert denied.status_code == 403 and denied.json() == {"detail": "Only staff allowed to view users can list them."}
    grant(staff, "langrun.view_user")
    listed = c.get("/api/v1/users/?limit=1").json()
    assert listed["count"] == 2 and [u["username"] for u in listed["results"]] == ["alice"]
    c.credentials(HTTP_X_API_KEY=api_key_create(user=make_user("su", is_staff=True, is_superuser=True)).key)
    assert c.get("/api/v1/users/").json()["count"] == 3
    assert APIClient().get("/api/v1/users/whoami").status_code == 403


def test_invalid_api_key_is_403_with_detail(db):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY="sk-nope-nope-nope")
    response = c.get("/api/v1/flows/")
    assert response.status_code == 403 and response.json() == {"detail": "Invalid API key"}


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_routes_are_json_404_with_debug_on_or_off(db, settings, debug):
    settings.DEBUG = debug
    for path in ["/api/nothing", "/api/v1/flows/x/y/z", "/api/v1/nope/"]:
        response = Client().get(path)
        assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


def test_unsupported_media_type_is_415_with_detail(key_client):
    response = key_client.post("/api/v1/flows/", "<flow/>", content_type="application/xml")
    assert response.status_code == 415 and isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("path", ["/api/v1/flows/", "/api/v1/variables/", "/api/v1/flows/upload/", "/api/v1/run/greet"])
def test_bodies_over_the_limit_are_413_with_detail(key_client, flow, settings, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = key_client.post(path, {"name": "x" * 2000, "input_value": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is larger than 1000 bytes."}


def test_too_many_form_fields_is_413_with_detail(key_client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    response = key_client.post("/api/v1/flows/", "&".join(f"f{i}=1" for i in range(10)), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413 and "too many form fields" in response.json()["detail"]


def test_server_errors_under_api_are_json(db):
    from django.test import RequestFactory
    from django.urls import get_resolver

    handler = get_resolver().resolve_error_handler(500)
    response = handler(RequestFactory().get("/api/v1/flows/"))
    assert response.status_code == 500 and json.loads(response.content) == {"detail": "Internal Server Error"}
    assert handler(RequestFactory().get("/admin/"))["Content-Type"].startswith("text/html")


def test_schema_validates_without_warnings(db):
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null", stdout=out, stderr=out)


def test_schema_documents_security_errors_and_examples(db):
    schema = APIClient().get("/api/schema/?format=json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "in": "header", "name": "x-api-key"}
    assert schemes["ApiKeyQuery"]["in"] == "query" and "cookieAuth" in schemes
    webhook = schema["paths"]["/api/v1/webhook/{flow_id_or_name}"]["post"]
    assert {"200", "202", "400", "403", "404", "409", "413", "422"} <= set(webhook["responses"])
    assert "*/*" in webhook["requestBody"]["content"]
    assert webhook["responses"]["202"]["content"]["application/json"]["examples"]
    cancel = schema["paths"]["/api/v1/runs/{id}/cancel"]["post"]["responses"]
    assert cancel["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert cancel["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationError")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "422" in operation["responses"], (method, path)
            if path != "/api/v1/webhook/{flow_id_or_name}":
                assert "403" in operation["responses"], (method, path)
    assert schema["paths"]["/api/v1/runs/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["examples"]
    assert schema["paths"]["/api/v1/flows/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["examples"]


def _ref(response):
    return response["content"]["application/json"]["schema"]


def test_schema_documents_the_merged_endpoints(db):
    paths = APIClient().get("/api/schema/?format=json").json()["paths"]
    # Collections keep their trailing slash, as the README spells them; /metrics is not part of the API.
    assert {"/api/v1/components/", "/api/v1/flows/upload/", "/api/v1/variables/", "/api/v1/variables/{id}"} <= set(paths)
    assert not [p for p in paths if not p.startswith("/api/v1/")]

    webhook = paths["/api/v1/webhook/{flow_id_or_name}"]["post"]
    responses = webhook["responses"]
    assert {"200", "202", "400", "401", "403", "404", "405", "409", "413", "422", "429", "502"} == set(responses)
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert responses["202"]["headers"]["Location"]["required"] is True and "Idempotent-Replayed" in responses["202"]["headers"]
    headers = {p["name"]: p for p in webhook["parameters"] if p["in"] == "header"}
    assert set(headers) == {
        "Idempotency-Key",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
    }
    assert not any(p.get("required") for p in headers.values())
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
    assert {p["name"] for p in webhook["parameters"] if p["in"] == "query"} == {"user_id", "wait", "callback_url"}

    secret = paths["/api/v1/flows/{id}/signing-secret"]
    assert not secret["post"]["requestBody"].get("required") and {"201", "404", "422"} <= set(secret["post"]["responses"])
    assert "200" not in secret["post"]["responses"]
    assert set(secret["delete"]["responses"]) >= {"204", "404"}
    assert _ref(paths["/api/v1/runs/{id}/attempts"]["get"]["responses"]["200"])["type"] == "array"
    assert _ref(paths["/api/v1/components/"]["get"]["responses"]["200"])["type"] == "array"

    upload = paths["/api/v1/flows/upload/"]["post"]
    assert _ref(upload["responses"]["201"])["type"] == "array" and "parameters" not in upload
    assert _ref(upload["responses"]["422"])["$ref"].endswith("/ValidationError")
    assert _ref(paths["/api/v1/flows/{id}/export"]["get"]["responses"]["404"])["$ref"].endswith("/Error")
    restore = paths["/api/v1/flows/{flow_id}/versions/{number}/restore"]["post"]
    assert "requestBody" not in restore and {"200", "404", "422"} <= set(restore["responses"])
    assert {p["name"] for p in paths["/api/v1/flows/{flow_id}/versions"]["get"]["parameters"]} == {"flow_id", "limit", "offset"}
    for path in ["/api/v1/variables/", "/api/v1/flows/", "/api/v1/flows/upload/", "/api/v1/run/{flow_id_or_name}"]:
        post = paths[path]["post"]["responses"]
        assert {"413", "415", "422"} <= set(post), path
        assert _ref(post["413"])["$ref"].endswith("/Error")


def test_docs_pages_are_served_without_a_cdn(db):
    for path in ["/api/docs/", "/api/redoc/"]:
        html = Client().get(path).content.decode()
        assert "/static/drf_spectacular_sidecar/" in html and "cdn.jsdelivr" not in html and "unpkg" not in html


def test_browsable_api_after_login(user, flow):
    c = Client()
    assert c.login(username="alice", password="pw-for-tests-1")
    for path in [
        "/api/v1/flows/",
        f"/api/v1/flows/{flow.id}",
        "/api/v1/runs/",
        "/api/v1/api_key/",
        "/api/v1/users/whoami",
        f"/api/v1/run/{flow.id}",
        f"/api/v1/monitor/builds?flow_id={flow.id}",
        "/api/v1/webhook/greet",
    ]:
        response = c.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code in (200, 405), (path, response.status_code)
        assert response["Content-Type"].startswith("text/html"), path
        assert b"Django REST framework" in response.content
    form = c.get("/api/v1/flows/", HTTP_ACCEPT="text/html").content.decode()
    assert 'name="endpoint_name"' in form and 'name="data"' in form  # the HTML form for create
    assert 'name="name"' in c.get("/api/v1/api_key/", HTTP_ACCEPT="text/html").content.decode()
    for raw in ["/api/v1/webhook/greet", f"/api/v1/run/{flow.id}", f"/api/v1/flows/{flow.id}"]:
        assert 'name="_content"' in c.get(raw, HTTP_ACCEPT="text/html").content.decode(), raw  # the raw-body form
