import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django_q.signing import SignedPackage
from rest_framework.test import APIClient

from flows.services import execution, queue
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create
from tests.helpers import GREETING_FLOW, grant_owned_models

_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _purge_test_queue():
    """The test run's broker queue (named after the test process) is emptied at the end."""
    yield
    try:
        from django_q.brokers import get_broker

        get_broker().purge_queue()
    except Exception:
        pass


@pytest.fixture
def make_user(db):
    def make(username: str | None = None, **fields) -> User:
        return User.objects.create_user(username=username or f"user{next(_names)}", password="pw-for-tests-1", **fields)

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def api_key(user):
    return api_key_create(user=user, name="test").key


@pytest.fixture
def make_flow(db):
    def make(user, *, data=None, endpoint_name=None, name="Greeting") -> object:
        return flow_create(user=user, name=name, endpoint_name=endpoint_name, data=data or GREETING_FLOW)

    return make


@pytest.fixture
def flow(make_flow, user):
    return make_flow(user, endpoint_name="greet")


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def key_client(api_key):
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key)
    return c


# --- the worker's two ways to claim and finish a run ----------------------------------------


@pytest.fixture(params=["returning", "general"])
def execute_path(request, monkeypatch):
    """Runs a test once per way the worker claims and finishes a run.

    `returning`: the hand-written claim and finish (one statement each on PostgreSQL, one transaction
    each on SQLite 3.35 or later); `general`: the ORM
    transactions every database has, which PostgreSQL also uses for concurrency-limited flows.
    """
    if request.param == "returning":
        if not execution._returning_sql():
            pytest.skip("the hand-written claim and finish need PostgreSQL or SQLite 3.35 (UPDATE … RETURNING)")
    else:
        monkeypatch.setattr(execution, "_returning_sql", lambda: False)
    return request.param


# --- admin users ----------------------------------------------------------------


@pytest.fixture
def staff(make_user):
    """A staff user with every permission on owned objects (the admin still shows them only their own)."""
    user = make_user("staff", is_staff=True)
    grant_owned_models(user)
    return user


@pytest.fixture
def other(make_user):
    user = make_user("other", is_staff=True)
    grant_owned_models(user)
    return user


@pytest.fixture
def bare_staff(make_user):
    """A staff user without any permission: Django's admin shows them nothing of the models."""
    return make_user("bare", is_staff=True)


@pytest.fixture
def superuser(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


# --- A local HTTP server (the HTTPRequest and LanguageModel components' tests) ------------------


class Recorder(BaseHTTPRequestHandler):
    """Answers by path; records every request it gets."""

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        )
        route = self.path.split("?", 1)[0]
        if route == "/slow":
            self.server.release.wait(5)
        if route == "/redirect-to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        if route == "/redirect-local":
            self.send_response(302)
            self.send_header("Location", "/json")
            self.end_headers()
            return
        if route.startswith("/status/"):
            code = int(route.rsplit("/", 1)[1])
            payload, ctype = json.dumps({"error": {"message": f"status {code}"}}).encode(), "application/json"
        elif route == "/text":
            code, payload, ctype = 200, b"plain text", "text/plain; charset=utf-8"
        elif route == "/v1/chat/completions":
            request = json.loads(body)
            if self.headers.get("Authorization") != "Bearer sk-test-secret":
                code, payload = 401, json.dumps({"error": {"message": "Incorrect API key provided"}}).encode()
            else:
                content = f"echo: {request['messages'][-1]['content']}"
                answer = {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": request["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                }
                code, payload = 200, json.dumps(answer).encode()
            ctype = "application/json"
        else:
            code, payload, ctype = 200, json.dumps({"ok": True, "path": self.path}).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Trace", "abc")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that gave up (the timeout test) is expected


@pytest.fixture
def server():
    httpd = QuietServer(("127.0.0.1", 0), Recorder)
    httpd.requests = []
    httpd.release = threading.Event()
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def local_allowed(settings):
    """A test's local servers listen on loopback, which the outbound address guard refuses unless allowed."""
    settings.LANGRUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def pushed_tasks(monkeypatch) -> list[dict]:
    """The tasks the doorbell pushes, unpacked as a worker unpacks them: a broker that records instead of Redis."""
    pushed = []

    class Broker:
        list_key = "recording"

        def enqueue(self, package):
            pushed.append(SignedPackage.loads(package))
            return len(pushed)

    monkeypatch.setattr(queue, "_broker", Broker())
    return pushed
