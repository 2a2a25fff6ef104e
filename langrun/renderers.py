"""The browsable API, minus the caller's API key: DRF's HTML pages build their links and forms from the request's
own URL, which holds the key when it came as `?x-api-key=`."""

from __future__ import annotations

from rest_framework import renderers

from langrun.authentication import url_without_api_key


class _KeylessRequest:
    """The request as the browsable API's template sees it: every URL of its own without the key."""

    def __init__(self, request):
        self._request = request

    def __getattr__(self, name):
        return getattr(self._request, name)

    def get_full_path(self) -> str:
        return url_without_api_key(self._request.get_full_path())

    def build_absolute_uri(self, location=None) -> str:
        return url_without_api_key(self._request.build_absolute_uri(location))


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's browsable API; its page shows no `?x-api-key=` (the format toggles, the request line, the forms'
    actions, the ordering links). Its forms then post without the key: a browser keeps a session instead
    (`/api-auth/login/`)."""

    def get_context(self, data, accepted_media_type, renderer_context):
        context = super().get_context(data, accepted_media_type, renderer_context)
        context["request"] = _KeylessRequest(context["request"])
        return context

    def get_filter_form(self, data, view, request):
        return super().get_filter_form(data, view, _KeylessRequest(request))
