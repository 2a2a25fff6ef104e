"""Helpers shared by test modules (plain functions and data, no fixtures: those are in the conftest.py files)."""

import copy
import hashlib
import hmac
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from flows.examples import GREETING_GRAPH

# The product's demo graph (make run, the API docs' example); a copy, so no test can change the original.
GREETING_FLOW = copy.deepcopy(GREETING_GRAPH)

# A flow that calls a language model with the credential OPENAI_API_KEY.
MODEL_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "prompt", "type": "Template", "params": {"template": "Summarise: {text}"}},
        {"id": "model", "type": "LanguageModel", "params": {"model": "tiny", "api_key": {"variable": "OPENAI_API_KEY"}}},
        {"id": "out", "type": "Output", "params": {"name": "answer"}},
    ],
    "edges": [
        {"source": "hook", "target": "prompt", "target_input": "data"},
        {"source": "prompt", "target": "model", "target_input": "prompt"},
        {"source": "model", "target": "out"},
    ],
}


# A flow whose HTTPRequest makes it not quick (never batched).
HTTP_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "call", "type": "HTTPRequest", "params": {"url": "https://example.com/"}},
        {"id": "out", "type": "Output", "params": {"name": "answer"}},
    ],
    "edges": [
        {"source": "hook", "target": "call", "target_input": "data"},
        {"source": "call", "target": "out", "target_input": "value"},
    ],
}

# Webhook → an Output per output: what a flow sees of the request (headers, query, method, data).
REQUEST_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "h", "type": "Output", "params": {"name": "headers"}},
        {"id": "q", "type": "Output", "params": {"name": "query"}},
        {"id": "m", "type": "Output", "params": {"name": "method"}},
        {"id": "d", "type": "Output", "params": {"name": "data"}},
    ],
    "edges": [
        {"source": "hook", "source_output": "headers", "target": "h", "target_input": "value"},
        {"source": "hook", "source_output": "query", "target": "q", "target_input": "value"},
        {"source": "hook", "source_output": "method", "target": "m", "target_input": "value"},
        {"source": "hook", "source_output": "data", "target": "d", "target_input": "value"},
    ],
}

# Webhook → Respond: a flow in `flow` response mode that answers 201 with the order's id (issue 21, item 8).
RESPOND_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {
            "id": "answer",
            "type": "Respond",
            "params": {"status": 201, "headers": {"X-Order": "{order}"}, "body": {"received": "{order}", "text": "order {order}"}},
        },
    ],
    "edges": [{"source": "hook", "source_output": "data", "target": "answer", "target_input": "data"}],
}


# A graph with a bad param type and an unknown component: what validation messages are tested on.
BROKEN_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "greet", "type": "Template", "params": {"template": 5}},
        {"id": "out", "type": "Nope"},
    ],
    "edges": [{"source": "hook", "target": "greet", "target_input": "data"}],
}


def greeting_with_template(template: str) -> dict:
    """The greeting flow with another template."""
    data = copy.deepcopy(GREETING_FLOW)
    data["nodes"][1]["params"]["template"] = template
    return data


BODY = b'{"name": "Ada"}'


def post(client, target, body=b'{"name": "Ada"}', content_type="application/json", **extra):
    """POST a webhook to flow `target` (its id or endpoint name)."""
    return client.generic("POST", f"/api/v1/webhook/{target}", body, content_type=content_type, **extra)


def github_headers(secret, body=BODY):
    """GitHub's signature header for `body` signed with `secret`."""
    return {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


# --- admin users ----------------------------------------------------------------


def grant(user, *codenames: str) -> None:
    """Give `user` Django permissions by `app_label.codename` (the admin honours them as Django does)."""
    from django.contrib.auth.models import Permission

    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def grant_owned_models(user) -> None:
    """Every permission on the objects users own (flows, runs, versions, variables, subscriptions, API keys, ingest
    tokens): what a staff user is given to manage their own objects in the admin."""
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    owned = (
        Q(content_type__app_label="flows")
        | Q(content_type__app_label="webhooks", content_type__model__in=["subscription", "delivery"])
        | Q(content_type__app_label="langrun", content_type__model="apikey")
        | Q(content_type__app_label="webhooks", content_type__model="ingesttoken")
    )
    user.user_permissions.add(*Permission.objects.filter(owned))


def login(user) -> Client:
    """A test client logged in as `user` (admin pages use Django's session login)."""
    c = Client()
    c.force_login(user)
    return c


# --- Flows of the fault-injection components (tests/components.py) ---------------


def side_effect_flow(path, delay=0):
    return {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "effect", "type": "TestSideEffect", "params": {"path": str(path), "delay": delay}},
            {"id": "out", "type": "Output", "params": {"name": "echo"}},
        ],
        "edges": [
            {"source": "hook", "target": "effect", "target_input": "data"},
            {"source": "effect", "target": "out", "target_input": "value"},
        ],
    }


def flaky_flow(path, fail_times, retryable=True):
    return {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "call", "type": "TestFlaky", "params": {"path": str(path), "fail_times": fail_times, "retryable": retryable}},
            {"id": "out", "type": "Output", "params": {"name": "echo"}},
        ],
        "edges": [
            {"source": "hook", "target": "call", "target_input": "data"},
            {"source": "call", "target": "out", "target_input": "value"},
        ],
    }


def lines(path) -> int:
    """How many times a fault-injection component ran (one line per execution in its file)."""
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- runs ---------------------------------------------------------------------------


def run_of(flow, user, **payload):
    """A webhook's run, with `payload` (default: the greeting flow's)."""
    from flows.services.runs import flow_run_create

    return flow_run_create(flow=flow, user=user, trigger="webhook", payload=payload or {"name": "Ada"})


