"""Request guards that apply to the whole API before any view runs."""

from __future__ import annotations

from django.http import JsonResponse

NUL_MESSAGE = "Cannot contain a NUL character."


class ApiQueryGuardMiddleware:
    """Refuse `/api/` requests whose path or query parameters hold a NUL character: a located 422.

    No database stores NUL in text, so such a value reaching a filter or a
    lookup by name would otherwise be a 500 on PostgreSQL.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = api_query_refusal(request)
        return refusal if refusal is not None else self.get_response(request)


def api_query_refusal(request) -> JsonResponse | None:
    """The 422 for an `/api/` request with a NUL character in its path or query parameters; None for any other."""
    if not request.path_info.startswith("/api/"):
        return None
    loc = None
    if "\x00" in request.path_info:
        loc = ["path"]
    else:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in v for v in values):
                loc = ["query", name.replace("\x00", "\\u0000")]
                break
    if loc is None:
        return None
    return JsonResponse({"detail": [{"loc": loc, "msg": NUL_MESSAGE, "type": "string_nul"}]}, status=422)
