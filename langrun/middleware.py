"""Request guards that apply to every request before any view runs, and chunked request bodies."""

from __future__ import annotations

import io

from django.conf import settings
from django.core.exceptions import BadRequest
from django.core.handlers.wsgi import LimitedStream
from django.http import JsonResponse

from langrun.parsers import MULTIPART_OVERHEAD

NUL_MESSAGE = "Cannot contain a NUL character."


class NulGuardMiddleware:
    """Refuse requests whose path or query parameters hold a NUL character: a located 422 under `/api/`, a 400
    elsewhere (the admin's list filters and search, …).

    No database stores NUL in text, so such a value reaching a filter or a
    lookup by name would otherwise be a 500 on PostgreSQL.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        loc = nul_location(request)
        if loc is None:
            return self.get_response(request)
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": [{"loc": loc, "msg": NUL_MESSAGE, "type": "string_nul"}]}, status=422)
        # Django's own 400 page, as for the malformed requests it refuses itself.
        raise BadRequest(f"{' '.join(loc)}: {NUL_MESSAGE}")


def nul_location(request) -> list[str] | None:
    """Where a NUL character is in the request's path or query parameters, as FastAPI's `loc`; None if nowhere."""
    if "\x00" in request.path_info:
        return ["path"]
    for name, values in request.GET.lists():
        if "\x00" in name or any("\x00" in v for v in values):
            return ["query", name.replace("\x00", "\\u0000")]
    return None


class ChunkedBodyMiddleware:
    """Read a request body sent with `Transfer-Encoding: chunked`, up to the largest body any endpoint takes.

    Django reads a body only as far as Content-Length says, and a chunked request has none: its body
    would be empty. gunicorn hands the de-chunked body over in wsgi.input, ended at the body's end
    (`wsgi.input_terminated`); it is read here, at most one byte past the largest limit, and given a
    Content-Length, so each endpoint then checks its own limit (a 413) as for any other body. Without
    `wsgi.input_terminated` nothing is read: such a server's input could block a read past the body.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        if (
            not meta.get("CONTENT_LENGTH")
            and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
            and meta.get("wsgi.input_terminated")
        ):
            body = _read_at_most(meta["wsgi.input"], largest_body_bytes() + 1)
            meta["CONTENT_LENGTH"] = str(len(body))
            request._stream = LimitedStream(io.BytesIO(body), len(body))  # where Django's request reads its body
        return self.get_response(request)


def largest_body_bytes() -> int:
    """The largest body any endpoint takes: the API's and the webhook's limit, or a flow export's upload."""
    return max(
        settings.LANGRUN_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0, settings.LANGRUN_MAX_IMPORT_BYTES + MULTIPART_OVERHEAD
    )


def _read_at_most(stream, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = stream.read(min(64 * 1024, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
