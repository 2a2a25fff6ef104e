"""Request bodies as a real gunicorn hands them over: chunked transfer coding, and bodies too large to read."""

import http.client
import json
import time

import pytest

from flows.models import FlowRun

pytestmark = pytest.mark.e2e


def _connection(service, timeout: float = 20) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", service.port, timeout=timeout)


def _chunks(body: bytes, size: int = 7):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_webhook_body_is_read(service, setup_flow):
    flow, key = setup_flow
    conn = _connection(service)
    body = json.dumps({"name": "Ada", "list": list(range(50))}).encode()
    headers = {"x-api-key": key, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    conn.request("POST", "/api/v1/webhook/greet", body=_chunks(body), headers=headers, encode_chunked=True)
    response = conn.getresponse()
    answer = response.read()
    assert response.status == 202, answer
    run = FlowRun.objects.get(pk=json.loads(answer)["run_id"])
    assert run.payload == {"name": "Ada", "list": list(range(50))} and run.body == body.decode()


def test_a_chunked_body_over_the_limit_is_413(service, setup_flow):
    flow, key = setup_flow
    conn = _connection(service)
    body = b'{"x": "' + b"y" * (1024 * 1024 + 10) + b'"}'
    headers = {"x-api-key": key, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    conn.request("POST", "/api/v1/webhook/greet", body=_chunks(body, 64 * 1024), headers=headers, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413, response.read()
    assert not FlowRun.objects.exists()


def test_a_huge_upload_is_refused_before_it_is_read(service, setup_flow):
    flow, key = setup_flow
    conn = _connection(service, timeout=10)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="flows.json"\r\nContent-Type: application/json\r\n\r\n'
    ).encode()
    conn.putrequest("POST", "/api/v1/flows/upload/")
    conn.putheader("x-api-key", key)
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(300 * 1024 * 1024))
    conn.endheaders()
    started = time.monotonic()
    conn.send(head + b" " * (256 * 1024))  # then nothing more: a server that reads on waits until its timeout
    response = conn.getresponse()
    assert response.status == 413, response.read()
    assert time.monotonic() - started < 5
    assert "larger than" in json.loads(response.read())["detail"]