def new_run(flow, user, **kw):
    """A run recorded through the services, as the API records one."""
    from flows.services.runs import flow_run_create

    return flow_run_create(flow=flow, user=user, trigger="api", payload={"name": "Ada"}, **kw)


def make_due(run):
    """Move the retry's schedule into the past, as if the backoff had passed."""
    from flows.models import FlowRun

    now = timezone.now()
    FlowRun.objects.filter(pk=run.pk).update(enqueued_at=now - timedelta(seconds=2), next_attempt_at=now - timedelta(seconds=1))


# --- a slow local HTTP API --------------------------------------------------------


class SlowAPI:
    """A local HTTP server on an event loop of its own thread: answers after `delay` seconds; a path starting
    with `/hang` never answers and counts the connections its clients closed (`closed`). Use as a context manager."""

    def __init__(self, delay: float = 0.5):
        import threading

        self.delay, self.answered, self.peak, self.in_flight = delay, 0, 0, 0
        self.hanging, self.closed = threading.Event(), threading.Event()

    def __enter__(self):
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import asyncio

        async def close():
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader, writer):
        import asyncio

        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                if head.split(" ", 2)[1].startswith("/hang"):
                    self.hanging.set()
                    if await reader.read(1) == b"":
                        self.closed.set()
                    return
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            self.answered += 1
            writer.write(
                b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{"ok": true}'
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def http_flow(url: str, **params) -> dict:
    """Webhook → HTTPRequest(url) → Output."""
    data = copy.deepcopy(HTTP_FLOW)
    data["nodes"][1]["params"] = {"url": url, "method": "POST", **params}
    return data


# --- Verification presets: a request signed as each provider signs it (its SDK where one is installed) ---------


def provider_signed_headers(provider: str, secret: str, body: bytes, **preset) -> dict[str, str]:
    """HTTP headers (real names) of a request to a flow with `provider`'s preset, signed with `secret`."""
    import base64
    import time
    from datetime import UTC, datetime

    now = int(time.time())
    if provider == "standard":
        import standardwebhooks

        signature = standardwebhooks.Webhook(secret).sign("msg_e2e", datetime.fromtimestamp(now, UTC), body.decode())
        return {"webhook-id": "msg_e2e", "webhook-timestamp": str(now), "webhook-signature": signature}
    if provider == "github":
        return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}
    if provider == "stripe":
        import stripe

        return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body.decode(), secret, now)}
    if provider == "slack":
        from slack_sdk.signature import SignatureVerifier

        signature = SignatureVerifier(secret).generate_signature(timestamp=str(now), body=body)
        return {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": signature}
    if provider == "shopify":
        return {"X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()}
    if provider == "token":
        return {preset["header"]: secret}
    raise ValueError(provider)


# --- a receiver of alerts ---------------------------------------------------------


class AlertReceiver:
    """A local HTTP server receiving alert deliveries: each distinct `webhook-id` is answered 500 for its first
    `fail_first` attempts, then 204; a path starting with `/hang` never answers. Records every request
    (`requests`: headers and body). Use as a context manager."""

    def __init__(self, fail_first: int = 0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.fail_first, self.requests, self.seen = fail_first, [], {}
        self.lock, self.release = threading.Lock(), threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": headers, "body": body})
                    tries = receiver.seen[headers.get("webhook-id")] = receiver.seen.get(headers.get("webhook-id"), 0) + 1
                if self.path.startswith("/hang"):
                    receiver.release.wait(30)
                    return
                self.send_response(500 if tries <= receiver.fail_first else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a sender that gave up (the timeout tests) is expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        import threading

        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def verified(self, secret: str) -> list[dict]:
        """The bodies of the requests whose Standard Webhooks signature holds for `secret` (raises otherwise)."""
        import standardwebhooks

        hook = standardwebhooks.Webhook(secret)
        return [hook.verify(r["body"], r["headers"]) for r in self.requests]


def deleted_after_lookup(monkeypatch, view_class) -> None:
    """The view's object is deleted right after the view looked it up: a concurrent DELETE of the same object."""
    lookup = view_class.get_object

    def found_then_deleted(view):
        found = lookup(view)
        type(found).objects.filter(pk=found.pk).delete()
        return found

    monkeypatch.setattr(view_class, "get_object", found_then_deleted)


class FlowDeletedMeanwhile:
    """A DELETE of `flow` in another connection that holds the flow's row for `hold` seconds, then deletes it: what the
    test does inside the block meanwhile waits on the row (PostgreSQL), and finds the flow gone after. Use as a
    context manager, in a transactional test."""

    def __init__(self, flow, hold: float = 0.3):
        import threading

        self.flow, self.hold = flow, hold
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._delete)

    def _delete(self) -> None:
        import time

        from django.db import connection, transaction

        from flows.models import Flow

        try:
            with transaction.atomic():
                Flow.objects.select_for_update().filter(pk=self.flow.pk).exists()
                self.locked.set()
                time.sleep(self.hold)
                Flow.objects.filter(pk=self.flow.pk).delete()
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(5)
        return self

    def __exit__(self, *exc):
        self.thread.join()


def at_once(*calls, timeout: float = 30) -> list:
    """Call each of `calls` in a thread of its own, all released together, and wait for them: what each returned, or
    the exception it raised, in order. Each thread's database connection is closed when it is done."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def call(i: int) -> None:
        try:
            barrier.wait(timeout)
            outcomes[i] = calls[i]()
        except Exception as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return outcomes
