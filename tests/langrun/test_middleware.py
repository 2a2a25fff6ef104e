"""langrun/middleware.py: request guards, and chunked request bodies read within the limits."""

import io
import json

from flows.models import Flow, FlowRun

CHUNKED = {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "", "wsgi.input_terminated": True}


def chunked_post(client, path, body: bytes, content_type="application/json", **extra):
    """A POST as gunicorn hands a chunked one over: the decoded body in wsgi.input, no Content-Length."""
    return client.generic("POST", path, body, content_type=content_type, **CHUNKED, **{"wsgi.input": io.BytesIO(body)}, **extra)


def test_a_chunked_webhook_body_is_read(key_client, flow):
    response = chunked_post(key_client, f"/api/v1/webhook/{flow.endpoint_name}", b'{"name": "Ada"}')
    assert response.status_code == 202, response.content
    assert FlowRun.objects.get().payload == {"name": "Ada"}


def test_a_chunked_api_body_is_read(key_client, flow):
    body = json.dumps({"name": "Copy", "data": flow.data}).encode()
    response = chunked_post(key_client, "/api/v1/flows/", body)
    assert response.status_code == 201, response.content
    assert Flow.objects.filter(name="Copy").exists()


def test_a_chunked_body_over_the_limit_is_413_and_read_no_further(key_client, flow, settings):
    settings.LANGRUN_MAX_BODY_BYTES = 100
    body = b'{"x": "' + b"y" * 12_000_000 + b'"}'
    stream = io.BytesIO(body)
    response = key_client.generic(
        "POST", f"/api/v1/webhook/{flow.endpoint_name}", b"", content_type="application/json", **CHUNKED, **{"wsgi.input": stream}
    )
    assert response.status_code == 413, response.content
    assert stream.tell() < len(body)  # stopped once past every limit
    assert not FlowRun.objects.exists()


def test_without_a_terminated_input_a_body_without_length_stays_unread(key_client, flow):
    # A server that does not end wsgi.input at the body's end (wsgi.input_terminated) would block a read.
    stream = io.BytesIO(b'{"name": "Ada"}')
    headers = {**CHUNKED, "wsgi.input_terminated": False}
    response = key_client.generic(
        "POST", f"/api/v1/webhook/{flow.endpoint_name}", b"", content_type="application/json", **headers, **{"wsgi.input": stream}
    )
    assert response.status_code == 400 and stream.tell() == 0
