"""langrun/middleware.py: request guards (a NUL in a path or query), and chunked request bodies read within the limits."""

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


def test_a_nul_in_an_admin_list_filter_or_search_is_a_400(staff):
    from tests.helpers import login

    c = login(staff)
    for query in ("status__exact=%00", "q=a%00b", "status__exact=queued&x%00=1"):
        response = c.get(f"/admin/flows/flowrun/?{query}")
        assert response.status_code == 400, query


def test_a_nul_in_the_path_outside_the_api_is_a_400(superuser):
    from tests.helpers import login

    assert login(superuser).get("/admin/django_q/success/a%00b/change/").status_code == 400


def test_a_nul_under_the_api_stays_a_located_422(key_client):
    for path, loc in (("/api/v1/flows/?name=a%00b", ["query", "name"]), ("/api/v1/flows/a%00b", ["path"])):
        response = key_client.get(path)
        assert response.status_code == 422, path
        assert response.json() == {"detail": [{"loc": loc, "msg": "Cannot contain a NUL character.", "type": "string_nul"}]}
