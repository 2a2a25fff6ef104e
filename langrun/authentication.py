"""API-key authentication for the REST API: `x-api-key` header, or `x-api-key` query parameter."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.utils.urls import remove_query_param

from langrun.services import api_key_authenticate

API_KEY_HEADER = "HTTP_X_API_KEY"
API_KEY_PARAM = "x-api-key"
INVALID_API_KEY = "Invalid API key"


def api_key_from_request(request) -> str | None:
    """The key a request carries; the header wins over the query parameter."""
    return request.META.get(API_KEY_HEADER) or request.GET.get(API_KEY_PARAM) or None


def url_without_api_key(url: str) -> str:
    """`url` without a `?x-api-key=`: every link the API renders for a caller goes through this, since links end up
    in logs, browser histories and Referer headers."""
    return remove_query_param(url, API_KEY_PARAM)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request by its API key; no key means "try the next scheme".

    A key that does not match an active key is refused outright (403 `Invalid API key`).
    """

    def authenticate(self, request):
        key = api_key_from_request(request)
        if key is None:
            return None
        api_key = api_key_authenticate(key=key)
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_API_KEY)
        return api_key.user, api_key
