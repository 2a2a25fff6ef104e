"""Cross-user access on every endpoint, revoked keys, and the production profile's `check --deploy`."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from flows.models import Flow, FlowRun
from flows.services.runs import flow_run_create
from langrun.models import ApiKey
from langrun.services import api_key_create

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def victim(make_user, make_flow):
    """Mallory's flow and run, which alice (the `key_client`) must not reach."""
    mallory = make_user("mallory")
    flow = make_flow(mallory, endpoint_name="secret-flow", name="Mallory's")
    run = flow_run_create(flow=flow, user=mallory, trigger="api", payload={"name": "M"})
    return flow, run


def test_flows_of_another_user_are_404(key_client, victim):
    flow, _ = victim
    for path in (f"/api/v1/flows/{flow.id}", f"/api/v1/flows/{flow.id}/"):
        assert key_client.get(path).status_code == 404
        assert key_client.patch(path, {"name": "mine"}, format="json").status_code == 404
        assert key_client.delete(path).status_code == 404
    assert str(flow.id) not in key_client.get("/api/v1/flows/").content.decode()
    assert Flow.objects.get(pk=flow.pk).name == "Mallory's"


def test_runs_and_tasks_of_another_user_are_404(key_client, victim):
    _, run = victim
    assert key_client.get(f"/api/v1/runs/{run.id}").status_code == 404
    assert key_client.get(f"/api/v1/task/{run.id}").status_code == 404
    assert key_client.get(f"/api/v1/runs/{run.id}/attempts").status_code == 404


def test_webhook_of_another_users_flow_by_name_is_404_and_by_id_is_refused(key_client, victim):
    flow, _ = victim
    by_name = key_client.generic("POST", "/api/v1/webhook/secret-flow", b"{}", content_type="application/json")
    by_id = key_client.generic("POST", f"/api/v1/webhook/{flow.id}", b"{}", content_type="application/json")
    by_owner = key_client.generic("POST", f"/api/v1/webhook/secret-flow?user_id={flow.user_id}", b"{}", content_type="application/json")
    assert by_name.status_code == 404
    assert by_id.status_code == 403  # Langflow's "Access denied" for a flow id the caller does not own
    assert by_owner.status_code == 403
    assert FlowRun.objects.filter(flow=flow).count() == 1


def test_revoked_key_fails_at_once(user, flow):
    new = api_key_create(user=user)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=new.key)
    hook = lambda: client.generic("POST", f"/api/v1/webhook/{flow.id}", b'{"name": "A"}', content_type="application/json")  # noqa: E731
    assert client.get("/api/v1/flows/").status_code == 200 and hook().status_code == 202
    ApiKey.objects.filter(pk=new.api_key.pk).update(is_active=False)
    assert client.get("/api/v1/flows/").status_code == 403
    assert hook().status_code == 403


def test_key_of_an_inactive_user_fails(user, flow, key_client):
    user.is_active = False
    user.save()
    assert key_client.get("/api/v1/flows/").status_code == 403


def _check(env_overrides: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DEBUG"))}
    env.update({"DJANGO_SETTINGS_MODULE": "langrun.settings", **env_overrides})
    env = {k: v for k, v in env.items() if v is not None}  # None: unset
    return subprocess.run([sys.executable, "manage.py", "check", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


DEPLOY_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "langrun.example.com",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "LANGRUN_BEHIND_TLS_PROXY": "true",
}


def test_check_deploy_passes_with_the_production_settings():
    result = _check(DEPLOY_ENV, "--deploy", "--tag", "security", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _check(DEPLOY_ENV, "--deploy").returncode == 0


def test_check_deploy_flags_the_insecure_defaults():
    result = _check({"DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50)}, "--deploy", "--tag", "security", "--fail-level", "WARNING")
    assert result.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in result.stderr


def test_secret_key_is_required_without_debug():
    # The production profile (a database server): processes on several machines must share the key, so none is made.
    result = _check({"DEBUG": "false", "SECRET_KEY": "", "DATABASE_URL": "postgres://langrun@db.invalid/langrun"})
    assert result.returncode != 0 and "SECRET_KEY is not set" in result.stderr


def test_manage_py_uses_the_embedded_profiles_own_key(tmp_path):
    # As `make run` and the `langrun` command: any other command in the clone works without exporting it.
    home = tmp_path / "home"
    env = {"DEBUG": "false", "SECRET_KEY": None, "DATABASE_URL": None, "LANGRUN_HOME": str(home), "ALLOWED_HOSTS": "localhost"}
    first = _check(env)
    assert first.returncode == 0, first.stderr
    key = (home / "secret_key").read_text()
    assert len(key.strip()) >= 50 and (home / "secret_key").stat().st_mode & 0o777 == 0o600
    assert _check(env).returncode == 0 and (home / "secret_key").read_text() == key  # made once, then kept
